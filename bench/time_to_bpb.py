"""Time to quality, modded-nanogpt style: the demo's pretraining recipe against the one it replaced, in one run.

    python bench/time_to_bpb.py        # after `lmforge tokenizer` and `lmforge pack` of the demo (runs/demo/...)

The baseline is the demo recipe before issue 15 (BASELINE below: depth 2, AdamW at 3e-3, cosine, 200
steps of 8 blocks). It trains to its end, and its final held-out bits per byte is the target. Then the
current recipe (`--recipe`, default recipes/demo/pretrain.yaml) trains on the same pack, evaluated every
`eval_every` steps, and stops when it reaches the target. Time counts training steps only (evaluations
excluded): wall time, and the process's CPU time, which other work on a shared machine inflates far less
(on an idle 2-core machine, CPU time is about twice the wall time). Prints both times and their ratios.
"""

import tempfile
import time
from dataclasses import dataclass

from transformers import TrainerCallback, TrainingArguments

from lmforge.lib.configs import parse
from lmforge.pretrain import CONFIGS, PretrainArguments
from lmforge.pretrain import main as pretrain


# recipes/demo/pretrain.yaml before issue 15: 2.59 held-out bits per byte on the pack of ten plays, 2.71 on
# the pack of the whole works.
BASELINE = dict(
    depth=2,
    context_length=256,
    attn_implementation="sdpa",
    bf16=True,
    use_cpu=True,
    gradient_accumulation_steps=1,
    learning_rate=3e-3,
    lr_scheduler_type="cosine",
    max_steps=200,
    optim="adamw_torch_fused",
    per_device_train_batch_size=8,
    seed=42,
    torch_compile=False,
    warmup_steps=20,
    weight_decay=0.1,
)
# Both sides: no checkpoints or memorization probe, which cost time and measure nothing here.
COMMON = dict(
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    per_device_eval_batch_size=16,
    memorization_probes=0,
    logging_steps=10,
)


@dataclass
class BenchConfig:
    recipe: str = "recipes/demo/pretrain.yaml"
    dataset: str = "runs/demo/pack"
    tokenizer: str = "runs/demo/tokenizer"
    eval_every: int = 10


class Clock(TrainerCallback):
    """Wall and CPU seconds spent in training steps up to each evaluation; stops training at `target` bpb."""

    def __init__(self, target: float | None = None):
        self.target, self.wall, self.cpu, self.evaluations = target, 0.0, 0.0, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall += time.perf_counter() - self.start[0]
        self.cpu += time.process_time() - self.start[1]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        bpb = metrics["eval_bits_per_byte"]
        self.evaluations.append({"step": state.global_step, "wall": self.wall, "cpu": self.cpu, "bpb": bpb})
        if self.target is not None and bpb <= self.target:
            control.should_training_stop = True


def split(options: dict) -> tuple[dict, dict]:
    """Recipe keys -> (PretrainArguments keys, TrainingArguments keys)."""
    fields = PretrainArguments.__dataclass_fields__
    return ({k: v for k, v in options.items() if k in fields}, {k: v for k, v in options.items() if k not in fields})


def train(arguments: tuple, clock: Clock) -> dict:
    pretrain(*arguments, callbacks=(clock,))
    return clock.evaluations[-1]


def main(config: BenchConfig) -> None:
    data = dict(dataset=config.dataset, tokenizer=config.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        model, training = split({**BASELINE, **COMMON, **data})
        baseline = train(
            (
                PretrainArguments(**model),
                TrainingArguments(output_dir=f"{tmp}/baseline", eval_strategy="no", **training),
            ),
            Clock(),
        )
        target = baseline["bpb"]
        overrides = {
            **COMMON,
            **data,
            "eval_strategy": "steps",
            "eval_steps": config.eval_every,
            "output_dir": f"{tmp}/recipe",
        }
        argv = ["--config", config.recipe] + [f"--{key}={value}" for key, value in overrides.items()]
        clock = Clock(target)
        train(parse(CONFIGS, argv), clock)
    reached = next((e for e in clock.evaluations if e["bpb"] <= target), None)
    print(
        f"\nbaseline (depth 2, AdamW 3e-3, {BASELINE['max_steps']} steps): final held-out {target:.4f} bits/byte, "
        f"training {baseline['wall']:.1f} s wall, {baseline['cpu']:.1f} s CPU"
    )
    if reached is None:
        best = min(clock.evaluations, key=lambda e: e["bpb"])
        print(f"{config.recipe}: did not reach {target:.4f}; best {best['bpb']:.4f} at step {best['step']}")
        return
    print(
        f"{config.recipe}: {reached['bpb']:.4f} bits/byte at step {reached['step']}, "
        f"training {reached['wall']:.1f} s wall, {reached['cpu']:.1f} s CPU"
    )
    print(
        f"time to {target:.4f} bits/byte, baseline / recipe: {baseline['wall'] / reached['wall']:.2f}x (wall), "
        f"{baseline['cpu'] / reached['cpu']:.2f}x (CPU time)"
    )


if __name__ == "__main__":
    (bench_config,) = parse((BenchConfig,), None)
    main(bench_config)
