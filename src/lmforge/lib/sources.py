"""One loader for the rows a stage reads: a user's dataset, wherever it is and in any of TRL's formats.

Every stage that reads rows reads them here: SFT's conversations, the reward model's and DPO's preference pairs,
GRPO's and PPO's questions, rollouts' prompts, interrogate's and eval's questions, the rollouts label imports.
A source is a string or a mapping:

    preferences: runs/demo/labels/preferences        # a save_to_disk folder (Dataset or DatasetDict)
    preferences: mypairs                             # a folder of JSONL/JSON/CSV/Parquet/Arrow files (train.jsonl, ...)
    preferences: pairs.jsonl                         # a file (.gz too), or a glob such as data/*.parquet
    preferences: trl-lib/ultrafeedback_binarized     # a Hub id
    preferences: {path: org/name, name: CONFIG, split: train, revision: REV, columns: {question: prompt}}

A mapping may also give `heldout_split` (default: the source's test or validation split), `weight` (the fraction of
its rows taken, above 1 repeating them) and any other `datasets.load_dataset` keyword (`{path: json, data_files:
chats.jsonl}` works as it does there). `columns` renames a source's columns to the names the stage reads.

Rows are in one of TRL's dataset formats (FORMATS; huggingface.co/docs/trl/dataset_formats), standard (text) or
conversational (lists of {role, content} messages; ShareGPT's `conversations` of {from, value} are converted, with
its speakers human and gpt as user and assistant), or lmforge's question files (`question`, `answer`: GSM8K's
format) and rollouts (`prompt`, `responses`). A stage names the formats it takes. Where it needs
a held-out split and the source has none, the rows whose hash falls below a fraction are held out: the same rows on
every run and machine, whatever their order; the size is printed. Everything is read by `datasets`
(`load_from_disk`, `load_dataset`); this module adds what a user needs when it goes wrong: one line naming the
source, split, row or column and what was expected, or, with `invalid_rows: drop`, the bad rows dropped and counted.
"""

import csv
import difflib
import glob
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
from datasets import Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk

from lmforge import LmforgeError
from lmforge.lib.configs import from_json


if TYPE_CHECKING:  # types of the hints only
    from transformers import PreTrainedTokenizerBase

# File extension -> the `datasets` builder that reads it.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
# TRL's dataset formats and lmforge's question files, by the columns that make them, the more columns first: a
# source is in the first format whose columns it has (a preference pair is no prompt-only row).
FORMATS = {
    "unpaired preference": ("prompt", "completion", "label"),
    "preference": ("prompt", "chosen", "rejected"),
    "preference (implicit prompt)": ("chosen", "rejected"),
    "prompt-completion": ("prompt", "completion"),
    "question-answer": ("question", "answer"),
    "rollouts": ("prompt", "responses"),  # lmforge's: a prompt and the replies sampled for it, to rank
    "prompt-only": ("prompt",),
    "question": ("question",),
    "conversational": ("messages",),
    "language modeling": ("text",),
}
TEXT_ONLY = ("text", "question", "answer")  # always text; prompt, completion, chosen, rejected may be messages
HELDOUT_SPLITS = ("test", "validation")
OWN_KEYS = ("path", "columns", "split", "heldout_split", "weight")  # the other keys of a mapping go to load_dataset


def spec_of(source: str | dict) -> dict:
    """A source as a mapping. On the command line a mapping comes as JSON (`--preferences '{"path": ...}'`)."""
    if isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as error:
            raise LmforgeError(f"source {source!r} is not JSON ({error})") from None
    spec = {"path": source} if isinstance(source, str) else dict(source or {})
    if not isinstance(spec.get("path"), str) or not spec["path"]:
        raise LmforgeError(f"source {source!r}: give a path (a file, a folder, a glob or a Hub id)")
    return spec


def named_sources(value: str | dict | None, key: str) -> dict | None:
    """A recipe's sources by name (SFT's `datasets`, the prompts of rollouts and of the writing page), each a path or
    a mapping: `{chats: chats.jsonl}` is `{chats: {path: chats.jsonl}}`. On the command line the mapping comes as
    JSON, or one source alone as its path (`--datasets data/chats.jsonl`), named by its last part (chats.jsonl)."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        return {Path(value).name or value: {"path": value}}
    value = from_json(value, key)
    if not value:
        return None
    if not isinstance(value, dict):
        raise LmforgeError(f"{key}: give a mapping of names to sources, not {value!r}")
    named = {}
    for name, spec in value.items():
        if not isinstance(spec, (str, dict)):
            raise LmforgeError(f"{key}.{name}: give a path, or a mapping with `path` or `generator`, not {spec!r}")
        named[name] = {"path": spec} if isinstance(spec, str) else spec
    return named


def load_rows(source: str | dict) -> DatasetDict:
    """Every split of a source (`split` given: that one, as train), its columns renamed by the `columns` mapping."""
    spec = spec_of(source)
    splits = open_splits(spec)
    split = spec.get("split")
    if split is not None:
        if split not in splits:
            raise LmforgeError(f"{spec['path']}: no split {split!r} (splits: {', '.join(splits) or 'none'})")
        splits = DatasetDict({"train": splits[split]})
    return DatasetDict({name: renamed(part, spec) for name, part in splits.items()})


# Reading ------------------------------------------------------------------------------------------------------------


def open_splits(spec: dict) -> DatasetDict:
    """Every split of the source, read by `datasets`; a source without rows is an error."""
    path = spec["path"]
    options = {key: value for key, value in spec.items() if key not in OWN_KEYS}
    try:
        rows = read(path, options)
    except LmforgeError:
        raise
    except Exception as error:  # datasets raises StopIteration on an empty JSON file, ArrowInvalid, ValueError...
        cause = error.__cause__ or error
        if "corresponds to no data" in str(cause):  # datasets' words for a split without rows
            raise LmforgeError(f"{path}: no rows") from None
        reason = " ".join(str(cause).split())[:300] or type(cause).__name__
        if unknown := re.search(r"unexpected keyword argument '(\w+)'", reason):  # a misspelt key of the mapping
            close = difflib.get_close_matches(unknown[1], OWN_KEYS, n=1)
            reason += f"; did you mean {close[0]!r}?" if close else f"; lmforge's own keys are {', '.join(OWN_KEYS)}"
        raise LmforgeError(f"{path}: could not be read ({reason})") from None
    if isinstance(rows, Dataset):
        rows = DatasetDict({"train": rows})
    if not rows or not any(len(part) for part in rows.values()):
        raise LmforgeError(f"{path}: no rows")
    return rows


def read(path: str, options: dict) -> Dataset | DatasetDict:
    if path in set(BUILDERS.values()) | {"text"}:  # load_dataset's own keywords: {path: json, data_files: ...}
        return load(local_data_files(options.get("data_files"), options.get("data_dir")), path=path, **options)
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, n)) for n in ("dataset_dict.json", "state.json")):
            return load_from_disk(path)
        files = [f for f in sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True)) if os.path.isfile(f)]
        readable = [f for f in files if builder_of(f)]
        if not readable:
            raise LmforgeError(f"{path}: an empty folder, or one without {'/'.join(BUILDERS)} files")
        return load(readable, path=path, **csv_as_text(readable) | options)
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
    if files:
        builders = {builder_of(f) for f in files}
        unknown = next((f for f in files if not builder_of(f)), None)
        if unknown:
            raise LmforgeError(
                f"{unknown}: cannot read {suffix_of(unknown) or 'extensionless'} files; give JSONL, "
                "JSON, CSV, Parquet or Arrow"
            )
        if len(builders) > 1:
            raise LmforgeError(f"{path}: files of one kind expected, among {', '.join(BUILDERS)}")
        return load(files, path=builders.pop(), data_files=files, **csv_as_text(files) | options)
    if glob.has_magic(path) or path.startswith((".", "/", "~")) or builder_of(path):
        raise LmforgeError(f"{path} does not exist (no such file or folder)")
    return load_dataset(path, **options)  # a Hub id


def load(files: list[str], **options) -> Dataset | DatasetDict:
    """`load_dataset(**options)` over local `files`, each checked first, and named by line when datasets fails on it
    (it reads some undecodable bytes without a word, and names neither file nor line when it stops)."""
    for file in files:
        problem = file_problem(file, every_line=False)
        if problem:
            raise LmforgeError(problem)
    try:
        return load_dataset(**options)
    except Exception:
        for file in files:
            problem = file_problem(file, every_line=True)
            if problem:
                raise LmforgeError(problem) from None
        raise


def builder_of(file: str) -> str | None:
    return BUILDERS.get(suffix_of(file))


def suffix_of(file: str) -> str:
    """A data file's extension under any compression: data.jsonl.gz -> .jsonl."""
    name = file[: -len(os.path.splitext(file)[1])] if file.endswith(COMPRESSED) else file
    return os.path.splitext(name)[1].lower()


def local_data_files(data_files, data_dir: str | None) -> list[str]:
    """The local files a `data_files` option (a pattern, a list, or split -> either) names; each must match."""
    patterns = [data_files] if isinstance(data_files, str) else data_files or []
    patterns = patterns.values() if isinstance(patterns, dict) else patterns
    files = []
    for pattern in [p for item in patterns for p in ([item] if isinstance(item, str) else item)]:
        if "://" in pattern:  # remote files are their server's to check
            continue
        matches = sorted(glob.glob(os.path.join(data_dir or "", pattern)))
        if not matches:
            raise LmforgeError(f"data_files {pattern!r} matches no file")
        files += matches
    return files


def csv_as_text(files: list[str]) -> dict:
    """load_dataset options reading every column of CSV files as the text it is: pandas would read an answer "1." as
    the number 1.0 and an empty cell as NaN."""
    first = next((f for f in files if builder_of(f) == "csv"), None)
    if first is None:
        return {}
    with fsspec.open(first, "rt", compression="infer", encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    return {"features": Features({name: Value("string") for name in header}), "na_filter": False}


def file_problem(file: str, every_line: bool) -> str | None:
    """What makes a local text data file unreadable: empty, not UTF-8, or (`every_line`) a line that is not JSON."""
    suffix = suffix_of(file)
    if suffix not in (".jsonl", ".json", ".csv", ".txt"):
        return None
    with fsspec.open(file, "rb", compression="infer") as f:
        data = f.read()
    if not data.strip():
        return f"{file} is empty"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return f"{file} line {line}: not UTF-8 ({error.reason})"
    if not every_line or suffix not in (".jsonl", ".json"):
        return None
    if text.lstrip().startswith("["):
        lines = [(1, text)]  # one JSON array, not JSON Lines
    else:  # split on newlines only: str.splitlines would also split at a U+2028 inside a JSON string
        lines = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    for number, line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError as error:
            return f"{file} line {number + error.lineno - 1}: not valid JSON ({error.msg})"
    return None


def renamed(rows: Dataset, spec: dict) -> Dataset:
    """`rows` with the source's `columns` renamed ({theirs: ours}) and ShareGPT's `conversations` as `messages`."""
    columns = spec.get("columns") or {}
    missing = [old for old in columns if old not in rows.column_names]
    if missing:
        raise LmforgeError(
            f"{spec['path']}: `columns` renames {missing}, which it lacks (columns: {', '.join(rows.column_names)})"
        )
    # A column already named as a target gives way to the one the mapping names.
    rows = rows.remove_columns([new for new in columns.values() if new in rows.column_names and new not in columns])
    rows = rows.rename_columns(columns) if columns else rows
    if "conversations" in rows.column_names and "messages" not in rows.column_names:
        rows = rows.map(from_sharegpt, desc="ShareGPT conversations to messages")
    return rows


# ShareGPT's speakers (Vicuna's, OpenHermes', ...): TRL's converter renames the keys ({from, value} to {role,
# content}) but keeps these names, which no chat template knows.
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


def from_sharegpt(row: dict) -> dict:
    from trl.data_utils import maybe_convert_to_chatml

    row = maybe_convert_to_chatml(row)
    if isinstance(row["messages"], list):  # anything else is reported with its row by the format check
        row["messages"] = [
            {**message, "role": SHAREGPT_ROLES.get(message.get("role"), message.get("role"))}
            if isinstance(message, dict)
            else message
            for message in row["messages"]
        ]
    return row


# Formats and checks -------------------------------------------------------------------------------------------------


def format_of(columns: list[str], accepted: Sequence[str], where: str) -> str:
    """The format of a source with `columns`: the first of FORMATS whose columns it has, one of `accepted`; else one
    line listing the formats taken."""
    found = next((name for name, needed in FORMATS.items() if set(needed) <= set(columns)), None)
    if found in accepted:
        return found
    expected = "; ".join(f"{name}: {', '.join(FORMATS[name])}" for name in accepted)
    what = f"the {found} format" if found else "none of the formats"
    raise LmforgeError(
        f"{where}: columns {', '.join(columns)} are {what}, not one taken here ({expected}); `columns:` renames"
    )


def check_values(
    rows: Dataset,
    columns: Sequence[str],
    where: str,
    invalid_rows: str = "stop",
    check: Callable[[dict], str | None] | None = None,
    num_proc: int | None = None,
) -> Dataset:
    """`rows` whose `columns` hold what their format says (text, or a list of {role, content} messages, one style in
    every row; `label` true or false) and that pass `check` (a stage's own: length, say), checked in `num_proc`
    processes. A wrong row stops the stage naming it, or with invalid_rows: drop is dropped and counted."""
    if not len(rows):  # a small held-out split at a small weight: nothing to check (map would give no columns)
        return rows
    found = rows.map(
        problems,
        fn_kwargs={"columns": tuple(columns), "check": check},
        batched=True,
        remove_columns=rows.column_names,
        keep_in_memory=True,  # no cache file beside a user's saved dataset
        num_proc=num_proc if num_proc and num_proc > 1 and len(rows) >= 1000 else None,
        desc=f"Checking {where}",
    )
    problem, style = found["problem"], found["style"]
    first = next((s for p, s in zip(problem, style) if p is None), None)
    bad = []
    for index, (found_problem, found_style) in enumerate(zip(problem, style)):
        if found_problem is None and found_style != first:
            found_problem = f"{STYLES[found_style]} where row {style.index(first)} is {STYLES[first]}: mixed formats"
        if found_problem is not None:
            bad.append((index, found_problem))
    if bad and invalid_rows != "drop":
        index, found_problem = bad[0]
        raise LmforgeError(
            f"{where} row {index}: {found_problem} ({len(bad)} such rows; invalid_rows: drop drops them)"
        )
    if bad:
        print(f"{where}: dropped {len(bad)} invalid rows of {len(rows)} (first: row {bad[0][0]}: {bad[0][1]})")
        dropped = {index for index, _ in bad}
        rows = rows.select([i for i in range(len(rows)) if i not in dropped])
    return rows


STYLES = {"text": "standard (text)", "messages": "conversational (messages)"}


def problems(batch: dict, columns: tuple, check: Callable | None) -> dict:
    """What is wrong with each row of a batch (None: nothing) and its style, "text" or "messages"."""
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    found = [row_problem(row, columns, check) for row in rows]
    return {"problem": [problem for problem, _ in found], "style": [style for _, style in found]}


def row_problem(row: dict, columns: Sequence[str], check: Callable | None) -> tuple[str | None, str | None]:
    """What is wrong with one row's `columns` (or what `check` finds), and the row's style."""
    styles = set()
    for column in columns:
        value = row[column]
        if column == "label":
            if not isinstance(value, bool):
                return f"column 'label' holds {type(value).__name__} {str(value)[:60]!r}: true or false expected", None
        elif column == "responses":
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
                return f"column 'responses' holds {str(value)[:60]!r}: a list of at least 2 texts expected", None
        elif isinstance(value, str) and column != "messages":
            if not value.strip() and column != "completion":
                return f"column {column!r} is empty", None
            styles.add("text")
        elif isinstance(value, list) and column not in TEXT_ONLY:
            problem = messages_problem(value)
            if problem:
                return f"column {column!r}: {problem}", None
            styles.add("messages")
        else:
            expected = "text" if column in TEXT_ONLY else "a list of messages" if column == "messages" else None
            expected = expected or "text or a list of messages"
            return f"column {column!r} holds {type(value).__name__} {str(value)[:60]!r}: {expected} expected", None
    if len(styles) > 1:
        return f"text and messages mixed in columns {', '.join(columns)}", None
    return (check(row) if check else None), (styles.pop() if styles else "text")


def messages_problem(messages: list) -> str | None:
    """What keeps `messages` from being a list of {role, content} messages, or None."""
    if not messages:
        return "an empty list of messages"
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"message {position} is not a mapping with a role"
        if not isinstance(message.get("content"), str):
            return f"message {position} has no text content"
    return None


class LongerThan:
    """A row check: the prompt with any of the `completions` columns (the row's prompt, messages or text alone when
    none are named) longer than `max_length` tokens, counted by `count(prompt, completion)` or by the tokenizer (its
    chat template for messages). An object, so that `num_proc` worker processes receive it whole."""

    def __init__(
        self,
        tokenizer: "PreTrainedTokenizerBase",
        max_length: int,
        completions: Sequence[str] = (),
        count: Callable | None = None,
    ):
        self.tokenizer, self.max_length, self.completions = tokenizer, max_length, completions
        self.count = count or self.tokens

    def __call__(self, row: dict) -> str | None:
        prompt = row.get("prompt", row.get("messages", row.get("text")))
        for column in self.completions or [None]:
            length = self.count(prompt, row[column] if column else None)
            if length > self.max_length:
                what = f"prompt + {column}" if column else "the row"
                return f"{what} is {length} tokens, longer than max_length {self.max_length}"
        return None

    def tokens(self, prompt: str | list | None, completion: str | list | None) -> int:
        if isinstance(prompt, list) or isinstance(completion, list):
            messages = (prompt or []) + (completion or [])
            return len(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        return len(self.tokenizer((prompt or "") + (completion or ""))["input_ids"])


# Checked rows, held out -----------------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A source's checked rows: training and held-out rows, their format and what was done to them."""

    train: Dataset
    heldout: Dataset | None
    format: str
    conversational: bool
    report: dict = field(default_factory=dict)


def load_checked(
    source: str | dict,
    what: str,
    accepted: Sequence[str],
    *,
    heldout_fraction: float | None = None,
    invalid_rows: str = "stop",
    check: Callable[[dict], str | None] | None = None,
    num_proc: int | None = None,
    seed: int = 0,
    splits: DatasetDict | None = None,
) -> Rows:
    """A source's rows in one of the `accepted` formats, `weight` of them taken (before any is checked, so that a
    small share of a large dataset costs little), checked (check_values) and, with `heldout_fraction`, split into
    training and held-out rows: the source's held-out split, else the rows whose hash falls below the fraction.
    `what` names the recipe key in messages; `splits` are the source's rows when they come from elsewhere (a
    generator)."""
    spec = spec_of(source)
    where = f"{what}: {shown(spec)}"
    weight = source_weight(spec.get("weight", 1.0), where)  # before the rows are read
    if splits is None:
        try:
            splits = open_splits(spec)
        except LmforgeError as error:
            raise LmforgeError(f"{what}: {error}") from None
    train_split = spec.get("split") or ("train" if "train" in splits or len(splits) > 1 else next(iter(splits)))
    for key, split in (("split", train_split), ("heldout_split", spec.get("heldout_split"))):
        if split is not None and split not in splits:
            raise LmforgeError(f"{where}: no {key} {split!r} (splits: {', '.join(splits)})")
    train = renamed(splits[train_split], spec)
    name = format_of(train.column_names, accepted, f"{where} split {train_split}")
    columns = FORMATS[name]
    rng = random.Random(seed)
    train = train.select(take(list(range(len(train))), weight, rng))
    if not len(train):
        raise LmforgeError(f"{where} split {train_split}: no rows" + (f" at weight {weight}" if weight < 1 else ""))
    checked = check_values(train, columns, f"{where} split {train_split}", invalid_rows, check, num_proc)
    report = {"path": shown(spec), "format": name, "rows": len(splits[train_split]), "weight": weight}
    report["invalid_dropped"] = len(train) - len(checked)
    heldout = None
    heldout_split = spec.get("heldout_split") or next(
        (s for s in HELDOUT_SPLITS if s in splits and s != train_split), None
    )
    if heldout_fraction is not None and heldout_split is not None:
        held = renamed(splits[heldout_split], spec)
        format_of(held.column_names, [name], f"{where} split {heldout_split}")
        held = held.select(take(list(range(len(held))), min(weight, 1.0), rng))
        heldout = check_values(held, columns, f"{where} split {heldout_split}", invalid_rows, check, num_proc)
        report["heldout_from"] = f"split {heldout_split}"
        report["invalid_dropped"] += len(held) - len(heldout)
    elif heldout_fraction:
        sides = [in_heldout({c: row[c] for c in columns}, heldout_fraction) for row in checked]
        heldout = checked.select([i for i, side in enumerate(sides) if side])
        checked = checked.select([i for i, side in enumerate(sides) if not side])
        print(
            f"{where}: no held-out split; {len(heldout)} of {len(sides)} rows held out by a hash of each row "
            f"({heldout_fraction:.0%})"
        )
        report["heldout_from"] = f"hash {heldout_fraction}"
    if not len(checked):
        raise LmforgeError(f"{where} split {train_split}: no training rows left")
    conversational = any(isinstance(checked[0][c], list) for c in columns if c not in ("responses", "label"))
    report |= {"taken": len(checked), "heldout": len(heldout) if heldout is not None else 0}
    return Rows(checked, heldout, name, conversational, report)


def shown(spec: dict) -> str:
    """How a source is named in messages: its path, or the files of `{path: json, data_files: ...}`."""
    files = spec.get("data_files")
    if spec["path"] in set(BUILDERS.values()) | {"text"} and files:
        return files if isinstance(files, str) else json.dumps(files)
    return spec["path"]


def in_heldout(row: dict, fraction: float) -> bool:
    """Whether a row is held out: a hash of its content, the same on every machine and for copies of it."""
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def source_weight(value: object, where: str) -> float:
    try:
        weight = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        weight = -1.0
    if not weight >= 0:  # NaN too
        raise LmforgeError(f"{where}: weight {value!r} is not a number of at least 0")
    return weight


def take(items: list, weight: float, rng: random.Random) -> list:
    """round(len(items) * weight) items: whole copies for the integer part, a random sample for the rest."""
    whole, fraction = divmod(weight, 1)
    return items * int(whole) + sorted(rng.sample(items, round(len(items) * fraction)))


# Preference pairs ---------------------------------------------------------------------------------------------------

PAIR_FORMATS = ("preference", "preference (implicit prompt)")


@dataclass
class PreferenceSource:
    """The recipe keys of the stages that train on preference pairs (reward, dpo)."""

    preferences: dict | str | None = field(
        default="runs/demo/labels/preferences",
        metadata={
            "help": "Preference pairs (lmforge.lib.sources): a folder saved by `lmforge label --export`, files "
            "(JSONL, CSV, Parquet...), a folder of them or a Hub id; {path, split, columns, ...} as a mapping."
        },
    )
    heldout_fraction: float = field(
        default=0.05,
        metadata={"help": "Pairs held out for the stage's held-out figures when the source has no test split."},
    )
    invalid_rows: str = field(
        default="stop",
        metadata={
            "help": "A pair of the wrong shape or longer than max_length: stop (naming its row) or drop (counted)."
        },
    )


def load_pairs(
    source: str | dict,
    heldout_fraction: float | None = None,
    invalid_rows: str = "stop",
    check: Callable[[dict], str | None] | None = None,
    num_proc: int | None = None,
) -> tuple[DatasetDict, dict]:
    """Preference pairs (TRL's preference format, explicit or implicit prompt, standard or conversational): `prompt`,
    `chosen` and `rejected`, and whatever other columns the source has (lmforge label's rank_gap), as train and, with
    `heldout_fraction` or a test split in the source, test; and the source's report (rows, format, held out, invalid
    rows dropped)."""
    pairs = load_checked(
        source,
        "preferences",
        PAIR_FORMATS,
        heldout_fraction=heldout_fraction if heldout_fraction is not None else 0.0,
        invalid_rows=invalid_rows,
        check=check,
        num_proc=num_proc,
    )
    splits = {"train": pairs.train, "test": pairs.heldout}
    if pairs.format == "preference (implicit prompt)":
        from trl.data_utils import maybe_extract_prompt  # Hub pairs often keep the prompt inside chosen/rejected

        splits = {split: part.map(maybe_extract_prompt) for split, part in splits.items() if part is not None}
    return DatasetDict({split: part for split, part in splits.items() if part is not None and len(part)}), pairs.report


# Questions ----------------------------------------------------------------------------------------------------------

QUESTION_FORMATS = ("question-answer", "prompt-completion", "conversational")


def worked_answer(text: str) -> str:
    """GSM8K's answer is a worked solution, then `#### N`: the answer is N. Any other text is its own answer."""
    return text.rsplit("####", 1)[1].strip() if isinstance(text, str) and "####" in text else text


def load_questions(source: str | dict, what: str, answers: bool = True) -> list[dict]:
    """Questions ({question, answer}; without `answers`, {question}) for the stages that ask them (interrogate,
    eval): lmforge's question files and GSM8K (`question`, `answer`; GSM8K's answer is what follows `####`),
    prompt-completion rows (the prompt's last user turn, the completion) or conversations (the first user turn, the
    last assistant turn); without answers, prompts or questions alone too."""
    formats = QUESTION_FORMATS if answers else (*QUESTION_FORMATS, "question", "prompt-only")
    rows = load_checked(source, what, formats).train
    questions = []
    for row in rows:
        if "question" in row:
            question, answer = row["question"], row.get("answer")
        elif "messages" in row:
            question = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
            answer = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"), None)
        else:
            prompt, completion = row["prompt"], row.get("completion")
            question = prompt if isinstance(prompt, str) else [m for m in prompt if m["role"] == "user"][-1]["content"]
            answer = completion if not isinstance(completion, list) else completion[-1]["content"]
        questions.append(
            {"question": question, "answer": worked_answer(answer)} if answers else {"question": question}
        )
    return questions
