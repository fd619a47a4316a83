"""Stage 1, data: raw web crawl (WARC) -> clean, deduplicated, PII-scrubbed text, with datatrove.

    lmforge data --config recipes/demo/data.yaml
    lmforge data --config recipes/demo/data.yaml --common_crawl_dump CC-MAIN-2024-10 --common_crawl_files 4

The blocks run in FineWeb's order, each one datatrove's own and each switchable from the recipe:
read WARC -> URL filter -> text extraction (Trafilatura) -> language filter -> Gopher repetition ->
Gopher quality -> C4 quality -> FineWeb quality -> MinHash near-dedup (4 chained stages) -> PII
scrubbing -> Parquet or JSONL. Every filter writes what it dropped under `removed/<step>/`, and the
stage ends with a funnel (`funnel.json`, also printed): for each step, documents in, kept, and
dropped by reason; in = kept + dropped holds for every step. Killed, it resumes: datatrove's
executors skip the tasks that completed, and a task that had not rewrites its files from scratch.

Outputs under `output_dir`: `documents/` (the clean text), `removed/`, `logs/` (datatrove's per-stage
logs and stats), `funnel.json` (written last: its presence means the stage finished).
"""

import inspect
import json
import os
from dataclasses import dataclass, field

import fsspec
from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

from lmforge import LmforgeError
from lmforge.lib.blocks import AuditedWarcReader, LanguageFilter, URLFilter
from lmforge.lib.configs import from_json, parse
from lmforge.lib.files import write_json, write_text


# Step name -> the datatrove block it builds; a step is switched on and off by the recipe key of its
# name, and `step_options.<name>` passes keyword arguments to the block as they are.
FILTERS = {
    "url_filter": URLFilter,
    "language_filter": LanguageFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4_quality": C4QualityFilter,
    "fineweb_quality": FineWebQualityFilter,
}
STEP_OPTIONS = {**FILTERS, "extract": Trafilatura, "minhash": MinhashConfig, "pii": PIIFormatter}
EXECUTORS = {"local": LocalPipelineExecutor, "slurm": SlurmPipelineExecutor, "ray": RayPipelineExecutor}
# Counters in datatrove's stats that are reasons a document went no further (the extractor's errors
# are counted under these names, not under `dropped_<reason>`).
ERROR_REASONS = ("timeout", "broken_process", "clean_error")
# What a drop means where datatrove counts it without a reason.
UNNAMED_REASONS = {"extract": "no_text", "minhash": "near_duplicate"}


@dataclass
class DataConfig:
    output_dir: str = field(default="runs/demo/data", metadata={"help": "Where the stage writes everything."})
    # Input: local files and globs, or URLs (s3://, https://, hf://) that fsspec can list.
    warc_paths: list[str] = field(default_factory=list, metadata={"help": "WARC files or globs."})
    common_crawl_dump: str | None = field(default=None, metadata={"help": "e.g. CC-MAIN-2024-10 (needs network)."})
    common_crawl_files: int = field(default=1, metadata={"help": "How many WARC files of the dump to read."})
    common_crawl_root: str = field(default="https://data.commoncrawl.org", metadata={"help": "Dump mirror."})
    limit: int = field(default=-1, metadata={"help": "Documents read per task (-1: all); for quick tries."})
    # Steps: each is datatrove's block of the same role; false skips it.
    url_filter: bool = True
    language_filter: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "Languages to keep."})
    language_threshold: float = 0.65
    language_backend: str = field(default="py3langid", metadata={"help": "py3langid (offline), ft176, glotlid."})
    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4_quality: bool = True
    fineweb_quality: bool = True
    minhash: bool = True
    pii: bool = True
    step_options: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments of each step's datatrove block, by step name."}
    )
    output_format: str = field(default="parquet", metadata={"help": "parquet or jsonl."})
    # Execution
    executor: str = field(default="local", metadata={"help": "local, slurm or ray."})
    tasks: int = field(default=2, metadata={"help": "Shards of the input; one output file each."})
    workers: int = field(default=-1, metadata={"help": "Tasks run at once (local executor; -1: all)."})
    executor_options: dict | str | None = field(
        default=None, metadata={"help": "Extra keyword arguments of the executor (slurm: partition, time...)."}
    )

    def __post_init__(self):
        for name in ("step_options", "executor_options"):
            setattr(self, name, from_json(getattr(self, name) or {}, name))
        check_choice("output_format", self.output_format, ("parquet", "jsonl"))
        check_choice("executor", self.executor, EXECUTORS)
        check_choice("language_backend", self.language_backend, ("py3langid", "ft176", "glotlid"))
        for step, options in self.step_options.items():
            if step not in STEP_OPTIONS:
                raise LmforgeError(f"step_options: unknown step {step!r}; steps are {sorted(STEP_OPTIONS)}")
            accepted = block_parameters(STEP_OPTIONS[step])
            for key in options:
                if key not in accepted:
                    raise LmforgeError(f"step_options.{step}: {STEP_OPTIONS[step].__name__} has no option {key!r}")
        if not self.warc_paths and not self.common_crawl_dump:
            raise LmforgeError("no input: set warc_paths (files or globs) or common_crawl_dump")


def block_parameters(block: type) -> set[str]:
    """The keyword arguments a block takes; for lmforge's subclasses, those of the datatrove block below."""
    for cls in block.__mro__:
        parameters = inspect.signature(cls.__init__).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return {p.name for p in parameters}
    return set()


def check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise LmforgeError(f"{key}: {value!r} is not one of {list(choices)}")


def input_files(config: DataConfig) -> tuple[str, list[str]]:
    """The WARC files to read, as one folder (local path or URL) and paths relative to it."""
    if config.common_crawl_dump:
        root = config.common_crawl_root.rstrip("/")
        listing = f"{root}/crawl-data/{config.common_crawl_dump}/warc.paths.gz"
        try:
            with fsspec.open(listing, "rt", compression="gzip") as f:
                paths = [line.strip() for _, line in zip(range(config.common_crawl_files), f)]
        except (OSError, FileNotFoundError) as error:
            raise LmforgeError(f"common_crawl_dump: cannot read {listing}: {error}") from None
        return root, paths
    files = []
    for pattern in config.warc_paths:
        fs, path = fsspec.core.url_to_fs(pattern)
        found = sorted(fs.glob(path)) if fs.exists(path) or any(c in path for c in "*?[") else []
        found = [p for p in found if fs.isfile(p)]
        if not found:
            raise LmforgeError(f"warc_paths: {pattern!r} matches no file")
        files += [fs.unstrip_protocol(p) if fs.protocol not in ("file", ("file", "local")) else p for p in found]
    root = os.path.commonpath([f.split("://", 1)[-1] for f in files]) if len(files) > 1 else os.path.dirname(files[0])
    prefix = files[0].split("://", 1)[0] + "://" if "://" in files[0] else ""
    return prefix + root, [f.split("://", 1)[-1][len(root) :].lstrip("/") for f in files]


def writer(config: DataConfig, folder: str):
    if config.output_format == "jsonl":
        return JsonlWriter(folder, output_filename="${rank}.jsonl.gz")
    return ParquetWriter(folder, output_filename="${rank}.parquet")


def extractor(config: DataConfig) -> Trafilatura:
    # A longer timeout than datatrove's 1 s: long documentation pages are real pages, not traps.
    return Trafilatura(**{"favour_precision": True, "timeout": 10.0, **config.step_options.get("extract", {})})


def filter_steps(config: DataConfig) -> list[tuple[str, object]]:
    """(name, block) for extraction and every filter switched on, each filter writing its drops to removed/."""
    steps = []
    for name, block in FILTERS.items():
        if name == "language_filter":  # extraction first: URLs are filtered on the raw record, languages on text
            steps.append(("extract", extractor(config)))
        if not getattr(config, name):
            continue
        kwargs = dict(config.step_options.get(name, {}))
        kwargs["exclusion_writer"] = JsonlWriter(f"{config.output_dir}/removed/{name}")
        if name == "language_filter":
            kwargs.update(
                languages=config.languages,
                language_threshold=config.language_threshold,
                backend=config.language_backend,
            )
        steps.append((name, block(**kwargs)))
    return steps


@dataclass
class Stage:
    """One datatrove executor's work: its blocks, named where they belong in the funnel (None: not a step)."""

    steps: list[tuple[str | None, object]]
    tasks: int


def stages(config: DataConfig, root: str, paths: list[str]) -> dict[str, Stage]:
    """Executor name -> Stage, in the order they run (each depends on the one before)."""
    out, work = config.output_dir, f"{config.output_dir}/work"
    os.makedirs(work, exist_ok=True)
    write_text(f"{work}/input_files.txt", "\n".join(paths) + "\n")
    read = ("read_warc", AuditedWarcReader(root, paths_file=f"{work}/input_files.txt", limit=config.limit))
    finish = [("pii", PIIFormatter(**config.step_options.get("pii", {})))] if config.pii else []
    finish.append((None, writer(config, f"{out}/documents")))
    tasks = min(config.tasks, len(paths))  # a task without a file would only log a warning
    if not config.minhash:
        return {"filter": Stage([read, *filter_steps(config), *finish], tasks)}

    # MinHash in datatrove's four stages; the first and last re-read the filtered documents in the same
    # shards, so that signatures and removals refer to the same (task, document index).
    minhash = MinhashConfig(**config.step_options.get("minhash", {}))
    keep = (None, JsonlWriter(f"{work}/filtered", output_filename="${rank}.jsonl.gz"))
    reread = lambda: (None, JsonlReader(f"{work}/filtered"))  # noqa: E731 (a fresh reader for each stage)
    drop_duplicates = MinhashDedupFilter(f"{work}/remove_ids", exclusion_writer=JsonlWriter(f"{out}/removed/minhash"))
    return {
        "filter": Stage([read, *filter_steps(config), keep], tasks),
        "minhash_signatures": Stage(
            [reread(), (None, MinhashDedupSignature(f"{work}/signatures", config=minhash))],
            tasks,
        ),
        "minhash_buckets": Stage(
            [(None, MinhashDedupBuckets(f"{work}/signatures", f"{work}/buckets", config=minhash))], minhash.num_buckets
        ),
        "minhash_clusters": Stage(
            [(None, MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=minhash))], 1
        ),
        "minhash_filter": Stage([reread(), ("minhash", drop_duplicates), *finish], tasks),
    }


def run(config: DataConfig, plan: dict[str, Stage]) -> None:
    """Chain one datatrove executor per stage, each depending on the previous, and run the last."""
    executor_class = EXECUTORS[config.executor]
    if config.executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init()  # joins the cluster named by RAY_ADDRESS, or starts a local one
    executors = []
    for name, stage in plan.items():
        kwargs = dict(
            pipeline=[block for _, block in stage.steps],
            tasks=stage.tasks,
            depends=executors[-1] if executors else None,
            logging_dir=f"{config.output_dir}/logs/{name}",
        )
        if config.executor == "local":
            kwargs["workers"] = config.workers
        if config.executor == "slurm":
            kwargs["job_name"] = f"lmforge_{name}"
        executors.append(executor_class(**kwargs, **config.executor_options))
    if config.executor != "slurm":  # Slurm jobs run later; local and Ray ones run here, in order
        # Filter first and stop with one line if nothing came through: the stages after it would only
        # fail on an empty folder with a library traceback.
        executors[0].run()
        check_filtered(config, plan["filter"])
    executors[-1].run()


def check_filtered(config: DataConfig, stage: Stage) -> None:
    """Fail with one line when the input held no readable page, or no page passed the filters."""
    with open(f"{config.output_dir}/logs/filter/stats.json") as f:
        stats = [block["stats"] for block in json.load(f)]  # one entry per block, in pipeline order
    rows = [funnel_row(step, block) for (step, _), block in zip(stage.steps, stats) if step]
    if rows[0]["kept"] == 0:
        raise LmforgeError(
            f"warc_paths: no readable page in {config.warc_paths or config.common_crawl_dump} "
            f"({rows[0]['in']} records; {stats[0].get('bad_files', 0)} unreadable files, "
            "each named in the log above)"
        )
    if rows[-1]["kept"] == 0:
        print_funnel({"steps": rows, "documents_out": 0, "bad_files": stats[0].get("bad_files", 0)})
        raise LmforgeError("no document passed the filters (the funnel above says where each was dropped)")


def funnel_row(name: str, stats: dict) -> dict:
    """In, kept and dropped by reason for one step, from its merged datatrove stats."""
    stats = {key: value["total"] if isinstance(value, dict) else value for key, value in stats.items()}
    total, kept = stats.get("total", 0), stats.get("forwarded", stats.get("total", 0))  # formatters forward all
    reasons = {key.removeprefix("dropped_"): n for key, n in stats.items() if key.startswith("dropped_")}
    reasons.update({key: stats[key] for key in ERROR_REASONS if stats.get(key)})
    unexplained = total - kept - sum(reasons.values())
    if unexplained:
        reasons[UNNAMED_REASONS.get(name, "unspecified")] = unexplained
    return {
        "step": name,
        "in": total,
        "kept": kept,
        "dropped": total - kept,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


def funnel(config: DataConfig, plan: dict[str, Stage]) -> dict:
    """The funnel of the whole stage, from the stats.json each executor writes when all its tasks are done."""
    rows, bad_files = [], 0
    for name, stage in plan.items():
        with open(f"{config.output_dir}/logs/{name}/stats.json") as f:
            stats = [step["stats"] for step in json.load(f)]  # one entry per block, in pipeline order
        for (step, _), step_stats in zip(stage.steps, stats):
            if step:
                rows.append(funnel_row(step, step_stats))
            if step == "read_warc":
                bad_files = step_stats.get("bad_files", 0)
    return {"steps": rows, "documents_out": count_documents(config), "bad_files": bad_files}


def count_documents(config: DataConfig) -> int:
    import pyarrow.parquet as pq

    folder = f"{config.output_dir}/documents"
    if config.output_format == "parquet":
        return sum(pq.ParquetFile(f"{folder}/{name}").metadata.num_rows for name in sorted(os.listdir(folder)))
    import gzip

    return sum(sum(1 for _ in gzip.open(f"{folder}/{name}", "rt")) for name in sorted(os.listdir(folder)))


def print_funnel(result: dict) -> None:
    print(f"\n{'step':<28}{'in':>8}{'kept':>8}{'dropped':>9}  reasons")
    for row in result["steps"]:
        reasons = ", ".join(f"{reason} {n}" for reason, n in row["reasons"].items())
        print(f"{row['step']:<28}{row['in']:>8}{row['kept']:>8}{row['dropped']:>9}  {reasons}")
    print(f"\n{result['documents_out']} documents written; {result['bad_files']} unreadable input files")


def main(config: DataConfig) -> dict:
    plan = stages(config, *input_files(config))
    run(config, plan)
    if config.executor == "slurm":
        print("Submitted to Slurm. Rerun the same command once the jobs end to write the funnel.")
        return {}
    result = funnel(config, plan)
    write_json(f"{config.output_dir}/funnel.json", result)
    print_funnel(result)
    return result


CONFIGS = (DataConfig,)  # what `--config recipes/*/data*.yaml` is parsed into


def cli(argv: list[str] | None = None) -> None:
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
