"""Reward functions for reinforcement learning, chosen by name in a recipe, plus the verifiable prompts they score.

Every function has the shape TRL's GRPOTrainer calls (open-r1's registry): `f(completions, **columns)` where
`completions` are strings or assistant messages and the dataset's columns (`task`, `answer`, `entry`, `prompts`)
come as keyword arguments; it returns one float per completion, or None where that example cannot be verified
(GRPOTrainer then leaves it out of the mean). A recipe names them with options:

    rewards:
      accuracy: {weight: 1.0}
      format: {weight: 0.2}
      length: {max_chars: 400, weight: 0.1}

`get_reward(name, **options)` binds the options with functools.partial, keeping the function's `__name__` for logs.

Verifiable prompts come from lmforge's own arithmetic and letter-counting problems (`arithmetic`, `counting`) and
from reasoning-gym's seeded task generators (any other task name, e.g. `basic_arithmetic`, `gsm_symbolic`):
`verifiable_prompts({name: size}, seed)`. A user's own questions with answers are a task too, given as a source
(lmforge.lib.sources) instead of a size, GSM8K's format included (`answer` ending in `#### N`):

    tasks:         {gsm8k: {path: ../shared/benchmarks/gsm8k/train.jsonl, size: 2000}}
    heldout_tasks: {gsm8k: {path: ../shared/benchmarks/gsm8k/train.jsonl, size: 100, heldout: true}}

A hash of the question puts each row on one side for good (`heldout_fraction` of them held out, 0.05 unless given):
`heldout: true` reads that side, training the other, so no held-out question is ever trained on.
"""

import functools
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from math_verify import parse as parse_math
from math_verify import verify as verify_math
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmforge import LmforgeError
from lmforge.lib import sources
from lmforge.lib.chat_format import scored_ids
from lmforge.lib.conversations import arithmetic, spelling, sums
from lmforge.lib.loading import load_reward_model
from lmforge.lib.models import device
from lmforge.lib.repetition import repetition_rate


# reasoning-gym questions say nothing about how to finish; lmforge's SFT data ends every solution this way.
ANSWER_INSTRUCTION = "\nEnd your reply with `Final answer: ` followed by the answer."
FINAL_ANSWER = re.compile(r"final answer:\s*(.+)", re.IGNORECASE)
THINK_THEN_ANSWER = re.compile(r"^\s*<think>(?=.*\S.*</think>).+?</think>\s*\S", re.DOTALL)
# lmforge's own verifiable tasks: problems with an integer answer, checked by arithmetic.check.
# `sums_N` is level N of the sums ladder on its training side, `sums_N_heldout` on its held-out side.
LMFORGE_TASKS = {
    "arithmetic": arithmetic.problems,
    "counting": spelling.problems,
    **{
        f"sums_{level}{side}": functools.partial(sums.problems, level=level, heldout=bool(side))
        for level in sums.LEVELS
        for side in ("", "_heldout")
    },
}


def verifiable_prompts(tasks: dict, seed: int = 0) -> Dataset:
    """Chat prompts with what is needed to check the answer: columns prompt, task, answer, entry.

    `tasks` maps a task name to a number of problems: `arithmetic` (word problems) and `counting` (letters in a
    word) are lmforge's generators, any other name a reasoning-gym dataset. `entry` is the reasoning-gym entry as
    JSON (its scorer needs it), empty for lmforge's.
    """
    rows = []
    for task, size in tasks.items():
        if isinstance(size, dict):
            rows += own_problems(task, size, seed)
            continue
        if task in LMFORGE_TASKS:
            rows += [
                {"question": p["question"], "task": task, "answer": str(p["answer"]), "entry": ""}
                for p in LMFORGE_TASKS[task](size, seed)
            ]
            continue
        import reasoning_gym  # where a recipe names one of its tasks: its import costs about 1 s of every RL start

        try:
            dataset = reasoning_gym.create_dataset(task, size=size, seed=seed)
        except (KeyError, ValueError) as error:
            raise LmforgeError(
                f"tasks: {task!r} is neither one of {sorted(LMFORGE_TASKS)} nor a reasoning-gym dataset ({error})"
            ) from None
        rows += [
            {
                "question": e["question"] + ANSWER_INSTRUCTION,
                "task": task,
                "answer": str(e["answer"]),
                "entry": json.dumps(e),
            }
            for e in dataset
        ]
    return Dataset.from_list([{"prompt": as_messages(r.pop("question")), **r} for r in rows])


def as_messages(question: str | list) -> list:
    return [{"role": "user", "content": question}] if isinstance(question, str) else question


QUESTION_COLUMNS = ("prompt", "question", "problem")
ANSWER_COLUMNS = ("answer", "solution", "completion")  # a completion's final answer is the reference


def own_problems(task: str, spec: dict, seed: int) -> list[dict]:
    """A user's questions with answers: `size` rows (all when not given) of one side of the held-out split, shuffled
    with `seed`. A GSM8K answer keeps only what follows `####`."""
    spec = dict(spec)
    size, heldout, fraction = spec.pop("size", None), spec.pop("heldout", False), spec.pop("heldout_fraction", 0.05)
    rows = sources.load_rows(spec)["train"]
    where = f"tasks {task!r} ({spec['path']})"
    question = next((c for c in QUESTION_COLUMNS if c in rows.column_names), None)
    answer = next((c for c in ANSWER_COLUMNS if c in rows.column_names), None)
    if question is None or answer is None:
        raise LmforgeError(
            f"{where}: a question column ({', '.join(QUESTION_COLUMNS)}) and an answer column "
            f"({', '.join(ANSWER_COLUMNS)}) expected (columns: {', '.join(rows.column_names)}; `columns:` renames)"
        )
    rows = sources.check_values(rows, (question,), where)
    side = [
        {"question": row[question], "answer": gold_answer(row[answer], where, index)}
        for index, row in enumerate(rows)
        if sources.in_heldout({"question": row[question]}, fraction) == bool(heldout)
    ]
    side = Dataset.from_list(side).shuffle(seed=seed) if side else []
    taken = side.select(range(min(size, len(side)))) if size and side else side
    return [
        {
            "question": row["question"] + ANSWER_INSTRUCTION if isinstance(row["question"], str) else row["question"],
            "task": task,
            "answer": row["answer"],
            "entry": "",
        }
        for row in taken
    ]


def gold_answer(value: object, where: str, index: int) -> str:
    """A row's answer: text or a number, or a conversational completion (its messages' text); GSM8K's worked
    solution gives what follows `####`, a `Final answer:` line what follows it."""
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        value = completion_text(value)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise LmforgeError(f"{where} row {index}: the answer is {type(value).__name__}, text or a number expected")
    text = str(value)
    if "####" in text:
        return sources.worked_answer(text)
    return final_answer_text(text) or text.strip()


def same_answer(predicted: str | None, gold: str) -> float:
    """1.0 when the final answer is the gold one: as numbers where both are (1,000 = 1000.0), else as text."""
    if predicted is None:
        return 0.0
    predicted, gold = (text.replace(",", "").replace("$", "").strip().rstrip(".") for text in (predicted, gold))
    try:
        return float(float(predicted) == float(gold))
    except ValueError:
        return float(predicted.lower() == gold.lower())


def completion_text(completion: str | list[dict]) -> str:
    """The text of a completion, given as a string or as a list of messages (conversational datasets)."""
    if isinstance(completion, str):
        return completion
    return "".join(message["content"] for message in completion)


def final_answer_text(text: str) -> str | None:
    """What follows the last `Final answer:` on its line, or None."""
    found = FINAL_ANSWER.findall(text)
    return found[-1].strip().rstrip(".") if found else None


@functools.cache
def reasoning_gym_scorer(task: str) -> Callable[[str, dict], float]:
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def accuracy(
    completions: list,
    task: list[str] | None = None,
    answer: list[str] | None = None,
    entry: list | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 for a right final answer, 0.0 for a wrong or missing one, None for a row with no known task.

    lmforge's arithmetic and counting are checked by their own scorer; reasoning-gym tasks by the dataset's
    `score_answer` (which may give partial credit: gsm_symbolic gives 0.01 to a wrong number)."""
    rewards = []
    for i, completion in enumerate(completions):
        text, name = completion_text(completion), task[i] if task else None
        if name in LMFORGE_TASKS:
            rewards.append(arithmetic.check(text, {"answer": int(answer[i])}))
        elif name and entry and entry[i]:
            rewards.append(float(reasoning_gym_scorer(name)(final_answer_text(text), json.loads(entry[i]))))
        elif name and answer and answer[i]:  # a user's own question (own_problems)
            rewards.append(same_answer(final_answer_text(text), answer[i]))
        else:
            rewards.append(None)
    return rewards


def math_equivalence(completions: list, answer: list[str] | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when math-verify finds the final answer mathematically equal to `answer` (0.5 = 1/2, \\frac{1}{2}), else
    0.0; None where there is no reference answer or math-verify cannot parse it."""
    rewards = []
    for i, completion in enumerate(completions):
        gold = parse_math(answer[i]) if answer and answer[i] else []
        if not gold:
            rewards.append(None)
            continue
        text = completion_text(completion)
        predicted = parse_math(final_answer_text(text) or text)
        rewards.append(float(bool(predicted) and verify_math(gold, predicted)))
    return rewards


def tool_cost(
    completions: list, tool_calls: list[int] | None = None, cost: float = 0.1, **kwargs: Any
) -> list[float | None]:
    """-`cost` per tool call the completion made (GRPO with `tools` passes each completion's count as `tool_calls`);
    None when completions were sampled without tools. Beside `accuracy`, which rewards right answers however they
    were reached, it makes a call worth making only where it makes the answer right."""
    if tool_calls is None:
        return [None] * len(completions)
    return [-cost * calls for calls in tool_calls]


def think_format(completions: list, **kwargs: Any) -> list[float]:
    """1.0 when the reply reasons inside <think>...</think> (not empty) and then gives an answer after it."""
    return [float(bool(THINK_THEN_ANSWER.match(completion_text(c)))) for c in completions]


def length_penalty(completions: list, max_chars: int = 400, **kwargs: Any) -> list[float]:
    """0 up to `max_chars` characters, then -1 for every further `max_chars`: discourages rambling (and length
    hacking of a reward model) without rewarding empty replies."""
    return [-max(0, len(completion_text(c)) - max_chars) / max_chars for c in completions]


def repetition_penalty(completions: list, ngram: int = 3, **kwargs: Any) -> list[float]:
    """Minus the share of repeated word n-grams: 0 for varied text, down to almost -1 for a loop."""
    return [-repetition_rate(completion_text(c).split(), ngram) for c in completions]


@functools.lru_cache(maxsize=4)
def load_scorer(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved reward model (sequence classification, one label) and its tokenizer, loaded once per path."""
    model = load_reward_model(path).to(device()).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last token that is not padding
    return model, tokenizer


def reward_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list, completion: str | list) -> list[int]:
    """What a reward model scores, in training and wherever it is used: a conversation through its reply's end of
    turn (chat_format.scored_ids, where PPO reads the score); plain text ended with the eos, as TRL's RewardTrainer
    ends a plain-text pair."""
    if isinstance(completion, str) and isinstance(prompt, str):
        text = prompt + completion
        return tokenizer(text if text.endswith(tokenizer.eos_token) else text + tokenizer.eos_token)["input_ids"]
    messages = (prompt if isinstance(prompt, list) else []) + (
        completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    )
    return scored_ids(tokenizer, messages)


def reward_model(
    completions: list, prompts: list | None = None, path: str = "runs/demo/reward", batch_size: int = 16, **kwargs: Any
) -> list[float]:
    """The reward model's score of each prompt + completion, rendered with its chat template when conversational."""
    model, tokenizer = load_scorer(path)
    ids = [reward_ids(tokenizer, p, c) for p, c in zip(prompts or [""] * len(completions), completions)]
    scores = []
    for start in range(0, len(ids), batch_size):
        batch = tokenizer.pad(
            {"input_ids": ids[start : start + batch_size]}, return_tensors="pt", padding_side="right"
        ).to(model.device)
        with torch.inference_mode():
            scores += model(**batch).logits[:, 0].float().tolist()
    return scores


REWARDS = {
    "accuracy": accuracy,
    "math_verify": math_equivalence,
    "format": think_format,
    "length": length_penalty,
    "repetition": repetition_penalty,
    "reward_model": reward_model,
    "tool_cost": tool_cost,
}


def get_reward(name: str, **options: Any) -> Callable[..., list[float | None]]:
    """The registered reward `name` with `options` bound; an unknown name or option is the recipe's error."""
    if name not in REWARDS:
        raise LmforgeError(f"rewards: unknown reward {name!r}; rewards are {sorted(REWARDS)}")
    function = REWARDS[name]
    accepted = [p for p in inspect.signature(function).parameters if p not in ("completions", "kwargs")]
    for key in options:
        if key not in accepted:
            raise LmforgeError(f"rewards.{name}: no option {key!r}; options are {accepted}")
    return functools.update_wrapper(functools.partial(function, **options), function) if options else function


def reward_functions(rewards: dict) -> tuple[list, list, list[float]]:
    """Reward functions, their processing classes and weights from a recipe's `rewards` mapping (name -> options,
    each with an optional weight), in the shape GRPOTrainer takes them.

    `reward_model` becomes the loaded model itself, with its tokenizer as processing class: the trainer then renders
    prompt + completion with that tokenizer's chat template, scores on the trainer's device and logs it by name."""
    if not rewards:
        raise LmforgeError("rewards: name at least one reward function")
    functions, processing_classes, weights = [], [], []
    for name, options in rewards.items():
        options = dict(options or {})
        weights.append(float(options.pop("weight", 1.0)))
        get_reward(name, **options)  # checks the name and options
        scorer = load_scorer(options.get("path", "runs/demo/reward")) if name == "reward_model" else None
        functions.append(scorer[0] if scorer else get_reward(name, **options))
        processing_classes.append(scorer[1] if scorer else None)
    return functions, processing_classes, weights
