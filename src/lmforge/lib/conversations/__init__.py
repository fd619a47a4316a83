"""Conversations for supervised fine-tuning: load, generate, validate and mix `messages` datasets.

A recipe names its sources in `datasets`, a mapping from a name (used in error messages) to a source:

    datasets:
      identity: {generator: identity, size: 200, name: Forge, maker: the lmforge project}
      chit_chat: {path: my_chats.jsonl, weight: 0.5}
      ultrachat: {path: HuggingFaceH4/ultrachat_200k, split: train_sft, heldout_split: test_sft, weight: 0.01}

A `generator` source calls one of GENERATORS with the other keys as options; any other source is read by
lmforge.lib.sources (a Hub id, files, globs, a folder, a save_to_disk folder, `load_dataset` keywords such as
`{path: json, data_files: ...}`), in TRL's conversational format (`messages`) or prompt-completion format
(standard text becomes a user and an assistant turn; conversational prompt and completion are joined). `weight` is
the fraction of the source's rows taken (above 1 repeats rows), as in alignment-handbook's dataset mixer, and it is
applied first: only the rows taken are checked and rendered, so 2% of a large dataset costs 2% of its rows.
"""

import inspect
import random
from typing import TYPE_CHECKING

from datasets import Dataset, DatasetDict

from lmforge import LmforgeError
from lmforge.lib import sources as loader
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
SFT_FORMATS = ("conversational", "prompt-completion")  # what SFT trains on, as conversations
PROMPT_FORMATS = (*SFT_FORMATS, "prompt-only")  # what the stages that sample replies read prompts from
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
    heldout_fraction: float | None = None,
    num_proc: int | None = None,
) -> tuple[Dataset, Dataset | None, dict]:
    """Every source's rows taken by weight, checked (roles, order, empty content, length) in `num_proc` processes,
    and mixed into one shuffled `messages` dataset; with `heldout_fraction`, each source's held-out split (or that
    fraction of its rows, by a hash of each) mixed into a second one.

    Returns the training and held-out conversations and a report: rows taken, held out and dropped as invalid, by
    source.
    """
    if not sources:
        raise LmforgeError("datasets: no conversation sources given")
    check = ConversationCheck(tokenizer, max_length, system_prompt)
    train, heldout, report = [], [], {}
    for name, spec in sources.items():
        rows = load_source_rows(name, dict(spec), seed, SFT_FORMATS, heldout_fraction, on_invalid, check, num_proc)
        train += [check.conversation(row) for row in rows.train]
        heldout += [check.conversation(row) for row in rows.heldout or []]
        report[name] = {
            "rows": rows.report["rows"],
            "invalid_dropped": rows.report["invalid_dropped"],
            "weight": rows.report["weight"],
            "taken": rows.report["taken"],
            "heldout": rows.report["heldout"],
            "format": rows.format,
        }
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(heldout)
    return (
        Dataset.from_dict({"messages": train}),
        Dataset.from_dict({"messages": heldout}) if heldout else None,
        report,
    )


class ConversationCheck:
    """A row's conversation (`messages`, or its prompt and completion) with the recipe's system prompt, and what is
    wrong with it: roles and their order, empty content, length. An object, so that `num_proc` worker processes
    receive it whole."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", max_length: int | None, system_prompt: str | None):
        self.tokenizer, self.max_length, self.system_prompt = tokenizer, max_length, system_prompt

    def conversation(self, row: dict) -> list:
        return with_system_prompt(normalise(as_conversation(row)), self.system_prompt)

    def __call__(self, row: dict) -> str | None:
        messages = self.conversation(row)
        return check_conversation(messages) or check_length(messages, self.tokenizer, self.max_length)


def as_conversation(row: dict) -> list:
    """The conversation of a row: its `messages`, or its prompt followed by its completion (a standard prompt as a
    user turn, a standard completion as the assistant's)."""
    if "messages" in row:
        return row["messages"]
    prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
    completion = row.get("completion")
    if completion is None:
        return prompt
    return prompt + (completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}])


def load_source(name: str, spec: dict, seed: int, formats: tuple = PROMPT_FORMATS, key: str = "datasets") -> list:
    """The conversations (lists of messages) of one source, from a generator or lib.sources, unchecked beyond their
    format: a prompt-only row is its prompt alone. `key` is the recipe's, for messages."""
    rows = load_source_rows(name, dict(spec), seed, formats, key=key)
    return [normalise(as_conversation(row)) for row in rows.train]


def load_source_rows(
    name: str,
    spec: dict,
    seed: int,
    formats: tuple,
    heldout_fraction: float | None = None,
    on_invalid: str = "stop",
    check=None,
    num_proc: int | None = None,
    key: str = "datasets",
) -> loader.Rows:
    """One source's rows (lib.sources.load_checked), a generator's included."""
    what, generated = f"{key}.{name}", None
    if "generator" in spec:
        options = {option: value for option, value in spec.items() if option not in ("generator", "weight")}
        messages = generate(what, spec["generator"], options, seed)
        generated = DatasetDict({"train": Dataset.from_dict({"messages": messages})})
        spec = {"path": f"generator {spec['generator']}", "weight": spec.get("weight", 1.0)}
    elif "path" not in spec:
        raise LmforgeError(f"{what}: give `generator` or `path` (a file, folder, glob or Hub id)")
    return loader.load_checked(
        spec,
        what,
        formats,
        heldout_fraction=heldout_fraction,
        invalid_rows=on_invalid,
        check=check,
        num_proc=num_proc,
        seed=seed,
        splits=generated,
    )


def generate(what: str, name: str, options: dict, seed: int) -> list:
    """The conversations of generator `name`, its options checked."""
    generator = GENERATORS.get(name)
    if generator is None:
        raise LmforgeError(f"{what}: unknown generator {name!r}; generators are {sorted(GENERATORS)}")
    accepted = inspect.signature(generator).parameters
    for option in options:
        if option not in accepted:
            raise LmforgeError(f"{what}: generator has no option {option!r}; options are {list(accepted)}")
    return [normalise(messages) for messages in generator(**{"seed": seed, **options})]


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
