"""Conversations for supervised fine-tuning: load, generate, validate and mix `messages` datasets.

A recipe names its sources in `datasets`, a mapping from a name (used in error messages) to a source:

    datasets:
      identity: {generator: identity, size: 200, name: Forge, maker: the lmforge project}
      chit_chat: {path: json, data_files: my_chats.jsonl, weight: 0.5}
      ultrachat: {path: HuggingFaceH4/ultrachat_200k, split: train_sft, weight: 0.01}

A `generator` source calls one of GENERATORS with the other keys as options; any other source is passed
to `datasets.load_dataset` (split `train` unless given). `weight` is the fraction of the source's rows
taken (above 1 repeats rows), as in alignment-handbook's dataset mixer.
"""

import inspect
import json
import random
from typing import TYPE_CHECKING

import fsspec
from datasets import Dataset, load_dataset
from datasets.data_files import resolve_pattern
from datasets.exceptions import DatasetGenerationError

from lmforge import LmforgeError
from lmforge.lib.conversations import (
    arithmetic,
    chatterbot,
    corpus_search,
    identity,
    python_faq,
    spelling,
    sums,
    tool_use,
)


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from transformers import PreTrainedTokenizerBase

ROLES = ("system", "user", "assistant")
TEXT_LOADERS = ("json", "csv", "text")  # load_dataset loaders whose local files are checked line by line
GENERATORS = {
    "identity": identity.conversations,
    "arithmetic": arithmetic.conversations,
    "spelling": spelling.conversations,
    "sums": sums.conversations,
    "chatterbot": chatterbot.conversations,
    "python_faq": python_faq.conversations,
    "python_arithmetic": tool_use.arithmetic_conversations,
    "python_counting": tool_use.counting_conversations,
    "corpus_search": corpus_search.conversations,
}


def load_conversations(
    sources: dict,
    tokenizer: "PreTrainedTokenizerBase",
    max_length: int | None,
    on_invalid: str = "stop",
    system_prompt: str | None = None,
    seed: int = 0,
) -> tuple[Dataset, dict]:
    """Every source loaded, checked and mixed by weight into one shuffled `messages` dataset.

    Returns the dataset and a report: rows taken and rows dropped as invalid, by source.
    """
    if not sources:
        raise LmforgeError("datasets: no conversation sources given")
    rows, report = [], {}
    for name, spec in sources.items():
        spec = dict(spec)
        weight = float(spec.pop("weight", 1.0))
        conversations = load_source(name, spec, seed)
        valid = []
        for index, messages in enumerate(conversations):
            messages = with_system_prompt(normalise(messages), system_prompt)
            problem = check_conversation(messages) or check_length(messages, tokenizer, max_length)
            if problem is None:
                valid.append(messages)
            elif on_invalid == "stop":
                raise LmforgeError(f"dataset {name!r} row {index}: {problem}")
        taken = take(valid, weight, random.Random(seed))
        rows += taken
        report[name] = {
            "rows": len(conversations),
            "invalid_dropped": len(conversations) - len(valid),
            "weight": weight,
            "taken": len(taken),
        }
    random.Random(seed).shuffle(rows)
    return Dataset.from_dict({"messages": rows}), report


def load_source(name: str, spec: dict, seed: int) -> list:
    """The conversations (lists of messages) of one source, from a generator or `load_dataset`."""
    if "generator" in spec:
        generator = GENERATORS.get(spec.pop("generator"))
        if generator is None:
            raise LmforgeError(f"dataset {name!r}: unknown generator; generators are {sorted(GENERATORS)}")
        accepted = inspect.signature(generator).parameters
        for key in spec:
            if key not in accepted:
                raise LmforgeError(f"dataset {name!r}: generator has no option {key!r}; options are {list(accepted)}")
        return generator(**{"seed": seed, **spec})
    if "path" not in spec:
        raise LmforgeError(f"dataset {name!r}: give `generator` or `path` (a Hub name or a loader like json)")
    check_data_files(name, spec)
    try:
        dataset = load_dataset(**{"split": "train", **spec})
    except (FileNotFoundError, ConnectionError, DatasetGenerationError) as error:  # a Hub name that is not there
        cause = error.__cause__ or error
        raise LmforgeError(
            f"dataset {name!r}: {spec['path']} could not be loaded: {' '.join(str(cause).split())}"
        ) from None
    if "messages" not in dataset.column_names:
        raise LmforgeError(f"dataset {name!r}: no 'messages' column (columns: {dataset.column_names})")
    return dataset["messages"]


def check_data_files(name: str, spec: dict) -> None:
    """Local `data_files` of a text loader exist, are UTF-8 and, for `json`, parse: datasets names neither the
    file nor the line of a bad row, and loads undecodable bytes without a word until a row is read."""
    if spec["path"] not in TEXT_LOADERS or not spec.get("data_files"):
        return
    files = spec["data_files"]
    patterns = [files] if isinstance(files, str) else files.values() if isinstance(files, dict) else files
    for pattern in [p for item in patterns for p in ([item] if isinstance(item, str) else item)]:
        try:
            paths = resolve_pattern(pattern, base_path=spec.get("data_dir") or "")
        except FileNotFoundError:
            raise LmforgeError(f"dataset {name!r}: data_files {pattern!r} matches no file") from None
        for path in paths:
            if "://" not in path:  # remote files are the Hub's to check
                check_text_file(name, path, json_rows=spec["path"] == "json")


def check_text_file(name: str, path: str, json_rows: bool) -> None:
    with fsspec.open(path, "rb", compression="infer") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LmforgeError(f"dataset {name!r}: {path} line {line}: not UTF-8 ({error.reason})") from None
    if not json_rows:
        return
    if text.lstrip().startswith("["):  # one JSON array, not JSON Lines
        rows = [(1, text)]
    else:  # split on newlines only: str.splitlines would also split at a U+2028 inside a JSON string
        rows = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    for number, row in rows:
        try:
            json.loads(row)
        except json.JSONDecodeError as error:
            line = number + error.lineno - 1
            raise LmforgeError(f"dataset {name!r}: {path} line {line}: not valid JSON ({error.msg})") from None


def normalise(messages: object) -> object:
    """Messages reduced to role and content: Hub datasets carry extra keys that would not concatenate."""
    if not isinstance(messages, list):
        return messages
    return [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in messages]


def with_system_prompt(messages: object, system_prompt: str | None) -> object:
    if not system_prompt or not isinstance(messages, list) or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}] + messages


def check_conversation(messages: object) -> str | None:
    """What is wrong with a conversation, or None: known roles, an optional system message first, then
    user and assistant turns alternating from a user turn to a final assistant turn, no empty content."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {position} is not a mapping with role and content"
        if message.get("role") not in ROLES:
            return f"message {position} has unknown role {message.get('role')!r}; roles are {list(ROLES)}"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"message {position} ({message['role']}) has empty content"
    offset = 1 if messages[0]["role"] == "system" else 0
    for position in range(offset, len(messages)):
        expected = ("user", "assistant")[(position - offset) % 2]
        if messages[position]["role"] != expected:
            return f"message {position} is {messages[position]['role']!r} where {expected!r} was expected"
    if messages[-1]["role"] != "assistant":
        return "conversation must end with an assistant message"
    return None


def check_length(messages: list[dict], tokenizer: "PreTrainedTokenizerBase", max_length: int | None) -> str | None:
    if max_length is None:
        return None
    length = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    if length > max_length:
        return f"{length} tokens, longer than max_length {max_length}"
    return None


def take(rows: list, weight: float, rng: random.Random) -> list:
    """round(len(rows) * weight) rows: whole copies for the integer part, a random sample for the rest."""
    if weight < 0:
        raise LmforgeError(f"weight must be at least 0, got {weight}")
    whole, fraction = divmod(weight, 1)
    return rows * int(whole) + rng.sample(rows, round(len(rows) * fraction))
