"""Reward model: preference pairs -> a model that scores a response, with TRL's RewardTrainer.

    lmforge reward --config recipes/demo/reward.yaml
    lmforge reward --config recipes/demo/reward.yaml --use_peft true --lora_r 16
    accelerate launch -m lmforge.reward --config recipes/demo/reward.yaml

The pairs come from any source lmforge.lib.sources reads (`lmforge label --export`'s folder, JSONL, CSV, Parquet or
Arrow files, a folder of them, a Hub id) in TRL's preference format, explicit or implicit prompt, standard or
conversational; without a test split, `heldout_fraction` of them are held out by a hash of each pair. A pair longer
than `max_length` stops the stage (RewardTrainer would drop it without a word) or, with `invalid_rows: drop`, is
dropped and counted.

The model is the SFT model (or any causal LM) with a one-output classification head on its last token
(AutoModelForSequenceClassification, num_labels=1), trained so that chosen responses score above
rejected ones (Bradley-Terry loss). `center_rewards_coefficient` keeps rewards near zero;
`margin_scale` > 0 asks for a reward gap of margin_scale * rank_gap between responses ranked further
apart. With `use_peft: true` only a LoRA adapter and the head are trained. Killed, it resumes from the
last checkpoint in `output_dir`.

Outputs under `output_dir`: the model and tokenizer, README.md (model card), `checkpoint-*/`,
`rewards.json` (held-out pairwise accuracy before and after training, and each held-out pair's rewards)
and `rewards.png` (distribution of held-out rewards, chosen against rejected).
"""

import json
import os
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint
from trl import ModelConfig, RewardConfig, RewardTrainer

from lmforge import LmforgeError
from lmforge.lib import sources
from lmforge.lib.cards import RightCard, datasets_of
from lmforge.lib.configs import exit_launched, parse
from lmforge.lib.files import write_json
from lmforge.lib.loading import load
from lmforge.lib.models import peft_config, whole_weights
from lmforge.lib.rewards import reward_ids


@dataclass
class RewardScriptArguments(ModelConfig, sources.PreferenceSource):
    """trl.ModelConfig (model path, dtype, use_peft and lora_* keys) plus where the preference pairs are."""

    model_name_or_path: str = field(
        default="runs/demo/sft", metadata={"help": "The model to start from: the SFT stage's output or a Hub id."}
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "Pairs held out for accuracy when the source has no test split."}
    )
    margin_scale: float = field(
        default=0.0, metadata={"help": "Above 0: required reward gap = margin_scale * rank_gap (TRL's margin)."}
    )
    lora_task_type: str = field(
        default="SEQ_CLS", metadata={"help": "SEQ_CLS: peft then also trains and saves the new score head."}
    )


CONFIGS = (RewardScriptArguments, RewardConfig)


def load_pairs(
    script_args: RewardScriptArguments, tokenizer, max_length: int | None, num_proc: int | None = None
) -> tuple[DatasetDict, dict]:
    """Train and test pairs (a source without a test split gets one, by a hash of the row), with TRL's margin when
    asked for, and the source's report. A pair longer than `max_length`, counted as the reward model reads it (rewards.reward_ids), stops the
    stage or is dropped and counted: RewardTrainer would drop it without a word."""
    too_long = (
        sources.LongerThan(
            tokenizer,
            max_length,
            ("chosen", "rejected"),
            lambda prompt, completion: len(reward_ids(tokenizer, prompt or "", completion)),
        )
        if max_length
        else None
    )
    pairs, report = sources.load_pairs(
        script_args.preferences, script_args.heldout_fraction, script_args.invalid_rows, too_long, num_proc
    )
    if script_args.margin_scale > 0:
        if "rank_gap" not in pairs["train"].column_names:
            raise LmforgeError("margin_scale: the pairs have no rank_gap column (lmforge label writes one)")
        pairs = pairs.map(lambda row: {"margin": script_args.margin_scale * row["rank_gap"]})
    return pairs, report


def tokenize(pairs, tokenizer):
    """`chosen_ids` and `rejected_ids`, which RewardTrainer takes as they are, tokenized as every scorer of the model
    tokenizes (rewards.reward_ids: read at the reply's end of turn, where PPO reads the score)."""
    return pairs.map(
        lambda row: {
            f"{side}_ids": reward_ids(tokenizer, row.get("prompt") or "", row[side]) for side in ("chosen", "rejected")
        }
    )


# Not RewardTrainer's own `evaluate()` (eval_accuracy, eval_margin): it averages per-batch means, so a short last batch
# weighs as much as a full one (54 held-out pairs in batches of 8 on a random tiny head: 0.494 there, 0.5 of pairs
# here, margins 0.00098 and 0.00125), and it returns no reward per pair, which rewards.json and rewards.png need.
@torch.no_grad()
def score_pairs(model, tokenizer, pairs, batch_size: int = 16) -> dict:
    """The reward of every held-out chosen and rejected response (`tokenize`d pairs), `batch_size` responses per
    forward pass (right-padded: the head reads the last token that is not padding), and how often chosen scores
    higher."""
    model.eval()
    rewards = {"chosen": [], "rejected": []}
    with whole_weights(model):  # every rank scores every pair: under ZeRO-3 each holds a slice of each weight
        for side in rewards:
            ids = pairs[f"{side}_ids"]
            for start in range(0, len(ids), batch_size):
                batch = tokenizer.pad(
                    {"input_ids": ids[start : start + batch_size]}, padding_side="right", return_tensors="pt"
                )
                rewards[side] += model(**batch.to(model.device)).logits[:, 0].float().tolist()
    wins = [c > r for c, r in zip(rewards["chosen"], rewards["rejected"])]
    return {"accuracy": sum(wins) / len(wins) if wins else None, **rewards}


def plot(rewards: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training machine
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    values = rewards["chosen"] + rewards["rejected"]
    low, high = min(values), max(values)
    bins = [low + (high - low) * i / 30 for i in range(31)] if high > low else 1  # the same bins for both
    axes.hist(rewards["chosen"], bins=bins, alpha=0.6, label="chosen")
    axes.hist(rewards["rejected"], bins=bins, alpha=0.6, label="rejected")
    axes.set(
        xlabel="reward",
        ylabel="held-out responses",
        title=f"Held-out rewards (pairwise accuracy {rewards['accuracy']:.2f})",
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class ScoreTrainer(RightCard, RewardTrainer):
    """RewardTrainer whose model card names the SFT model and the pairs as they are (lib.cards.training_card)."""


def main(script_args: RewardScriptArguments, training_args: RewardConfig) -> dict:
    tokenizer = load(AutoTokenizer, script_args.model_name_or_path, "model_name_or_path")
    if not tokenizer.chat_template or tokenizer.pad_token is None:
        raise LmforgeError(f"{script_args.model_name_or_path}: tokenizer has no chat template or no pad token")
    pairs, report = load_pairs(script_args, tokenizer, training_args.max_length, training_args.dataset_num_proc)
    pairs = tokenize(pairs, tokenizer)
    test = pairs.get("test") or []  # none held out: heldout_fraction 0 and no test split
    if not test:
        training_args.eval_strategy = IntervalStrategy.NO  # nothing held out, nothing to evaluate
    # The score head starts random: seed it, so that the same recipe gives the same head on any number of processes.
    set_seed(training_args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        script_args.model_name_or_path,
        num_labels=1,
        dtype=script_args.dtype,
        attn_implementation=script_args.attn_implementation,
    )
    # The head reads the last token that is not padding: the model must know which id pads.
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = ScoreTrainer(
        model=model,
        args=training_args,
        train_dataset=pairs["train"],
        eval_dataset=test or None,
        processing_class=tokenizer,
        peft_config=peft_config(script_args, model),
        base_model=script_args.model_name_or_path,
        datasets=datasets_of(script_args.preferences),
    )

    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    # Accuracy of the untrained head is the baseline (about chance); on resume the starting point is gone.
    before = score_pairs(trainer.model, tokenizer, test)["accuracy"] if last is None else None
    train = trainer.train(resume_from_checkpoint=last)
    after = score_pairs(trainer.model, tokenizer, test)

    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(
        model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
        dataset_name=sources.spec_of(script_args.preferences)["path"],
        tags=["lmforge", "reward-model"],
    )
    if training_args.push_to_hub:
        trainer.push_to_hub(
            dataset_name=sources.spec_of(script_args.preferences)["path"], tags=["lmforge", "reward-model"]
        )
    pair_sources = sorted(set(pairs["train"]["source"])) if "source" in pairs["train"].column_names else None
    results = {
        "preferences": report,
        "train_pairs": len(pairs["train"]),
        "test_pairs": len(test),
        "pair_sources": pair_sources,
        "heldout_accuracy_before": before,
        "heldout_accuracy": after["accuracy"],
        "train_loss": train.training_loss,
        "resumed_from": last,
        "lora": script_args.use_peft,
        "attn_implementation": model.config._attn_implementation,
    }
    if trainer.is_world_process_zero():
        write_json(os.path.join(training_args.output_dir, "rewards.json"), {**results, "heldout_rewards": after})
        if after["accuracy"] is not None:
            plot(after, os.path.join(training_args.output_dir, "rewards.png"))
        print(json.dumps(results, indent=2))
    return results


def cli(argv=None):
    script_args, training_args = parse(CONFIGS, argv)
    main(script_args, training_args)
    exit_launched()


if __name__ == "__main__":
    cli()
