"""Data stage vs the same datatrove blocks run bare, on the same input, in one run.

    python bench/data_pipeline.py [--copies 3]

Input: the demo crawl copied `--copies` times (copies are exact duplicates, so MinHash has work).
"Bare" is the FineWeb chain written directly against datatrove: its own WarcReader and URLFilter,
the same extractor, filters, MinHash stages, PII formatter and writer, no funnel. The language
filter is lmforge's py3langid one in both: datatrove's own downloads its model, and this machine is
offline. Prints input records per second for both, their ratio (goal >= 0.95), and the stage's
throughput with 1 and 2 workers.
"""

import argparse
import os
import platform
import shutil
import tempfile
import time
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


DEMO = Path(__file__).parent.parent / "data/demo/web"


def bare(input_dir: str, out: str, tasks: int, workers: int) -> None:
    minhash = MinhashConfig()
    steps = [
        WarcReader(input_dir),
        URLFilter(),
        Trafilatura(favour_precision=True, timeout=10.0),
        LanguageFilter(languages=["en"]),
        GopherRepetitionFilter(),
        GopherQualityFilter(min_doc_words=30),
        C4QualityFilter(),
        FineWebQualityFilter(),
        JsonlWriter(f"{out}/filtered"),
    ]
    stages = [
        (steps, tasks),
        ([JsonlReader(f"{out}/filtered"), MinhashDedupSignature(f"{out}/sigs", config=minhash)], tasks),
        ([MinhashDedupBuckets(f"{out}/sigs", f"{out}/buckets", config=minhash)], minhash.num_buckets),
        ([MinhashDedupCluster(f"{out}/buckets", f"{out}/remove", config=minhash)], 1),
        (
            [
                JsonlReader(f"{out}/filtered"),
                MinhashDedupFilter(f"{out}/remove"),
                PIIFormatter(),
                ParquetWriter(f"{out}/documents"),
            ],
            tasks,
        ),
    ]
    previous = None
    for i, (pipeline, n) in enumerate(stages):
        previous = LocalPipelineExecutor(
            pipeline, tasks=n, workers=workers, logging_dir=f"{out}/logs/{i}", depends=previous
        )
    previous.run()


def ours(input_dir: str, out: str, tasks: int, workers: int) -> None:
    main(
        DataConfig(
            warc_paths=[f"{input_dir}/*.warc.gz"],
            output_dir=out,
            tasks=tasks,
            workers=workers,
            step_options={"gopher_quality": {"min_doc_words": 30}},
        )
    )


def timed(run, *args) -> float:
    start = time.perf_counter()
    run(*args)
    return time.perf_counter() - start


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=3)
    args = parser.parse_args()
    from warcio.archiveiterator import ArchiveIterator

    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for i in range(args.copies):
            for path in DEMO.glob("*.warc.gz"):
                shutil.copy(path, inputs / f"{i}-{path.name}")
        records = sum(1 for p in inputs.iterdir() for r in ArchiveIterator(open(p, "rb")) if r.rec_type == "response")
        tasks = 2 * args.copies
        times = {
            "bare datatrove, 1 worker": timed(bare, str(inputs), f"{tmp}/bare1", tasks, 1),
            "lmforge data, 1 worker": timed(ours, str(inputs), f"{tmp}/ours1", tasks, 1),
            "bare datatrove, 2 workers": timed(bare, str(inputs), f"{tmp}/bare2", tasks, 2),
            "lmforge data, 2 workers": timed(ours, str(inputs), f"{tmp}/ours2", tasks, 2),
        }
    machine = platform.processor() or platform.machine()
    print(f"\n{records} pages in {tasks} WARC files; {os.cpu_count()} CPUs, {machine}")
    for name, seconds in times.items():
        print(f"{name:<28}{seconds:7.1f} s {records / seconds:8.1f} pages/s")
    for workers in (1, 2):
        ratio = (
            times[f"bare datatrove, {workers} worker{'s' if workers > 1 else ''}"]
            / times[f"lmforge data, {workers} worker{'s' if workers > 1 else ''}"]
        )
        print(f"ratio lmforge/bare, {workers} worker(s): {ratio:.2f} (goal >= 0.95)")
    print(f"lmforge scaling 1 -> 2 workers: {times['lmforge data, 1 worker'] / times['lmforge data, 2 workers']:.2f}x")


if __name__ == "__main__":
    main_bench()
