"""SFT's data preparation on a SmolTalk-sized source: rows taken by `weight` before they are checked and rendered
(what lmforge.lib.conversations does now) against every row checked and rendered first (what it did before, and
what weight 1 still costs), and the checks spread over `dataset_num_proc` processes.

    python bench/sft_sampling.py                       # 460,000 rows (smol-smoltalk's train split), weight 0.02
    python bench/sft_sampling.py --rows 20000 --repeats 1

The source is a local Parquet mirror in smol-smoltalk's schema (`messages`, `source`; tests/hub_mirrors.py's
synthetic conversations, one or two turns, some with a system prompt), written once into a temporary folder; the
tokenizer is the mirror of SmolLM2-360M-Instruct's (byte-level BPE, its ChatML template). Each line of the table is
one `load_conversations` call as the SFT recipe makes it (max_length 1024, invalid rows dropped, 2% held out by a
hash), the best of `repeats` runs, after a first run that warms the page cache.
"""

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from datasets import Dataset, disable_progress_bars
from transformers import AutoTokenizer

from lmforge.lib.conversations import load_conversations


sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from hub_mirrors import smoltalk_rows, write_smollm2_instruct  # noqa: E402


def prepare(folder: Path, rows: int) -> tuple[Path, AutoTokenizer]:
    """The Parquet source (in shards of 50,000 rows, as the Hub's) and the tokenizer."""
    rng = random.Random(0)
    data = folder / "smoltalk"
    data.mkdir()
    for shard, start in enumerate(range(0, rows, 50_000)):
        Dataset.from_list(smoltalk_rows(min(50_000, rows - start), rng)).to_parquet(
            data / f"train-{shard:05d}.parquet"
        )
    write_smollm2_instruct(folder / "model")
    return data, AutoTokenizer.from_pretrained(folder / "model")


def timed(source: Path, tokenizer, weight: float, num_proc: int | None, repeats: int) -> tuple[float, dict]:
    best, report = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        train, heldout, report = load_conversations(
            {"smoltalk": {"path": str(source), "weight": weight}},
            tokenizer,
            max_length=1024,
            on_invalid="drop",
            seed=42,
            heldout_fraction=0.02,
            num_proc=num_proc,
        )
        best = min(best, time.perf_counter() - start)
    return best, report["smoltalk"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=460_000)
    parser.add_argument("--weight", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    disable_progress_bars()
    with tempfile.TemporaryDirectory() as folder:
        source, tokenizer = prepare(Path(folder), args.rows)
        timed(source, tokenizer, args.weight, None, 1)  # warm the page cache and the imports
        cases = [
            (f"weight {args.weight}: taken, then checked and rendered (now)", args.weight, None),
            ("weight 1: every row checked and rendered (before: then sampled)", 1.0, None),
            ("weight 1, dataset_num_proc 2", 1.0, 2),
        ]
        results = [
            (name, *timed(source, tokenizer, weight, num_proc, args.repeats)) for name, weight, num_proc in cases
        ]
    print(f"{args.rows:,} rows, {platform.machine()}, best of {args.repeats}")
    print("| preparation | rows checked | train | held out | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, report in results:
        checked = report["taken"] + report["heldout"] + report["invalid_dropped"]
        print(f"| {name} | {checked:,} | {report['taken']:,} | {report['heldout']:,} | {seconds:.1f} |")
    now, before, spread = (seconds for _, seconds, _ in results)
    print(f"sampling first: x{before / now:.0f} faster; dataset_num_proc 2 at weight 1: x{before / spread:.2f}")


if __name__ == "__main__":
    main()
