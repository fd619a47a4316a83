"""Data stage vs the same datatrove blocks run bare, on the same crawl, in one run, with 1 and 2 workers.

    python bench/data_pipeline.py                        # builds runs/bench/crawl first if it is missing
    python bench/data_pipeline.py --input DIR --workers 1 2 4

Input: the bench crawl of bench/build_crawl.py (about 6,000 real HTML pages from Debian documentation
packages in 6 WARC files of 1,000 pages, with a crawl's duplicates, request and metadata records and
non-HTML payloads), one datatrove task per WARC file. "Bare" is the FineWeb chain written directly
against datatrove: its own WarcReader and URLFilter, the same extractor, filters, MinHash stages, PII
formatter and writers, no funnel and no exclusion writers. The language filter is lmforge's py3langid
one in both: datatrove's own downloads its model, and this machine is offline.

Each run is its own process, measured by the kernel when it ends: wall time, CPU time (user + system,
its worker processes included) and the peak resident memory of its largest process. Prints, for each:
- pages/s, and pages per CPU-second (pages/s per core, which other load on the machine does not bend);
- the ratio lmforge / bare (goal >= 0.95) and the scaling from 1 to 2 workers (goal >= 1.8x);
- seconds in each step, summed over tasks, from datatrove's stats (the time inside each block), with
  the time outside any block (process start, imports, decompression) per executor stage.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
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
    URLFilter,
)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

from lmforge.data import DataConfig, main
from lmforge.lib.blocks import LanguageFilter


HERE = Path(__file__).parent
# The executor stages of the data stage, in order; the bare chain logs under the same names.
STAGES = ["filter", "minhash_signatures", "minhash_buckets", "minhash_clusters", "minhash_filter"]
KINDS = {
    "READER": "read",
    "FILTER": "filter",
    "EXTRAC": "extract",
    "DEDUP": "dedup",
    "FORMAT": "format",
    "WRITER": "write",
}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")


def bare(input_dir: str, out: str, tasks: int, workers: int, limit: int) -> None:
    minhash = MinhashConfig()
    steps = [
        WarcReader(input_dir, limit=limit),
        URLFilter(),
        Trafilatura(favour_precision=True, timeout=10.0),
        LanguageFilter(languages=["en"]),
        GopherRepetitionFilter(),
        GopherQualityFilter(min_doc_words=30),
        C4QualityFilter(),
        FineWebQualityFilter(),
        JsonlWriter(f"{out}/work/filtered"),
    ]
    stages = [
        (steps, tasks),
        ([JsonlReader(f"{out}/work/filtered"), MinhashDedupSignature(f"{out}/work/sigs", config=minhash)], tasks),
        ([MinhashDedupBuckets(f"{out}/work/sigs", f"{out}/work/buckets", config=minhash)], minhash.num_buckets),
        ([MinhashDedupCluster(f"{out}/work/buckets", f"{out}/work/remove", config=minhash)], 1),
        (
            [
                JsonlReader(f"{out}/work/filtered"),
                MinhashDedupFilter(f"{out}/work/remove"),
                PIIFormatter(),
                ParquetWriter(f"{out}/documents"),
            ],
            tasks,
        ),
    ]
    previous = None
    for name, (pipeline, n) in zip(STAGES, stages):
        previous = LocalPipelineExecutor(
            pipeline, tasks=n, workers=workers, logging_dir=f"{out}/logs/{name}", depends=previous
        )
    previous.run()


def ours(input_dir: str, out: str, tasks: int, workers: int, limit: int) -> None:
    main(
        DataConfig(
            warc_paths=[f"{input_dir}/*.warc.gz"],
            output_dir=out,
            tasks=tasks,
            workers=workers,
            limit=limit,
            step_options={"gopher_quality": {"min_doc_words": 30}},
        )
    )


def run_one(args) -> None:
    """The child process of one measured run: run it, stop the fork server so that the kernel counts its
    workers' CPU time in this process's children, print nothing else than the run's own output."""
    import multiprocess.forkserver

    tasks = len(list(Path(args.input).glob("*.warc.gz")))
    {"bare": bare, "lmforge": ours}[args.one](str(args.input), str(args.out), tasks, args.workers[0], args.limit)
    multiprocess.forkserver._forkserver._stop()  # reaps the fork server, which reaped the pool's workers


def measured(kind: str, workers: int, args, out: Path) -> dict:
    command = [sys.executable, __file__, "--one", kind, "--workers", str(workers), "--input", str(args.input)]
    command += ["--out", str(out), "--limit", str(args.limit)]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.exit(f"{kind} with {workers} worker(s) failed; its log: {out.with_suffix('.log')}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
        "steps": step_seconds(out),
        "pages": pages_read(out),
        "load": os.getloadavg(),
    }


def step_seconds(out: Path) -> list[tuple[str, str, float]]:
    """(stage, step, seconds summed over tasks) for every block, and each stage's time outside its blocks."""
    rows = []
    for stage in STAGES:
        with open(out / "logs" / stage / "stats.json") as f:
            blocks = json.load(f)
        inside = 0.0
        for block in blocks:
            seconds = block["time_stats"]["total"] if isinstance(block["time_stats"], dict) else 0.0
            inside += seconds
            kind, name = block["name"].encode("ascii", "ignore").decode().split(":", 1)  # "- FILTER:  Url-filter"
            rows.append((stage, f"{name.strip()} ({KINDS.get(kind.strip(' -'), kind)})", seconds))
        rows.append((stage, "(outside blocks: start-up, imports, decompression)", task_seconds(out, stage) - inside))
    return rows


def task_seconds(out: Path, stage: str) -> float:
    """Seconds its tasks ran, summed, from the first and last timestamps of each task's log."""
    total = 0.0
    for log in (out / "logs" / stage / "logs").glob("task_*.log"):
        stamps = [m.group(1) for line in log.read_text().splitlines() if (m := LOG_TIME.match(line))]
        if stamps:
            first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f") for s in (stamps[0], stamps[-1]))
            total += (last - first).total_seconds()
    return total


def pages_read(out: Path) -> int:
    """HTML pages a run's reader turned into documents (datatrove's own reader drops XHTML pages that lack a
    payload-type header: each side's rate counts the pages it read)."""
    with open(out / "logs" / "filter" / "stats.json") as f:
        documents = json.load(f)[0]["stats"]["documents"]
    return documents["total"] if isinstance(documents, dict) else documents


def rate(result: dict, seconds: str) -> float:
    return result["pages"] / result[seconds]


def report(results: dict, files: int, args) -> None:
    machine = platform.processor() or platform.machine()
    print(f"\n{files} WARC files, one task each; limit {args.limit} records per task")
    print(
        f"{os.cpu_count()} CPUs ({machine}), {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    )
    print(
        f"\n{'run':<28}{'pages':>6}{'wall s':>8}{'pages/s':>9}{'CPU s':>8}{'pages/CPU-s':>12}{'peak MB':>9}  load (1/5/15 min)"
    )
    for (kind, workers), r in results.items():
        load, pages = "/".join(f"{x:.1f}" for x in r["load"]), r["pages"]
        print(
            f"{kind + f', {workers} worker(s)':<28}{pages:6d}{r['wall']:8.1f}{pages / r['wall']:9.1f}{r['cpu']:8.1f}"
            f"{pages / r['cpu']:12.2f}{r['peak_mb']:9.0f}  {load}"
        )
    print()
    for workers in args.workers:
        bare, ours = results["bare", workers], results["lmforge", workers]
        print(
            f"ratio lmforge/bare, {workers} worker(s): {rate(ours, 'wall') / rate(bare, 'wall'):.2f} in pages/s, "
            f"{rate(ours, 'cpu') / rate(bare, 'cpu'):.2f} in pages/CPU-s (goal >= 0.95)"
        )
    for kind in ("bare", "lmforge"):
        one = results[kind, args.workers[0]]
        for workers in args.workers[1:]:
            print(
                f"{kind} scaling {args.workers[0]} -> {workers} workers: {one['wall'] / results[kind, workers]['wall']:.2f}x"
            )
    workers = args.workers[0]
    pages = results["lmforge", workers]["pages"]
    print(f"\nseconds per step, summed over tasks, {workers} worker(s): bare, lmforge, lmforge ms per page read")
    for (stage, step, b), (_, _, o) in zip(results["bare", workers]["steps"], results["lmforge", workers]["steps"]):
        print(f"  {stage:<20}{step:<52}{b:8.1f}{o:8.1f}{1000 * o / pages:8.2f}")
    print(
        f"\nRerun on an idle machine: python bench/data_pipeline.py --input {args.input} --workers {' '.join(map(str, args.workers))}"
    )


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("runs/bench/crawl"), help="folder of .warc.gz files")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=-1, help="records read per task (-1: all); for a quick try")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/data_pipeline"))
    parser.add_argument("--one", choices=["bare", "lmforge"], help=argparse.SUPPRESS)  # a child's run
    args = parser.parse_args()
    if args.one:
        return run_one(args)
    if not list(args.input.glob("*.warc.gz")):
        subprocess.run([sys.executable, str(HERE / "build_crawl.py"), "--out", str(args.input)], check=True)
    files = len(list(args.input.glob("*.warc.gz")))
    subprocess.run(["rm", "-rf", str(args.out)], check=True)
    args.out.mkdir(parents=True)
    results = {}
    for workers in args.workers:
        for kind in ("bare", "lmforge"):
            results[kind, workers] = measured(kind, workers, args, args.out / f"{kind}-{workers}")
            print(f"{kind}, {workers} worker(s): {results[kind, workers]['wall']:.1f} s", flush=True)
    with open(args.out / "results.json", "w") as f:
        json.dump([{"run": kind, "workers": workers, **r} for (kind, workers), r in results.items()], f, indent=1)
    report(results, files, args)


if __name__ == "__main__":
    main_bench()
