"""Stage 6, DPO: the SFT assistant trained directly on preference pairs with TRL's DPOTrainer, no reward model.

    lmforge dpo --config recipes/demo/dpo.yaml
    accelerate launch -m lmforge.dpo --config recipes/demo/dpo.yaml   # several processes or machines

The pairs are the ones the reward model learns from: `lmforge label --export` writes them to
runs/demo/labels/preferences (a DatasetDict, train and test split by prompt) in TRL's conversational preference
format (prompt = messages, chosen/rejected = [assistant message]). A user's own pairs work too: a Hub id, JSONL,
CSV or Parquet files or a folder of them, explicit or implicit prompt, standard or conversational (lib.sources);
without a test split, `heldout_fraction` of them are held out by a hash of each pair, and a pair longer than
`max_length` stops the stage (DPOTrainer would truncate it) or, with `invalid_rows: drop`, is dropped and counted.
DPO raises the policy's log-probability of chosen over rejected replies relative to a frozen reference, the SFT
model, which TRL reloads from `model_name_or_path` (so that must be a saved directory or Hub id); `beta` sets how
far the policy may move. The watch samples held-out prompts during training and stops a run that degenerates;
held-out accuracy, reward-model score, KL to the SFT model and repetition are measured before and after.
Killed, the stage resumes from the last checkpoint.

Outputs under `output_dir`: the policy and tokenizer, `checkpoint-*/`, `watch.json`, `eval_before.json` and
`dpo_results.json` (written last: the reward margin chosen - rejected on training batches at the start and end
and on the test pairs after training, the before/after table, the watch's report).
"""

import os
from dataclasses import dataclass, field

from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint
from trl import DPOConfig, DPOTrainer

from lmforge.lib.cards import RightCard, datasets_of
from lmforge.lib.configs import exit_launched, parse
from lmforge.lib.rl_eval import (
    HeldoutConfig,
    chat_tokenizer,
    evaluate_sft,
    evaluate_trained,
    heldout_prompts,
    push,
    restore_sft_settings,
    write_results,
)
from lmforge.lib.sources import LongerThan, PreferenceSource, load_pairs
from lmforge.lib.trl_logs import DPO_ACCURACY, DPO_MARGIN, logged
from lmforge.lib.watch import WatchCallback, WatchConfig


@dataclass
class DPOScriptArguments(PreferenceSource):
    model_name_or_path: str = field(default="runs/demo/sft", metadata={"help": "The SFT model: policy and reference."})
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel of the models trained and the reference: sdpa, eager, flash_attention_2 "
            "(needs the flash-attn package); None: transformers' default (sdpa)."
        },
    )


CONFIGS = (DPOScriptArguments, DPOConfig, WatchConfig, HeldoutConfig)


class PolicyTrainer(RightCard, DPOTrainer):
    """DPOTrainer whose model card names the SFT model and the data as they are (lib.cards.training_card)."""


def main(
    script_args: DPOScriptArguments, training_args: DPOConfig, watch_config: WatchConfig, heldout_config: HeldoutConfig
) -> dict:
    output_dir = training_args.output_dir
    tokenizer = chat_tokenizer(script_args.model_name_or_path)
    # A pair longer than max_length is the user's to know about: DPOTrainer would cut it short without a word.
    too_long = (
        LongerThan(tokenizer, training_args.max_length, ("chosen", "rejected")) if training_args.max_length else None
    )
    pairs, report = load_pairs(
        script_args.preferences,
        script_args.heldout_fraction,
        script_args.invalid_rows,
        too_long,
        training_args.dataset_num_proc,
    )
    pairs = pairs.select_columns(["prompt", "chosen", "rejected"])  # DPOTrainer reads these, and trips on others
    if "test" not in pairs:
        training_args.eval_strategy = IntervalStrategy.NO  # nothing held out, nothing to evaluate
    heldout = heldout_prompts(heldout_config)

    before = evaluate_sft(script_args.model_name_or_path, tokenizer, heldout, heldout_config, output_dir)
    training_args.model_init_kwargs = {  # TRL loads the policy and the reference with these
        **(training_args.model_init_kwargs or {}),
        "attn_implementation": script_args.attn_implementation,
    }
    watch = WatchCallback(watch_config, heldout["prompt"], tokenizer, output_dir)
    trainer = PolicyTrainer(
        model=script_args.model_name_or_path,  # a path, so that TRL can load the frozen reference from it too
        args=training_args,
        train_dataset=pairs["train"],
        eval_dataset=pairs.get("test"),
        processing_class=tokenizer,
        callbacks=[watch],
        base_model=script_args.model_name_or_path,
        datasets=datasets_of(script_args.preferences),
    )
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    trainer.train(resume_from_checkpoint=last)
    test = trainer.evaluate() if "test" in pairs else {}

    sft_path = script_args.model_name_or_path
    trainer.save_model(output_dir)
    final_model = watch.restore_last_healthy(output_dir) or "last step"  # after a stop: the last healthy checkpoint
    restore_sft_settings(sft_path, output_dir)
    after = evaluate_trained(output_dir, sft_path, tokenizer, heldout, heldout_config)

    margin_first, margin_last = logged(trainer.state.log_history, DPO_MARGIN)
    results = {
        "preferences": script_args.preferences,
        "pairs": report,
        "train_pairs": len(pairs["train"]),
        "test_pairs": len(pairs["test"]) if "test" in pairs else 0,
        "margin_first": margin_first,
        "margin_last": margin_last,
        "test_margin": test.get(f"eval_{DPO_MARGIN}"),
        "test_accuracy": test.get(f"eval_{DPO_ACCURACY}"),
        "resumed_from": last,
        "attn_implementation": trainer.model.config._attn_implementation,
        "eval": {"before": before, "after": after},
        "watch": watch.report(),
        "final_model": final_model,
    }
    write_results(output_dir, "dpo", results)
    if training_args.push_to_hub:
        push(trainer, "dpo")
    return results


def cli(argv=None):
    main(*parse(CONFIGS, argv))
    exit_launched()


if __name__ == "__main__":
    cli()
