"""One GPU benchmark, one command: the SmolLM-135M recipe's model shape in a pretraining, an SFT and a GRPO step.

    python bench/gpu.py                    # one GPU: SmolLM-135M shape, bf16, SDPA, torch.compile, fused AdamW
    python bench/gpu.py --shape tiny       # anywhere, CPU included (what CI runs): the same code on a tiny shape
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml bench/gpu.py \
        --recipe recipes/smollm-135m/pretrain.yaml         # N GPUs: the recipe's own step, tokens/s and MFU

With `--recipe` (a pretrain recipe) the benchmark is the pretrain stage itself (lmforge.pretrain.main: the recipe's
model, global batch, optimizer, precision and torch.compile, on every process `accelerate launch` starts) on
synthetic blocks of the recipe's length and vocabulary, for `warmup + steps` steps; the figures are the stage's own
throughput log (synchronised, warm-up steps left out), over all processes, MFU per GPU.

Needs nothing but the package: the tokenizer is trained on the demo books in seconds and the data is synthetic
(throughput does not depend on what the tokens say). Measures, after warm-up steps:
- pretraining: lmforge's Trainer step against a plain PyTorch loop (bench/train_step.py), tokens/s and MFU, both
  without an attention mask (causal SDPA) and with the batch on the device before their timers start;
- SFT: TRL's SFTTrainer on conversations truncated to max_length, tokens/s;
- GRPO: TRL's GRPOTrainer, completion tokens per second of step (generation dominates the step);
and the peak GPU memory of each. Prints one table and appends it to BENCHMARKS.md with the device's name.
"""

import contextlib
import gc
import gzip
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
import yaml
from datasets import Dataset, DatasetDict
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from lmforge import pretrain
from lmforge.lib.configs import parse
from lmforge.lib.models import process_state
from lmforge.pretrain import flops_per_token, peak_flops
from lmforge.tokenizer import train_tokenizer
from train_step import BenchConfig, StepTimer, fresh_model, plain_step_times, trainer_step_times


ROOT = Path(__file__).parent.parent
# SmolLM-135M (recipes/smollm-135m/pretrain.yaml): 30 x 576, 9 heads, 3 KV heads, tied, 49,152 tokens, 2,048 context.
SHAPES = {
    "smollm-135m": {
        "depth": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "seq_len": 2048,
        "batch_size": 16,
        "grpo_prompts": 16,
        "num_generations": 8,
        "completion_length": 256,
    },
    "tiny": {
        "depth": 2,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 512,
        "seq_len": 64,
        "batch_size": 2,
        "grpo_prompts": 2,
        "num_generations": 2,
        "completion_length": 8,
    },
}


@dataclass
class GpuBenchConfig:
    shape: str = "smollm-135m"
    steps: int = 20
    warmup: int = 5
    grpo_steps: int = 3
    bf16: bool | None = None  # None: on a GPU
    torch_compile: bool | None = None  # None: on a GPU (the cold compile alone is minutes on a CPU)
    append_to: str = "BENCHMARKS.md"  # "" to print only
    recipe: str = ""  # a pretrain recipe: time its own step on every process accelerate launch started
    work_dir: str = "runs/bench/gpu"  # where --recipe writes its synthetic data and run (the same on every process)

    def __post_init__(self):
        self.bf16 = torch.cuda.is_available() if self.bf16 is None else self.bf16
        self.torch_compile = torch.cuda.is_available() if self.torch_compile is None else self.torch_compile


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def peak_memory(result: dict):
    """Peak GPU memory allocated inside the block, in GiB (None on a CPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield
    result["memory"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def demo_tokenizer(vocab_size: int):
    texts = [gzip.open(path, "rt").read() for path in sorted((ROOT / "data/demo/books").glob("*.txt.gz"))]
    return train_tokenizer(texts, min(vocab_size, 8192))  # the model keeps the shape's vocabulary size


MODEL_KEYS = ("depth", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size")


def pretrain_rows(config: GpuBenchConfig, shape: dict, tokenizer) -> list[dict]:
    bench = BenchConfig(
        **{key: shape[key] for key in MODEL_KEYS},
        batch_size=shape["batch_size"],
        tie_word_embeddings=True,
        context_length=shape["seq_len"],
        steps=config.steps,
        warmup=config.warmup,
        bf16=config.bf16,
        torch_compile=config.torch_compile,
    )
    generator = torch.Generator().manual_seed(0)
    blocks_needed = (config.steps + config.warmup) * shape["batch_size"]
    ids = torch.randint(len(tokenizer), (blocks_needed, shape["seq_len"]), generator=generator)
    blocks = Dataset.from_dict({"input_ids": ids.tolist()})
    fpt = flops_per_token(fresh_model(bench, tokenizer), shape["seq_len"])
    rows = []
    for name, step_times in (("pretrain, Trainer", trainer_step_times), ("pretrain, plain loop", plain_step_times)):
        row = {"step": name}
        with peak_memory(row):
            times = step_times(bench, tokenizer, blocks)
        row["tokens_per_s"] = shape["batch_size"] * shape["seq_len"] * len(times) / sum(times)
        row["mfu"] = row["tokens_per_s"] * fpt / peak_flops() if peak_flops() else None
        rows.append(row)
    return rows


def long_conversations(count: int, words: int) -> Dataset:
    """Conversations longer than max_length, so that every truncated row is exactly max_length tokens."""
    reply = " ".join(f"word{i % 97}" for i in range(words))
    return Dataset.from_dict(
        {
            "messages": [
                [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": reply}]
                for i in range(count)
            ]
        }
    )


def common_args(config: GpuBenchConfig, output_dir: str) -> dict:
    return {
        "output_dir": output_dir,
        "bf16": config.bf16,
        "use_cpu": not torch.cuda.is_available(),
        "learning_rate": 1e-4,
        "optim": "adamw_torch_fused",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "activation_checkpointing": False,
    }


def sft_row(config: GpuBenchConfig, shape: dict, tokenizer, model) -> dict:
    batch, length = shape["batch_size"], shape["seq_len"]
    timer = StepTimer()
    row = {"step": "SFT"}
    with tempfile.TemporaryDirectory() as output_dir, peak_memory(row):
        args = SFTConfig(
            **common_args(config, output_dir),
            max_steps=config.warmup + config.steps,
            per_device_train_batch_size=batch,
            max_length=length,
            packing=False,
            torch_compile=config.torch_compile,
        )
        data = long_conversations(batch * (config.warmup + config.steps), words=length)
        SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[timer]).train()
    times = timer.times[config.warmup :]
    row["tokens_per_s"] = batch * length * len(times) / sum(times)
    return row


def reply_length(completions, **kwargs) -> list[float]:
    """Any reward will do for timing; this one varies, so advantages are not all zero."""
    return [float(len(completion[-1]["content"])) for completion in completions]


def grpo_row(config: GpuBenchConfig, shape: dict, tokenizer, model) -> dict:
    """Completion tokens over step time, from GRPOTrainer's own logs (the first step, a warm-up, left out)."""
    generations = shape["num_generations"]
    prompts = Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": f"Count to {i}."}]
                for i in range(shape["grpo_prompts"] * (config.grpo_steps + 1))
            ]
        }
    )
    row = {"step": "GRPO (generation-bound)"}
    with tempfile.TemporaryDirectory() as output_dir, peak_memory(row):
        args = GRPOConfig(
            **common_args(config, output_dir),
            max_steps=config.grpo_steps + 1,
            beta=0.0,
            per_device_train_batch_size=shape["grpo_prompts"] * generations,
            num_generations=generations,
            max_completion_length=shape["completion_length"],
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=reply_length, args=args, train_dataset=prompts, processing_class=tokenizer
        )
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "step_time" in entry][1:]
    completion_tokens = sum(args.per_device_train_batch_size * entry["completions/mean_length"] for entry in logs)
    row["tokens_per_s"] = completion_tokens / sum(entry["step_time"] for entry in logs)
    return row


def table(rows: list[dict], config: GpuBenchConfig, shape_name: str) -> str:
    precision = "bf16" if config.bf16 else "fp32"
    lines = [
        f"Device: {device_name()}; shape {shape_name}; {precision}, SDPA, fused AdamW, "
        f"torch.compile {'on' if config.torch_compile else 'off'} (GRPO: off); {date.today()}.",
        "",
        "| step | tokens/s | MFU | peak memory |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
        memory = f"{row['memory']:.1f} GiB" if row.get("memory") is not None else "-"
        lines.append(f"| {row['step']} | {row['tokens_per_s']:,.0f} | {mfu} | {memory} |")
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    lines += ["", f"Trainer / plain loop: {ratio:.3f}"]
    return "\n".join(lines)


def recipe_value(recipe: Path, sibling: str, key: str, default):
    """`key` of the recipe folder's `sibling` recipe (tokenizer.yaml, pack.yaml), or `default` without one."""
    path = recipe.with_name(sibling)
    return yaml.safe_load(path.read_text())[key] if path.is_file() else default


def synthetic_pack(path: Path, vocab_size: int, seq_len: int, blocks: int) -> None:
    """What `lmforge tokenizer` and `lmforge pack` would write, synthetic: the demo books' BPE padded with unused
    tokens to `vocab_size`, and `blocks` random blocks of `seq_len` tokens (throughput does not depend on them)."""
    tokenizer = demo_tokenizer(vocab_size)
    tokenizer.add_tokens([f"<|unused_{i}|>" for i in range(vocab_size - len(tokenizer))])
    tokenizer.save_pretrained(path / "tokenizer")
    generator = torch.Generator().manual_seed(0)
    splits = {"train": blocks, "validation": 2}
    ids = {
        split: torch.randint(len(tokenizer), (count, seq_len), generator=generator) for split, count in splits.items()
    }
    DatasetDict({split: Dataset.from_dict({"input_ids": rows.tolist()}) for split, rows in ids.items()}).save_to_disk(
        path / "pack"
    )
    settings = {"tokenizer": str(path / "tokenizer"), "documents": [], "text_files": ["synthetic blocks"]}
    (path / "pack" / "pack.json").write_text(json.dumps({"vocab_size": len(tokenizer), "settings": settings}))


def recipe_row(config: GpuBenchConfig) -> str:
    """The pretrain stage run by its recipe on synthetic data for `warmup + steps` steps, and its throughput log
    (main process; the others return "")."""
    recipe, work, state = Path(config.recipe), Path(config.work_dir), process_state()
    steps = config.warmup + config.steps
    argv = ["--config", str(recipe), "--output_dir", str(work / "run"), "--max_steps", str(steps)]
    argv += ["--logging_steps", str(steps), "--save_strategy", "no", "--eval_strategy", "no"]
    argv += ["--memorization_probes", "0", "--report_to", "none"]
    args, training_args = parse(pretrain.CONFIGS, argv)
    seq_len = recipe_value(recipe, "pack.yaml", "seq_len", args.context_length)
    per_step = (
        training_args.per_device_train_batch_size * state.num_processes * training_args.gradient_accumulation_steps
    )
    blocks_per_step = -(-args.global_batch_tokens // seq_len) if args.global_batch_tokens else per_step
    with state.main_process_first():
        if state.is_main_process:
            shutil.rmtree(work, ignore_errors=True)
            vocab_size = recipe_value(recipe, "tokenizer.yaml", "vocab_size", 8192)
            synthetic_pack(work, vocab_size, seq_len, steps * blocks_per_step)
    args.dataset, args.tokenizer = str(work / "pack"), str(work / "tokenizer")
    pretrain.main(args, training_args)
    if not state.is_main_process:
        return ""
    history = json.loads((work / "run" / "trainer_state.json").read_text())["log_history"]
    log = next(entry for entry in history if "tokens_per_second" in entry)
    mfu = f"{log['mfu']:.1%}" if "mfu" in log else "-"
    return "\n".join(
        [
            f"Device: {state.num_processes} x {device_name()}; the recipe's own step (lmforge.pretrain: its model, "
            f"global batch, optimizer, precision, torch.compile) on synthetic blocks, {steps} steps, the stage's "
            f"warm-up steps left out of its timing; {date.today()}.",
            "",
            "| recipe | processes | tokens/s (all processes) | MFU (per GPU) |",
            "|---|---:|---:|---:|",
            f"| {recipe} | {state.num_processes} | {log['tokens_per_second']:,.0f} | {mfu} |",
        ]
    )


def main(config: GpuBenchConfig) -> str:
    if config.recipe:
        report = recipe_row(config)
        if report:
            print(report)
            if config.append_to:
                with open(config.append_to, "a") as f:
                    f.write(f"\n### `accelerate launch bench/gpu.py --recipe {config.recipe}`\n\n{report}\n")
        return report
    shape = SHAPES[config.shape]
    start = time.perf_counter()
    tokenizer = demo_tokenizer(shape["vocab_size"])
    rows = pretrain_rows(config, shape, tokenizer)
    context = shape["seq_len"] + shape["completion_length"]
    bench = BenchConfig(**{key: shape[key] for key in MODEL_KEYS}, tie_word_embeddings=True, context_length=context)
    rows.append(sft_row(config, shape, tokenizer, fresh_model(bench, tokenizer)))
    rows.append(grpo_row(config, shape, tokenizer, fresh_model(bench, tokenizer)))
    report = table(rows, config, config.shape) + f"; the whole benchmark: {time.perf_counter() - start:.0f} s."
    print(report)
    if config.append_to:
        with open(config.append_to, "a") as f:
            f.write(f"\n### `python bench/gpu.py --shape {config.shape}`\n\n{report}\n")
    return report


if __name__ == "__main__":
    (gpu_config,) = parse((GpuBenchConfig,), None)
    main(gpu_config)
