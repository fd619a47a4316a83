"""Seconds per benchmark of `lmforge eval`'s suite for a SmolLM2-135M-shaped model, on this machine.

    python bench/benchmarks_speed.py [--limit 100] [--kind base] [--benchmarks gsm8k,ifeval] [--shared ../shared]
                                     [--max_new_tokens 256] [--threads 2]

The model has SmolLM2-135M's shape (30 layers, width 576, 9 heads, 3 key-value heads, vocabulary 49,152) and
random weights: the Hub cannot be reached here. Its tokenizer is a byte-level BPE trained on the benchmark texts.
GSM8K (the training split, a stand-in for the test set) and IFEval are the real files of ../shared/benchmarks/;
the other sets are the tests' tiny Hub-schema mirrors repeated up to `--limit` rows (their rows are shorter than
the real ones). A random model never ends a reply, so every generation runs to its token limit (`--max_new_tokens`,
for every generation benchmark): an upper bound.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmforge.lib import benchmarks
from lmforge.tokenizer import train_tokenizer


sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from benchmark_mirrors import rows  # noqa: E402


REAL = {"gsm8k": "benchmarks/gsm8k/train.jsonl", "ifeval": "benchmarks/ifeval/input_data.jsonl"}  # under shared/


def distinct(row: dict, index: int) -> dict:
    """`row` with "Row N." before its question (or sentence, goal, context): no two copies are the same request."""
    key = next(key for key in ("question", "question_stem", "goal", "ctx_a", "sentence", "prompt") if key in row)
    return row | {key: f"Row {index}. {row[key]}"}


def smollm2_135m_shape(tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--kind", default="assistant")
    parser.add_argument("--benchmarks", default=",".join(benchmarks.SUITE))
    parser.add_argument("--shared", default="../shared", help="The shared/ folder beside the repository.")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    real = {name: Path(args.shared) / path for name, path in REAL.items()}
    folder = Path(tempfile.mkdtemp())
    suite = {}
    for name in args.benchmarks.split(","):
        if name in real:
            suite[name] = {"data": str(real[name])}
        else:
            # Each copy made distinct (lm-eval scores a repeated request once), as "Row N." before the question.
            mirror = [distinct(row, i) for i, row in enumerate(rows(name) * (args.limit // len(rows(name)) + 1))]
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in mirror[: args.limit]))
            suite[name] = {"data": str(folder / f"{name}.jsonl")}
        suite[name]["max_new_tokens"] = args.max_new_tokens
    texts = [line for path in real.values() for line in path.read_text().splitlines()[:2000]]
    tokenizer = train_tokenizer(texts, vocab_size=49152)
    model = smollm2_135m_shape(tokenizer)
    lm = benchmarks.language_model(model, tokenizer, batch_size=16, backend="hf", path="")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, setting in benchmarks.settings(suite).items():
        for result in benchmarks.run(lm, tokenizer, args.kind, {name: setting}, args.limit, None).values():
            print(f"{name}: {result['seconds']} s, {result['rows']} rows", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
