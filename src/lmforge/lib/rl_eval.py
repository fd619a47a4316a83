"""Before/after evaluation of an RL stage on held-out verifiable prompts, the same for GRPO, DPO and PPO.

Four figures per policy, printed as a small table and saved in the stage's results JSON:
    reward_model   mean score of the reward model (`heldout_reward_model`) on greedy replies, if one is given
    accuracy       share of held-out problems answered right (greedy replies, `accuracy` reward)
    kl             KL to the SFT model: log p_policy - log p_sft summed over the tokens of sampled replies,
                   averaged over prompts (0 for the SFT model itself)
    repetition     share of repeated token 3-grams in the greedy replies; mean_length is their length in tokens
and, with `heldout_tools`, tool_calls: the mean number of calls per greedy reply, the tools run as it is generated.
The held-out problems come from a seed of their own and are removed from any training prompts.
"""

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from accelerate.utils import broadcast_object_list
from datasets import Dataset
from huggingface_hub import HfApi
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

from lmforge.lib.chat_format import end_of_turn
from lmforge.lib.configs import from_json
from lmforge.lib.files import read_json, write_json
from lmforge.lib.intervals import describe, paired_bootstrap
from lmforge.lib.loading import load
from lmforge.lib.models import device, loading_alone, process_state
from lmforge.lib.repetition import repetition_rate
from lmforge.lib.rewards import accuracy, reward_model, verifiable_prompts
from lmforge.lib.tools import load_tools
from lmforge.lib.tools.generation import GREEDY, end_of_turn_ids, generate_with_tools, model_generate, prompt_tools
from lmforge.lib.watch import sampled_ids_without_stop


METRICS = ("reward_model", "accuracy", "kl", "repetition", "mean_length", "tool_calls")


@dataclass
class HeldoutConfig:
    heldout_tasks: dict | str | None = field(
        default=None, metadata={"help": "Held-out verifiable prompts, task -> count (default {arithmetic: 32})."}
    )
    heldout_seed: int = field(default=1000, metadata={"help": "Seed of the held-out problems."})
    heldout_max_new_tokens: int = field(default=96, metadata={"help": "Length of the evaluated replies."})
    heldout_reward_model: str | None = field(
        default=None, metadata={"help": "Reward model scoring the held-out replies (None: no reward-model score)."}
    )
    heldout_tools: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Tools run while the held-out greedy replies are generated "
            "(lib.tools): accuracy then counts answers reached with them."
        },
    )

    def __post_init__(self):
        self.heldout_tasks = from_json(self.heldout_tasks, "heldout_tasks") or {"arithmetic": 32}


def chat_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The policy's tokenizer with the model's own end of turn as eos (<|im_end|>, <|eot_id|>, <end_of_turn>...,
    from lmforge.lib.chat_format): TRL's RL trainers stop sampling and mask the reply at `tokenizer.eos_token`, and a
    chat reply ends at the end of its turn, not at the pretraining end of text."""
    tokenizer = load(AutoTokenizer, path)  # one line for a folder not there (an SFT not run yet)
    tokenizer.eos_token = end_of_turn(tokenizer, f"{path} (RL starts from a chat model)")
    return tokenizer


def restore_sft_settings(sft_path: str, output_dir: str) -> None:
    """Save the SFT model's tokenizer and generation config with the trained policy (main process): the trainers align
    both to the end-of-turn-as-eos tokenizer of `chat_tokenizer`, which would drop the end of text as a stop and as
    the eos."""
    if process_state().is_main_process:
        AutoTokenizer.from_pretrained(sft_path).save_pretrained(output_dir)
        GenerationConfig.from_pretrained(sft_path).save_pretrained(output_dir)


def heldout_prompts(config: HeldoutConfig) -> Dataset:
    return verifiable_prompts(config.heldout_tasks, config.heldout_seed)


def without_heldout(train: Dataset, heldout: Dataset) -> Dataset:
    """Training prompts minus any that are also held out (small task spaces repeat questions across seeds)."""
    held = {p[-1]["content"] for p in heldout["prompt"]}
    return train.filter(lambda row: row["prompt"][-1]["content"] not in held)


def sequence_logprobs(
    model: PreTrainedModel, prompts: list[list[int]], replies: list[list[int]], batch_size: int = 8
) -> list[float]:
    """log p(reply | prompt) of each pair, summed over the reply's tokens, `batch_size` pairs per forward pass
    (right-padded: the padding comes after every token that is scored, so it changes none of them)."""
    sums = []
    for start in range(0, len(prompts), batch_size):
        rows = [p + r for p, r in zip(prompts[start : start + batch_size], replies[start : start + batch_size])]
        width = max(map(len, rows))
        ids = torch.tensor([row + [0] * (width - len(row)) for row in rows], device=model.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=model.device)
        with torch.no_grad():
            logprobs = model(ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        taken = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        for row, prompt, reply in zip(taken, prompts[start:], replies[start:]):
            sums.append(row[len(prompt) - 1 : len(prompt) + len(reply) - 1].sum().item())
    return sums


def greedy_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ids: list[list[int]],
    tools: dict,
    config: HeldoutConfig,
) -> tuple[list[list[int]], float | None]:
    """Greedy replies to the prompt `ids` without their end-of-turn token, with `tools` run when given (the
    model's tokens and the results), and the mean number of tool calls (None without tools)."""
    stops = end_of_turn_ids(model, tokenizer)
    turns = generate_with_tools(
        model_generate(model, tokenizer, **GREEDY), tokenizer, ids, tools, stops, config.heldout_max_new_tokens
    )
    replies = [turn.ids[:-1] if turn.ids and turn.ids[-1] in stops else turn.ids for turn in turns]
    return replies, sum(turn.calls for turn in turns) / len(turns) if config.heldout_tools else None


def evaluate_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Dataset,
    config: HeldoutConfig,
    reference: PreTrainedModel | None = None,
) -> dict:
    """The METRICS of `model` on `prompts` (verifiable_prompts rows); KL is measured against `reference`."""
    model.eval()
    tools = load_tools(config.heldout_tools)  # built once: each builds and checks its sandbox
    schemas = prompt_tools(tokenizer, tools)
    ids = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True, tools=schemas)["input_ids"]
        for p in prompts["prompt"]
    ]
    greedy, calls = greedy_replies(model, tokenizer, ids, tools, config)
    texts = tokenizer.batch_decode(greedy, skip_special_tokens=True)
    scores = [s for s in accuracy(texts, prompts["task"], prompts["answer"], prompts["entry"]) if s is not None]
    rewards = (
        reward_model(texts, prompts["prompt"], config.heldout_reward_model) if config.heldout_reward_model else None
    )
    results = {
        "reward_model": statistics.mean(rewards) if rewards else None,
        "reward_model_sd": statistics.pstdev(rewards) if rewards else None,  # the yardstick of a change in score
        "accuracy": sum(scores) / len(scores) if scores else None,
        "scores": scores,  # per problem, for the bootstrap interval of the change (accuracy_change)
        "kl": 0.0,
        "repetition": sum(repetition_rate(r) for r in greedy) / len(greedy),
        "mean_length": sum(map(len, greedy)) / len(greedy),
        "tool_calls": calls,
    }
    if reference is not None:
        torch.manual_seed(0)
        sampled = sampled_ids_without_stop(model, tokenizer, ids, config.heldout_max_new_tokens)
        gaps = [
            policy - sft
            for policy, sft in zip(sequence_logprobs(model, ids, sampled), sequence_logprobs(reference, ids, sampled))
        ]
        results["kl"] = sum(gaps) / len(gaps)
    return results


def evaluate_trained(
    policy_path: str, sft_path: str, tokenizer: PreTrainedTokenizerBase, prompts: Dataset, config: HeldoutConfig
) -> dict:
    """The trained policy saved in `policy_path`, measured against the SFT model it started from (by the main process,
    the figures given to every process)."""

    def compute():
        policy = AutoModelForCausalLM.from_pretrained(policy_path).to(device())
        reference = AutoModelForCausalLM.from_pretrained(sft_path).to(device())
        return evaluate_policy(policy, tokenizer, prompts, config, reference)

    return on_main_process(compute)


T = TypeVar("T")


def on_main_process(compute: Callable[[], T]) -> T:
    """`compute()` run by the main process alone and its result given to every process: the evaluation loads its own
    copies of the models, so the other processes would only repeat it (and race to write its files)."""
    if not process_state().is_main_process:
        return broadcast_object_list([None])[0]
    with loading_alone():  # under ZeRO-3 a model loaded by one process would wait for the others
        return broadcast_object_list([compute()])[0]


def evaluate_sft(
    sft_path: str, tokenizer: PreTrainedTokenizerBase, prompts: Dataset, config: HeldoutConfig, output_dir: str
) -> dict:
    """The SFT model's figures, computed once per output directory (a resumed run keeps the first ones)."""
    path = os.path.join(output_dir, "eval_before.json")

    def compute():
        if os.path.exists(path):
            return read_json(path)
        before = evaluate_policy(
            AutoModelForCausalLM.from_pretrained(sft_path).to(device()), tokenizer, prompts, config
        )
        write_json(path, before)
        return before

    return on_main_process(compute)


def write_results(output_dir: str, stage: str, results: dict) -> None:
    """Add the held-out changes (accuracy with its paired bootstrap interval, reward-model score in standard
    deviations), print the before/after table and write `<stage>_results.json`, last, so that its presence means
    the stage finished (main process)."""
    before, after = results["eval"]["before"], results["eval"]["after"]
    results["eval"] |= {
        "accuracy_change": accuracy_change(before, after),
        "reward_model_change_sd": reward_model_change(before, after),
    }
    if process_state().is_main_process:
        print(table(before, after))
        write_json(os.path.join(output_dir, f"{stage}_results.json"), results)


def push(trainer: Trainer, stage: str) -> None:
    """Upload the output folder as it is now (main process). Trainer.push_to_hub would first save the live model and
    the RL tokenizer over it, undoing the restored checkpoint and the SFT settings."""
    if not process_state().is_main_process:
        return
    trainer.create_model_card(tags=["lmforge", stage])
    HfApi().upload_folder(
        repo_id=trainer.hub_model_id,
        folder_path=trainer.args.output_dir,
        ignore_patterns=["_*", "checkpoint-*", "checkpoint-*/**"],
        token=trainer.args.hub_token,
        revision=trainer.args.hub_revision,
        commit_message=f"lmforge {stage}",
    )


def accuracy_change(before: dict, after: dict) -> dict | None:
    """The held-out accuracy change with its paired bootstrap 95% interval (None without verifiable scores)."""
    if not before.get("scores") or len(before["scores"]) != len(after.get("scores") or []):
        return None
    return paired_bootstrap(before["scores"], after["scores"])


def reward_model_change(before: dict, after: dict) -> float | None:
    """The change in mean reward-model score in units of the standard deviation of the scores before."""
    if not before.get("reward_model_sd") or after.get("reward_model") is None:
        return None
    return (after["reward_model"] - before["reward_model"]) / before["reward_model_sd"]


def table(before: dict, after: dict) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{'held-out':<14}{'before':>10}{'after':>10}"]
    lines += [f"{name:<14}{cell(before[name]):>10}{cell(after[name]):>10}" for name in METRICS]
    change = accuracy_change(before, after)
    if change:
        lines.append(f"accuracy change {describe(change)}")
    if before.get("reward_model_sd") and after.get("reward_model") is not None:
        lines.append(
            f"reward-model score change {reward_model_change(before, after):+.2f} starting standard deviations"
        )
    return "\n".join(lines)
