"""Stage 6, PPO (RLHF): the SFT assistant optimised against the reward model with trl.experimental.ppo.PPOTrainer.

    lmforge ppo --config recipes/demo/ppo.yaml
    accelerate launch -m lmforge.ppo --config recipes/demo/ppo.yaml   # several processes or machines

PPO samples a reply to each prompt, scores it with the reward model (AutoModelForSequenceClassification,
num_labels=1, trained by `lmforge reward`), subtracts `kl_coef` times the KL to the frozen SFT model per token
and `missing_eos_penalty` from replies that never end, and updates the policy with clipped policy-gradient steps
against a value model, initialised from the reward model (or `value_model_path`). Prompts are the verifiable tasks'
questions through the chat template, ending with the assistant header. The reward model reads the policy's token
ids as they are, so it must share the policy's tokenizer. PPO lives in trl.experimental in TRL 1.12, the last
release that has it (pinned). The trainer logs objective/scores (mean reward), objective/kl,
objective/entropy and val/num_eos_tokens; the watch logs the replies' length and repetition.

Killed, the stage resumes from the last checkpoint: the policy and value weights saved there, for the episodes
still to run (the optimizer and learning-rate schedule restart: PPOTrainer.train takes no checkpoint).

Outputs under `output_dir`: the policy and tokenizer, `checkpoint-*/` (with `value_model/`), `watch.json`,
`eval_before.json` and `ppo_results.json` (written last: mean reward and KL logged at the start and end, the
before/after table, the watch's report).
"""

import os
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint


os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # experimental is where PPO lives in the pinned TRL 1.12
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402
from trl.experimental.ppo.ppo_trainer import OnlineTrainerState  # noqa: E402

from lmforge import LmforgeError  # noqa: E402
from lmforge.lib.cards import RightCard, datasets_of  # noqa: E402
from lmforge.lib.configs import exit_launched, from_json, parse  # noqa: E402
from lmforge.lib.loading import load_reward_model  # noqa: E402
from lmforge.lib.models import process_state  # noqa: E402
from lmforge.lib.rewards import verifiable_prompts  # noqa: E402
from lmforge.lib.rl_eval import (  # noqa: E402
    HeldoutConfig,
    chat_tokenizer,
    evaluate_sft,
    evaluate_trained,
    heldout_prompts,
    push,
    restore_sft_settings,
    without_heldout,
    write_results,
)
from lmforge.lib.trl_logs import PPO_ENTROPY, PPO_KL, PPO_SCORE, logged  # noqa: E402
from lmforge.lib.watch import WatchCallback, WatchConfig  # noqa: E402


@dataclass
class PPOScriptArguments:
    tasks: dict | str | None = field(
        default=None, metadata={"help": "Prompts, task -> count: `arithmetic` (lmforge) or a reasoning-gym dataset."}
    )
    value_model_path: str | None = field(
        default=None, metadata={"help": "Initial value model; None: the reward model (reward_model_path)."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel of the models trained and the reference: sdpa, eager, flash_attention_2 "
            "(needs the flash-attn package); None: transformers' default (sdpa)."
        },
    )

    def __post_init__(self):
        self.tasks = from_json(self.tasks, "tasks") or {"arithmetic": 512}


CONFIGS = (PPOScriptArguments, PPOConfig, WatchConfig, HeldoutConfig)


class TrainingStopped(Exception):
    """Raised by StopWhenTold to leave PPOTrainer's loop."""


class StopWhenTold(TrainerCallback):
    """TRL 1.12's PPOTrainer never reads `control.should_training_stop`: end its loop at the step where a callback
    before this one (the watch) sets it. The step's checkpoint is not saved: the watch keeps the last healthy one.
    At the last step the flow callback sets it too, and the loop ends by itself after saving."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_training_stop and state.global_step < state.max_steps:
            raise TrainingStopped


class CheckpointedPPOTrainer(RightCard, PPOTrainer):
    """PPOTrainer whose checkpoints also hold the value model, so that a resumed run keeps its critic, whose saves
    work on any number of processes and shards, and whose training ends when a callback says so (StopWhenTold)."""

    def train(self):
        try:
            super().train()
        except TrainingStopped:  # every process stops at the same step: the watch's decision is broadcast
            self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """The policy and the tokenizer in `output_dir`, and in a checkpoint (Trainer's `_internal_call`) the value
        model in `value_model/`. Every process takes part in gathering the weights: under ZeRO-3 each holds a slice
        of each, and a save by the main process alone would write its slice. (TRL 1.12's own save hands the policy to
        Trainer.save_model in place of the DeepSpeed engine, which fails under ZeRO-3.)"""
        checkpoint = _internal_call and output_dir is not None  # Trainer's push_to_hub saves to output_dir, no folder
        output_dir = output_dir or self.args.output_dir
        weights = self.accelerator.get_state_dict(self.model)  # a collective: the main process gets them whole
        if not self.args.should_save:
            return
        wrapper = self.accelerator.unwrap_model(self.model)
        wrapper.policy.save_pretrained(output_dir, state_dict=part(weights, "policy."))
        self.processing_class.save_pretrained(output_dir)
        if checkpoint:
            value_dir = os.path.join(output_dir, "value_model")
            wrapper.value_model.save_pretrained(value_dir, state_dict=part(weights, "value_model."))

    # On several processes PPOTrainer keeps the process-group wrapper (DDP, DeepSpeed) in `self.model`, which hides
    # the config its model card reads.
    def create_model_card(self, *args, **kwargs):
        wrapped, self.model = self.model, self.accelerator.unwrap_model(self.model)
        try:
            super().create_model_card(*args, **kwargs)
        finally:
            self.model = wrapped


def part(weights: dict, prefix: str) -> dict:
    """The weights of the submodule at `prefix` of a state dict, under their names inside it."""
    return {name[len(prefix) :]: value for name, value in weights.items() if name.startswith(prefix)}


class ContinueCount(TrainerCallback):
    """Resuming: number steps and episodes on from the checkpoint's, so that logs and checkpoint names continue."""

    def __init__(self, steps: int, episodes: int):
        self.steps, self.episodes = steps, episodes

    def on_train_begin(self, args, state, control, **kwargs):
        state.global_step, state.episode = self.steps, self.episodes
        state.max_steps += self.steps


def prompt_ids(prompts, tokenizer):
    """The `input_ids` column PPOTrainer reads: each chat prompt through the template, ending with the
    assistant header (transformers 5 returns a dict from apply_chat_template)."""
    return prompts.map(
        lambda row: {
            "input_ids": tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)[
                "input_ids"
            ]
        },
        remove_columns=prompts.column_names,
    )


def check_same_tokenizer(tokenizer, reward_model_path: str):
    if AutoTokenizer.from_pretrained(reward_model_path).get_vocab() != tokenizer.get_vocab():
        raise LmforgeError(
            f"reward_model_path: {reward_model_path} has another tokenizer than the policy; PPO passes "
            "the policy's token ids to the reward model, so it must share the policy's tokenizer"
        )


def main(
    script_args: PPOScriptArguments, training_args: PPOConfig, watch_config: WatchConfig, heldout_config: HeldoutConfig
) -> dict:
    output_dir, sft_path = training_args.output_dir, training_args.sft_model_path
    tokenizer = chat_tokenizer(sft_path)
    tokenizer.padding_side = "left"  # prompts are padded on the left so that every reply starts at the same column
    check_same_tokenizer(tokenizer, training_args.reward_model_path)
    attention = {"attn_implementation": script_args.attn_implementation}  # of all four models
    # Before any generation: a model without a scoring head is refused in one line, not scored with at random.
    reward_model = load_reward_model(training_args.reward_model_path, "reward_model_path", **attention)
    heldout_config.heldout_reward_model = heldout_config.heldout_reward_model or training_args.reward_model_path
    heldout = heldout_prompts(heldout_config)
    train = without_heldout(verifiable_prompts(script_args.tasks, training_args.seed), heldout)
    before = evaluate_sft(sft_path, tokenizer, heldout, heldout_config, output_dir)

    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    done = 0
    if last:  # resume: the saved policy and critic, for the episodes still to run
        # PPO's state has an `episode` count that TrainerState.load_from_json would refuse.
        done = OnlineTrainerState.load_from_json(os.path.join(last, TRAINER_STATE_NAME)).global_step
    policy = AutoModelForCausalLM.from_pretrained(last or sft_path, **attention)
    value_path = os.path.join(last, "value_model") if last else script_args.value_model_path
    value_model = AutoModelForSequenceClassification.from_pretrained(
        value_path or training_args.reward_model_path, num_labels=1, **attention
    )
    for model in (value_model, reward_model):
        model.config.pad_token_id = tokenizer.pad_token_id  # scores are read at the last token before padding
    batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * process_state().num_processes
    )  # episodes per PPO update
    total = training_args.total_episodes or int(training_args.num_train_epochs * len(train))
    training_args.total_episodes = max(total - done * batch, batch)

    watch = WatchCallback(watch_config, heldout["prompt"], tokenizer, output_dir)
    trainer = CheckpointedPPOTrainer(
        args=training_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=AutoModelForCausalLM.from_pretrained(sft_path, **attention),
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=prompt_ids(train, tokenizer),
        eval_dataset=prompt_ids(heldout, tokenizer),
        callbacks=[watch, StopWhenTold()] + ([ContinueCount(done, done * batch)] if last else []),
        base_model=sft_path,
        datasets=datasets_of(script_args.tasks),
    )
    trainer.train()

    trainer.save_model(output_dir)
    final_model = watch.restore_last_healthy(output_dir) or "last step"  # after a stop: the last healthy checkpoint
    restore_sft_settings(sft_path, output_dir)
    after = evaluate_trained(output_dir, sft_path, tokenizer, heldout, heldout_config)

    history = trainer.state.log_history
    score_first, score_last = logged(history, PPO_SCORE)
    kl_first, kl_last = logged(history, PPO_KL)
    results = {
        "tasks": script_args.tasks,
        "train_prompts": len(train),
        "reward_model": training_args.reward_model_path,
        "score_first": score_first,
        "score_last": score_last,
        "kl_first": kl_first,
        "kl_last": kl_last,
        "entropy_last": logged(history, PPO_ENTROPY)[1],
        "resumed_from": last,
        "attn_implementation": policy.config._attn_implementation,
        "eval": {"before": before, "after": after},
        "watch": watch.report(),
        "final_model": final_model,
    }
    write_results(output_dir, "ppo", results)
    if training_args.push_to_hub:
        push(trainer, "ppo")
    return results


def cli(argv=None):
    main(*parse(CONFIGS, argv))
    exit_launched()


if __name__ == "__main__":
    cli()
