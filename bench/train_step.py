"""Pretraining step throughput: lmforge's Trainer-based step against a plain PyTorch loop, in one run.

    python bench/train_step.py                      # the demo model (depth 2) on CPU, about 1-2 minutes
    python bench/train_step.py --depth 12 --batch_size 32 --steps 50 --bf16 true   # on a GPU

Both sides train the same freshly initialised model (same seed) on the same blocks of the packed
demo dataset (run `lmforge tokenizer` and `lmforge pack` first), with the same precision, fused AdamW
and gradient clipping at 1.0 (Trainer's default), on the same attention path (no attention mask: the
pretrain stage's BlockCollator drops the all-ones one, so SDPA runs causal on both sides) and with the
batch on the device before the timer starts on both sides (Trainer's data loader places it before
`on_step_begin`). Only steps after `warmup` are timed, between synchronisations. Prints tokens/s for
each, their ratio, and MFU where the GPU's bf16 peak is known.
"""

import tempfile
import time
from dataclasses import dataclass

import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, set_seed

from lmforge.lib.configs import parse
from lmforge.pretrain import BlockCollator, flops_per_token, model_config, peak_flops, synchronize


@dataclass
class BenchConfig:
    dataset: str = "runs/demo/pack"
    tokenizer: str = "runs/demo/tokenizer"
    depth: int = 2
    # Shape beyond depth (None: lmforge pretrain's defaults from depth); bench/gpu.py sets SmolLM-135M's.
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    tie_word_embeddings: bool = False
    vocab_size: int | None = None  # None: the tokenizer's
    context_length: int = 1024
    batch_size: int = 8
    steps: int = 20
    warmup: int = 3
    learning_rate: float = 1e-3
    bf16: bool = False
    torch_compile: bool = False  # both sides; the warm-up steps absorb the compile


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.times.append(time.perf_counter() - self.start)


def fresh_model(config: BenchConfig, tokenizer):
    set_seed(0)
    shape = model_config(
        config.depth,
        tokenizer,
        config.context_length,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
        config.tie_word_embeddings,
    )
    shape.vocab_size = config.vocab_size or shape.vocab_size
    model = AutoModelForCausalLM.from_config(shape, attn_implementation="sdpa")
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def trainer_step_times(config: BenchConfig, tokenizer, blocks) -> list[float]:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=config.warmup + config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            optim="adamw_torch_fused",
            bf16=config.bf16,
            torch_compile=config.torch_compile,
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        Trainer(
            model=fresh_model(config, tokenizer),
            args=args,
            train_dataset=blocks,
            data_collator=BlockCollator(tokenizer),
            callbacks=[timer],
        ).train()
    return timer.times[config.warmup :]


def plain_step_times(config: BenchConfig, tokenizer, blocks) -> list[float]:
    model = fresh_model(config, tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, fused=True)
    forward = torch.compile(model) if config.torch_compile else model
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    batches = blocks.shuffle(seed=0).with_format("torch")["input_ids"]
    times = []
    for step in range(config.warmup + config.steps):
        ids = batches[step * config.batch_size : (step + 1) * config.batch_size].to(model.device)
        synchronize()
        start = time.perf_counter()
        with torch.autocast(model.device.type, dtype=dtype, enabled=config.bf16):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        times.append(time.perf_counter() - start)
    return times[config.warmup :]


def main(config: BenchConfig) -> None:
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    blocks = load_from_disk(config.dataset)["train"]
    seq_len = len(blocks[0]["input_ids"])
    tokens_per_step = config.batch_size * seq_len
    fpt = flops_per_token(fresh_model(config, tokenizer), seq_len)
    peak = peak_flops()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device {device}; depth {config.depth}, batch {config.batch_size}x{seq_len}, bf16={config.bf16}, "
        f"{config.steps} timed steps after {config.warmup}"
    )
    results = {}
    for name, step_times in (("trainer", trainer_step_times), ("plain", plain_step_times)):
        times = step_times(config, tokenizer, blocks)
        results[name] = tokens_per_step * len(times) / sum(times)
        mfu = f", MFU {results[name] * fpt / peak:.1%}" if peak else ""
        print(f"{name:>8}: {results[name]:,.0f} tokens/s{mfu}")
    print(f"   ratio: trainer/plain = {results['trainer'] / results['plain']:.3f}")


if __name__ == "__main__":
    (bench_config,) = parse((BenchConfig,), None)
    main(bench_config)
