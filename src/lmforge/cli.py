"""`lmforge STAGE [--config recipe.yaml] [--key value ...]`: run one stage of the pipeline.

Each stage is one module of this package with a `cli(argv)` function; this file only dispatches,
so `lmforge data ...` and `python -m lmforge.data ...` do the same thing.
"""

import importlib
import sys

from lmforge import LmforgeError

# Stage name -> one-line description, in pipeline order.
STAGES = {
    "run": "every stage of a recipe folder in order, skipping finished ones: lmforge run recipes/demo",
    "data": "WARC -> clean text with datatrove (URL, language, quality filters, MinHash dedup, PII)",
    "tokenizer": "clean text -> byte-level BPE tokenizer with special tokens and chat template (tokenizers)",
    "tokens": "how a text or conversation splits into tokens: ids, bytes, special tokens, loss mask (ANSI, HTML)",
    "pack": "documents -> fixed-length blocks of token ids, train/validation, saved with datasets",
    "pretrain": "packed blocks -> Llama-family base model from scratch (transformers Trainer)",
    "generate": "sample from a saved model: temperature, top-k/top-p, seeds, streaming",
    "sft": "base model -> assistant on validated, mixed conversations; full or LoRA (TRL SFTTrainer)",
    "merge": "fold a LoRA adapter into its base model (peft)",
    "interrogate": "ask known-answer questions; write refusals for what the model does not know",
    "chat": "multi-turn terminal chat with a saved assistant model, streamed",
    "serve": "a local chat page (Gradio) for a saved assistant model: streamed, settings, tools",
    "rollouts": "K sampled responses per prompt from a chat model, resumable, saved with datasets",
    "label": "rank rollouts on a local page (Gradio) or with judges; export pairwise preferences",
    "reward": "preference pairs -> reward model with a scalar head (TRL RewardTrainer)",
    "ppo": "SFT model -> policy optimised against the reward model, KL-penalised (TRL experimental PPOTrainer)",
    "grpo": "SFT model -> policy trained on verifiable tasks with registered rewards (TRL GRPOTrainer)",
    "dpo": "SFT model -> policy trained directly on the preference pairs (TRL DPOTrainer)",
    "eval": "every model of a run in one table: bits/byte, chat compliance, accuracy, refusals, pairwise accuracy",
    "report": "the run's report card: report.md with plots of data, tokenizer, training, evaluation and cost",
}


def usage() -> str:
    lines = ["usage: lmforge STAGE --config recipes/NAME/STAGE.yaml [--key value ...]", "", "stages:"]
    lines += [f"  {name:<12}{doc}" for name, doc in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.exit(f"lmforge: unknown stage {stage!r}\n\n{usage()}")
    module = importlib.import_module(f"lmforge.{stage}")
    try:
        module.cli(rest)
    except LmforgeError as error:
        # Bad input is the user's to fix: say what and where, without a library traceback.
        sys.exit(f"lmforge {stage}: error: {error}")


if __name__ == "__main__":
    main()
