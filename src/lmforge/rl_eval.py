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

import json
import os
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lmforge.chat_format import end_of_turn
from lmforge.files import write_json
from lmforge.rewards import accuracy, repetition_rate, reward_model, verifiable_prompts
from lmforge.tools import load_tools
from lmforge.tools.generation import GREEDY, end_of_turn_ids, generate_with_tools, model_generate
from lmforge.watch import reply_ids

METRICS = ("reward_model", "accuracy", "kl", "repetition", "mean_length", "tool_calls")


@dataclass
class EvalConfig:
    heldout_tasks: dict | str | None = field(
        default=None, metadata={"help": "Held-out verifiable prompts, task -> count (default {arithmetic: 32})."})
    heldout_seed: int = field(default=1000, metadata={"help": "Seed of the held-out problems."})
    heldout_max_new_tokens: int = field(default=96, metadata={"help": "Length of the evaluated replies."})
    heldout_reward_model: str | None = field(
        default=None, metadata={"help": "Reward model scoring the held-out replies (None: no reward-model score)."})
    heldout_tools: list[str] = field(
        default_factory=list, metadata={"help": "Tools run while the held-out greedy replies are generated "
                                                "(lmforge.tools): accuracy then counts answers reached with them."})

    def __post_init__(self):
        self.heldout_tasks = json.loads(self.heldout_tasks) if isinstance(self.heldout_tasks, str) else (
            self.heldout_tasks or {"arithmetic": 32})


def chat_tokenizer(path: str):
    """The policy's tokenizer with the model's own end of turn as eos (<|im_end|>, <|eot_id|>, <end_of_turn>...,
    from lmforge.chat_format): TRL's RL trainers stop sampling and mask the reply at `tokenizer.eos_token`, and a
    chat reply ends at the end of its turn, not at the pretraining end of text."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.eos_token = end_of_turn(tokenizer, f"{path} (RL starts from a chat model)")
    return tokenizer


def restore_sft_settings(sft_path: str, output_dir: str) -> None:
    """Save the SFT model's tokenizer and generation config with the trained policy: the trainers align both to the
    end-of-turn-as-eos tokenizer of `chat_tokenizer`, which would drop the end of text as a stop and as the eos."""
    AutoTokenizer.from_pretrained(sft_path).save_pretrained(output_dir)
    GenerationConfig.from_pretrained(sft_path).save_pretrained(output_dir)


def heldout_prompts(config: EvalConfig):
    return verifiable_prompts(config.heldout_tasks, config.heldout_seed)


def without_heldout(train, heldout):
    """Training prompts minus any that are also held out (small task spaces repeat questions across seeds)."""
    held = {p[-1]["content"] for p in heldout["prompt"]}
    return train.filter(lambda row: row["prompt"][-1]["content"] not in held)


def sequence_logprob(model, prompt: list[int], reply: list[int]) -> float:
    ids = torch.tensor([prompt + reply], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, ids[0, len(prompt):, None]).sum().item()


def greedy_replies(model, tokenizer, ids: list[list[int]], config: EvalConfig) -> tuple[list[list[int]], float | None]:
    """Greedy replies to the prompt `ids` without their end-of-turn token, with `heldout_tools` run when given (the
    model's tokens and the results), and the mean number of tool calls (None without tools)."""
    stops = end_of_turn_ids(model, tokenizer)
    turns = generate_with_tools(model_generate(model, tokenizer, **GREEDY), tokenizer, ids,
                                load_tools(config.heldout_tools), stops, config.heldout_max_new_tokens)
    replies = [turn.ids[:-1] if turn.ids and turn.ids[-1] in stops else turn.ids for turn in turns]
    return replies, sum(turn.calls for turn in turns) / len(turns) if config.heldout_tools else None


def evaluate_policy(model, tokenizer, prompts, config: EvalConfig, reference=None) -> dict:
    """The METRICS of `model` on `prompts` (verifiable_prompts rows); KL is measured against `reference`."""
    model.eval()
    ids = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"]
           for p in prompts["prompt"]]
    greedy, calls = greedy_replies(model, tokenizer, ids, config)
    texts = tokenizer.batch_decode(greedy, skip_special_tokens=True)
    scores = [s for s in accuracy(texts, prompts["task"], prompts["answer"], prompts["entry"]) if s is not None]
    results = {
        "reward_model": (sum(reward_model(texts, prompts["prompt"], config.heldout_reward_model)) / len(texts)
                         if config.heldout_reward_model else None),
        "accuracy": sum(scores) / len(scores) if scores else None,
        "kl": 0.0,
        "repetition": sum(repetition_rate(r) for r in greedy) / len(greedy),
        "mean_length": sum(map(len, greedy)) / len(greedy),
        "tool_calls": calls,
    }
    if reference is not None:
        torch.manual_seed(0)
        sampled = reply_ids(model, tokenizer, ids, config.heldout_max_new_tokens)
        gaps = [sequence_logprob(model, p, r) - sequence_logprob(reference, p, r) for p, r in zip(ids, sampled)]
        results["kl"] = sum(gaps) / len(gaps)
    return results


def evaluate_trained(policy_path: str, sft_path: str, tokenizer, prompts, config: EvalConfig) -> dict:
    """The trained policy saved in `policy_path`, measured against the SFT model it started from."""
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    return evaluate_policy(policy, tokenizer, prompts, config, AutoModelForCausalLM.from_pretrained(sft_path))


def evaluate_sft(sft_path: str, tokenizer, prompts, config: EvalConfig, output_dir: str) -> dict:
    """The SFT model's figures, computed once per output directory (a resumed run keeps the first ones)."""
    path = os.path.join(output_dir, "eval_before.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    before = evaluate_policy(AutoModelForCausalLM.from_pretrained(sft_path), tokenizer, prompts, config)
    write_json(path, before)
    return before


def finish(stage: str, trainer, watch, sft_path: str, tokenizer, prompts, config: EvalConfig, before: dict,
           results: dict) -> dict:
    """What every RL stage does after training: save the policy, fall back to the last healthy checkpoint if
    the watch stopped the run, put back the SFT tokenizer and generation settings, push, measure the policy
    against the SFT model, and write `<stage>_results.json` with the stage's own `results`."""
    output_dir = trainer.args.output_dir
    trainer.save_model(output_dir)
    restored = watch.restore_last_healthy(output_dir)
    restore_sft_settings(sft_path, output_dir)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(tags=["lmforge", stage])
    after = evaluate_trained(output_dir, sft_path, tokenizer, prompts, config)
    print(table(before, after))
    results = {**results, "eval": {"before": before, "after": after}, "watch": watch.report(),
               "final_model": restored or "last step"}
    if trainer.is_world_process_zero():
        write_json(os.path.join(output_dir, f"{stage}_results.json"), results)
    return results


def logged(history: list[dict], key: str, steps: int = 3) -> tuple[float | None, float | None]:
    """Mean of a logged metric over the first and over the last `steps` log entries that have it."""
    values = [entry[key] for entry in history if key in entry]
    if not values:
        return None, None
    return sum(values[:steps]) / len(values[:steps]), sum(values[-steps:]) / len(values[-steps:])


def table(before: dict, after: dict) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.4f}"
    lines = [f"{'held-out':<14}{'before':>10}{'after':>10}"]
    lines += [f"{name:<14}{cell(before[name]):>10}{cell(after[name]):>10}" for name in METRICS]
    return "\n".join(lines)
