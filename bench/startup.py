"""Start-up: the seconds before a stage's first line of work, which every `lmforge STAGE`, every process of an
`accelerate launch` and every stage of `lmforge run` pays. Each stage's module is imported in a fresh interpreter,
side by side with the bare import of the library it is a layer over (the same process start, nothing of lmforge's).

    python bench/startup.py                  # the runner and the stages in BARE, best of 3 each (about 3 min here)
    python bench/startup.py --stages data sft --repeats 5

Prints, for each stage, lmforge's seconds, the bare library's, and their ratio. A ratio near 1 means the stage
imports what its library needs and little more; the runner and the stages that train nothing must not pay for
transformers' trainer (torch, accelerate, PEFT: about 4 s here).
"""

import subprocess
import sys
import time
from dataclasses import dataclass, field

from lmforge.lib.configs import parse


# Stage module -> the bare import of the library it is a layer over.
BARE = {
    "run": "import yaml, huggingface_hub",
    "data": "import datatrove.executor, datatrove.pipeline.filters, datatrove.pipeline.dedup",
    "tokenizer": "import tokenizers, datasets; from transformers import PreTrainedTokenizerFast",
    "pack": "import datasets; from transformers import AutoTokenizer",
    "pretrain": "from transformers import Trainer, LlamaForCausalLM",
    "sft": "from trl import SFTTrainer",
    "reward": "from trl import RewardTrainer",
    "dpo": "from trl import DPOTrainer",
    "grpo": "from trl import GRPOTrainer",
    "ppo": "from trl.experimental.ppo import PPOTrainer",
    "eval": "import evaluate, lm_eval; from transformers import AutoModelForCausalLM",
}


@dataclass
class StartupBenchConfig:
    stages: list[str] = field(default_factory=lambda: list(BARE))
    repeats: int = 3  # fresh interpreters per side; the best counts (the first may read files from disk)


def seconds(code: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def main(config: StartupBenchConfig) -> None:
    unknown = [stage for stage in config.stages if stage not in BARE]
    if unknown:
        sys.exit(f"startup: --stages {' '.join(unknown)}: not timed here; one of {', '.join(BARE)}")
    print(f"{'stage':<12}{'lmforge s':>10}{'bare s':>8}{'ratio':>7}  bare import")
    for stage in config.stages:
        ours = seconds(f"import lmforge.{stage}", config.repeats)
        bare = seconds(BARE[stage], config.repeats)
        print(f"{stage:<12}{ours:10.2f}{bare:8.2f}{ours / bare:7.2f}  {BARE[stage]}", flush=True)
    print(f"\nbest of {config.repeats} fresh interpreters each; an empty interpreter: {seconds('pass', 3):.2f} s")


if __name__ == "__main__":
    main(*parse((StartupBenchConfig,)))
