"""`lmforge tokenizer` and `lmforge pack` against bare `tokenizers` and `datasets.map` on the same 100+ MB of text.

    python bench/tokenizer_pack.py                   # apt-get downloads the text's packages first (Debian/Ubuntu)
    python bench/tokenizer_pack.py --debs DIR --megabytes 100 --num-proc 1 2

Text: every plain-text document of the Debian documentation packages the bench crawl uses (the Python 3.11
docs' reStructuredText sources, Git's manual pages, the Debian Reference in 10 languages, the Debian FAQ),
plus the demo's Shakespeare plays: about 31 MB, repeated whole until it reaches `--megabytes`, cut into
documents of about 8,000 characters and written once as one Parquet file in the data stage's columns.
Repetition leaves the work per byte of both sides as it is (each byte is still pre-tokenized and encoded).

Each run is its own process, measured by the kernel when it ends (wall time, CPU time, the peak resident
memory of its largest process):
- tokenizer: `lmforge tokenizer` (trains on the 95% that is not held out, then encodes the held-out 5% to
  measure compression) against `tokenizers` trained with the same model, pre-tokenizer and trainer on
  the whole file; MB/s of input text.
- pack: `lmforge pack` against the bare recipe of transformers' run_clm example (`load_dataset("parquet")`,
  `map` to tokenize, `map` to group into blocks, `save_to_disk`), with the same tokenizer, `num_proc`,
  batch size and block length; tokens/s, with 1 and 2 processes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "data/demo"))
from build_corpus import unpack  # noqa: E402 (the demo crawl's package download, reused)


PACKAGES = [
    "python3.11-doc",
    "git-doc",
    *(f"debian-reference-{lang}" for lang in ("en", "de", "es", "fr", "id", "it", "ja", "pt", "zh-cn", "zh-tw")),
    "debian-faq",
]
VOCAB_SIZE, SEQ_LEN, BATCH_SIZE = 8192, 1024, 1000


def text_files(root: Path) -> list[Path]:
    found = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name.endswith((".txt", ".txt.gz"))]
    return found + sorted((ROOT / "data/demo/books").glob("*.txt.gz"))


def build_text(debs: Path | None, out: Path, megabytes: int) -> None:
    """Write the corpus: documents of the packages' text files and the books, repeated to `megabytes` MB."""
    import pyarrow as pa

    from lmforge.lib.documents import paragraph_chunks, read_text

    with tempfile.TemporaryDirectory() as tmp:
        root = unpack(debs, Path(tmp), PACKAGES)
        documents = [chunk for path in text_files(root) for chunk in paragraph_chunks(read_text(str(path)))]
    size = sum(len(d.encode()) for d in documents)
    copies = -(-megabytes * 10**6 // size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(out, pa.schema([("text", pa.string()), ("id", pa.string())])) as writer:
        for copy in range(copies):
            ids = [f"{copy}-{i}" for i in range(len(documents))]  # copies hash to different held-out documents
            writer.write_table(pa.table({"text": documents, "id": ids}))
    print(f"{out}: {copies} copies of {len(documents)} documents, {size / 1e6:.1f} MB each")


def bare_tokenizer(corpus: str, out: str) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from lmforge.lib.chat_format import SPECIAL_TOKENS
    from lmforge.tokenizer import SPLIT_PATTERN

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    batches = (batch.column("text").to_pylist() for batch in pq.ParquetFile(corpus).iter_batches(batch_size=1000))
    tokenizer.train_from_iterator(batches, trainer)
    os.makedirs(out)
    tokenizer.save(f"{out}/tokenizer.json")


def bare_pack(corpus: str, tokenizer_dir: str, out: str, num_proc: int) -> None:
    """transformers' run_clm recipe: tokenize with map, concatenate and cut into blocks with map, save."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dataset = load_dataset("parquet", data_files=corpus, split="train", cache_dir=f"{out}.cache")
    tokens = dataset.map(
        lambda batch: tokenizer(batch["text"]),
        batched=True,
        batch_size=BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
    )

    def group(batch):
        stream = [token for ids in batch["input_ids"] for token in ids]
        return {"input_ids": [stream[i : i + SEQ_LEN] for i in range(0, len(stream) - SEQ_LEN + 1, SEQ_LEN)]}

    blocks = tokens.map(
        group, batched=True, batch_size=BATCH_SIZE, num_proc=num_proc, remove_columns=["attention_mask"]
    )
    blocks.save_to_disk(out)


def lmforge(stage: str, config: dict, out: Path) -> list[str]:
    path = out.with_suffix(".yaml")
    path.write_text(json.dumps(config))  # JSON is YAML
    return [str(Path(sys.executable).parent / "lmforge"), stage, "--config", str(path)]


def measured(command: list[str], log: Path) -> dict:
    start = time.perf_counter()
    with open(log, "w") as f:
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.exit(f"{' '.join(command)} failed; its log: {log}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
        "load": os.getloadavg(),
    }


def child(kind: str) -> list[str]:
    return [sys.executable, __file__, "--one", kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debs", type=Path, help="folder with the .deb files (default: apt-get download)")
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tokenizer_pack"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child's run: bare_tokenizer or bare_pack
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one == "bare_tokenizer":
        return bare_tokenizer(*args.args)
    if args.one == "bare_pack":
        return bare_pack(*args.args[:3], int(args.args[3]))

    corpus = args.out / f"text-{args.megabytes}MB.parquet"
    if not corpus.exists():
        build_text(args.debs, corpus, args.megabytes)
    megabytes = sum(len(text.encode()) for text in pq.read_table(corpus)["text"].to_pylist()) / 1e6
    runs = args.out / "runs"
    subprocess.run(["rm", "-rf", str(runs)], check=True)
    runs.mkdir(parents=True)

    results = {}
    config = {"documents": [str(corpus)], "text_files": [], "vocab_size": VOCAB_SIZE, "output_dir": str(runs / "tok")}
    results["tokenizer", "lmforge"] = measured(lmforge("tokenizer", config, runs / "tok"), runs / "tok.log")
    results["tokenizer", "bare"] = measured(
        child("bare_tokenizer") + [str(corpus), str(runs / "bare-tok")], runs / "bare-tok.log"
    )
    tokens = {}
    for num_proc in args.num_proc:
        name = f"pack{num_proc}"
        config = {"documents": [str(corpus)], "text_files": [], "tokenizer": str(runs / "tok"), "seq_len": SEQ_LEN}
        config.update(num_proc=num_proc, batch_size=BATCH_SIZE, output_dir=str(runs / name))
        results["pack", "lmforge", num_proc] = measured(lmforge("pack", config, runs / name), runs / f"{name}.log")
        splits = json.loads((runs / name / "pack.json").read_text())["splits"]
        tokens["lmforge", num_proc] = SEQ_LEN * sum(split["blocks"] for split in splits.values())
        bare_out = runs / f"bare-{name}"
        command = child("bare_pack") + [str(corpus), str(runs / "tok"), str(bare_out), str(num_proc)]
        results["pack", "bare", num_proc] = measured(command, runs / f"bare-{name}.log")
        from datasets import load_from_disk

        tokens["bare", num_proc] = SEQ_LEN * len(load_from_disk(str(bare_out)))
    report(results, tokens, megabytes, args)


def report(results: dict, tokens: dict, megabytes: float, args) -> None:
    print(f"\n{megabytes:.1f} MB of text; {os.cpu_count()} CPUs; vocabulary {VOCAB_SIZE}, blocks of {SEQ_LEN} tokens")
    print(f"{'run':<32}{'wall s':>8}{'rate':>16}{'CPU s':>8}{'peak MB':>9}  load (1/5/15 min)")
    for key, r in results.items():
        load = "/".join(f"{x:.1f}" for x in r["load"])
        if key[0] == "tokenizer":
            name, rate = f"tokenizer, {key[1]}", f"{megabytes / r['wall']:.2f} MB/s"
        else:
            name, rate = f"pack, {key[1]}, num_proc {key[2]}", f"{tokens[key[1:]] / r['wall'] / 1e3:.0f} k tok/s"
        print(f"{name:<32}{r['wall']:8.1f}{rate:>16}{r['cpu']:8.1f}{r['peak_mb']:9.0f}  {load}")
    tok = results["tokenizer", "bare"]["wall"] / results["tokenizer", "lmforge"]["wall"]
    print(f"\nratio lmforge/bare, tokenizer: {tok:.2f} in MB/s (goal >= 0.95)")
    for n in args.num_proc:
        ours = tokens["lmforge", n] / results["pack", "lmforge", n]["wall"]
        bare = tokens["bare", n] / results["pack", "bare", n]["wall"]
        print(f"ratio lmforge/bare, pack, num_proc {n}: {ours / bare:.2f} in tokens/s (goal >= 0.95)")
    for kind in ("lmforge", "bare"):
        first, *rest = args.num_proc
        for n in rest:
            gain = results["pack", kind, first]["wall"] / results["pack", kind, n]["wall"]
            print(f"{kind} pack scaling num_proc {first} -> {n}: {gain:.2f}x")
    print(f"\nRerun on an idle machine: python bench/tokenizer_pack.py --megabytes {args.megabytes} --num-proc 1 2")


if __name__ == "__main__":
    main()
