"""One GPU benchmark, one command: the SmolLM-135M recipe's model shape in a pretraining, an SFT and a GRPO step.

    python bench/gpu.py                    # one GPU: SmolLM-135M shape, bf16, SDPA, torch.compile, fused AdamW
    python bench/gpu.py --shape tiny       # anywhere, CPU included (what CI runs): the same code on a tiny shape

Needs nothing but the package: the tokenizer is trained on the demo books in seconds and the data is synthetic
(throughput does not depend on what the tokens say). Measures, after warm-up steps:
- pretraining: lmforge's Trainer step against a plain PyTorch loop (bench/train_step.py), tokens/s and MFU;
- SFT: TRL's SFTTrainer on conversations truncated to max_length, tokens/s;
- GRPO: TRL's GRPOTrainer, completion tokens per second of step (generation dominates the step);
and the peak GPU memory of each. Prints one table and appends it to BENCHMARKS.md with the device's name.
"""

import contextlib
import gc
import gzip
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from lmforge.lib.configs import parse
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


def main(config: GpuBenchConfig) -> str:
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
