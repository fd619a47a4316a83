"""One loader for the rows a stage reads: a user's dataset, wherever it is and in any of TRL's formats.

A source is a string or a mapping:

    preferences: runs/demo/labels/preferences        # a save_to_disk folder (Dataset or DatasetDict)
    preferences: mypairs                             # a folder of JSONL/JSON/CSV/Parquet/Arrow files (train.jsonl, ...)
    preferences: pairs.jsonl                         # a file, or a glob such as data/*.parquet
    preferences: trl-lib/ultrafeedback_binarized     # a Hub id
    preferences: {path: org/name, name: CONFIG, split: train, revision: REV, columns: {question: prompt}}

`columns` renames a source's columns to the names the stage reads. Everything is read by `datasets`
(`load_from_disk`, `load_dataset`); this module adds what a user needs when it goes wrong: one line that names the
source, split, row or column and what was expected.
"""

import glob
import hashlib
import json
import os

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

from lmforge import LmforgeError


# File extension -> the `datasets` builder that reads it.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
# TRL's dataset formats, by the columns that make them (each standard, with strings, or conversational, with lists of
# messages). The preference formats come first: their columns include the others'.
FORMATS = {
    "preference": ("prompt", "chosen", "rejected"),
    "preference (implicit prompt)": ("chosen", "rejected"),
    "unpaired preference": ("prompt", "completion", "label"),
    "prompt-completion": ("prompt", "completion"),
    "conversational": ("messages",),
    "prompt-only": ("prompt",),
    "language modeling": ("text",),
}


def spec_of(source: str | dict) -> dict:
    """A source as a mapping. On the command line a mapping comes as JSON (`--preferences '{"path": ...}'`)."""
    if isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as error:
            raise LmforgeError(f"source {source!r} is not JSON ({error})") from None
    spec = {"path": source} if isinstance(source, str) else dict(source)
    if not isinstance(spec.get("path"), str) or not spec["path"]:
        raise LmforgeError(f"source {source!r}: give a path (a file, a folder, a glob or a Hub id)")
    return spec


def load_rows(source: str | dict) -> DatasetDict:
    """Every split of a source, its columns renamed by the source's `columns` mapping."""
    spec = spec_of(source)
    path, columns, split = spec.pop("path"), spec.pop("columns", None) or {}, spec.pop("split", None)
    try:
        rows = read(path, spec)
    except LmforgeError:
        raise
    except (FileNotFoundError, ConnectionError, DatasetGenerationError, ValueError) as error:
        cause = error.__cause__ or error
        raise LmforgeError(f"{path}: could not be read ({' '.join(str(cause).split())[:300]})") from None
    if isinstance(rows, Dataset):
        rows = DatasetDict({"train": rows})
    if split is not None:
        if split not in rows:
            raise LmforgeError(f"{path}: no split {split!r} (splits: {', '.join(rows) or 'none'})")
        rows = DatasetDict({"train": rows[split]})
    if not rows or not any(len(part) for part in rows.values()):
        raise LmforgeError(f"{path}: no rows")
    missing = [old for old in columns if old not in rows[next(iter(rows))].column_names]
    if missing:
        raise LmforgeError(f"{path}: `columns` renames {missing}, which it lacks (columns: {column_list(rows)})")
    return rows.rename_columns(columns) if columns else rows


def read(path: str, options: dict) -> Dataset | DatasetDict:
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, n)) for n in ("dataset_dict.json", "state.json")):
            return load_from_disk(path)
        files = [f for f in sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True)) if os.path.isfile(f)]
        readable = [f for f in files if builder_of(f)]
        if not readable:
            raise LmforgeError(f"{path}: an empty folder, or one without {'/'.join(BUILDERS)} files")
        for file in readable:
            check_utf8(file)
        return load_dataset(path, **options)
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
    if files:
        builders = {builder_of(f) for f in files}
        if None in builders or len(builders) > 1:
            raise LmforgeError(f"{path}: files of one kind expected, among {', '.join(BUILDERS)}")
        for file in files:
            check_utf8(file)
        return load_dataset(builders.pop(), data_files=files, **options)
    if glob.has_magic(path) or path.startswith((".", "/", "~")) or os.path.splitext(path)[1] in BUILDERS:
        raise LmforgeError(f"{path} does not exist (no such file or folder)")
    return load_dataset(path, **options)  # a Hub id


def builder_of(file: str) -> str | None:
    name = file[: -len(".gz")] if file.endswith(".gz") else file
    return BUILDERS.get(os.path.splitext(name)[1])


def check_utf8(file: str) -> None:
    """Text files are UTF-8: `datasets` reads undecodable bytes without a word, or fails naming neither file nor line."""
    if builder_of(file) not in ("json", "csv"):
        return
    import fsspec

    with fsspec.open(file, "rb", compression="infer") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LmforgeError(f"{file} line {line}: not UTF-8 ({error.reason})") from None


def column_list(rows: DatasetDict) -> str:
    return ", ".join(rows[next(iter(rows))].column_names)


def format_of(columns: list[str], accepted: tuple[str, ...], where: str) -> str:
    """The first of the `accepted` TRL formats whose columns the dataset has; else one line listing them."""
    for name in accepted:
        if all(column in columns for column in FORMATS[name]):
            return name
    expected = "; ".join(f"{name}: {', '.join(FORMATS[name])}" for name in accepted)
    raise LmforgeError(f"{where}: columns {', '.join(columns)} are none of the formats taken here ({expected})")


def check_values(rows: Dataset, columns: tuple[str, ...], where: str, invalid_rows: str = "stop") -> Dataset:
    """Each value of `columns` is text or a list of messages ({role, content}); a wrong one stops at its row, or with
    invalid_rows: drop is dropped and counted."""

    def problem(row: dict) -> str | None:
        for column in columns:
            value = row[column]
            if isinstance(value, str):
                continue
            if isinstance(value, list) and value and all(is_message(m) for m in value):
                continue
            return f"column {column!r} holds {type(value).__name__} {str(value)[:60]!r}: text or a list of messages"
        return None

    bad = [(index, found) for index, row in enumerate(rows) if (found := problem(row))]
    if bad and invalid_rows != "drop":
        index, found = bad[0]
        raise LmforgeError(f"{where} row {index}: {found} ({len(bad)} such rows; invalid_rows: drop drops them)")
    if bad:
        print(f"{where}: dropped {len(bad)} invalid rows of {len(rows)}")
        dropped = {index for index, _ in bad}
        rows = rows.select([i for i in range(len(rows)) if i not in dropped])
    return rows


def is_message(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("role"), str) and isinstance(value.get("content"), str)


def held_out(rows: DatasetDict, fraction: float, where: str) -> DatasetDict:
    """A `test` split, when the source has none: the rows whose hash falls under `fraction`, the same ones on every
    run and machine whatever the row order (its size is printed)."""
    if "test" in rows:
        return rows
    train = rows["train"]
    sides = [in_heldout(row, fraction) for row in train]
    test = [i for i, side in enumerate(sides) if side]
    if not test or len(test) == len(train):
        raise LmforgeError(f"{where}: {len(train)} rows are too few to hold {fraction:.0%} out; add a test split")
    print(f"{where}: no test split; {len(test)} of {len(train)} rows held out by a hash of the row ({fraction:.0%})")
    return DatasetDict({"train": train.select([i for i, s in enumerate(sides) if not s]), "test": train.select(test)})


def in_heldout(row: dict, fraction: float) -> bool:
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


PAIR_FORMATS = ("preference", "preference (implicit prompt)")


def load_pairs(source: str | dict, heldout_fraction: float | None = None, invalid_rows: str = "stop") -> DatasetDict:
    """Preference pairs (TRL's preference format, explicit or implicit prompt, standard or conversational): `prompt`,
    `chosen` and `rejected`, and whatever other columns the source has (lmforge label's rank_gap). With `heldout_fraction`, a
    source without a `test` split gets one (held_out)."""
    source = spec_of(source)
    rows = load_rows(source)
    where = f"preferences {source['path']}"
    checked = {}
    for split, part in rows.items():
        found = format_of(part.column_names, PAIR_FORMATS, f"{where} split {split}")
        if found == "preference (implicit prompt)":
            from trl.data_utils import maybe_extract_prompt  # Hub pairs often keep the prompt inside chosen/rejected

            part = part.map(maybe_extract_prompt)
        checked[split] = check_values(part, FORMATS["preference"], f"{where} split {split}", invalid_rows)
    pairs = DatasetDict({split: part for split, part in checked.items() if len(part)})
    if "train" not in pairs:
        raise LmforgeError(f"{where}: no train split (splits: {', '.join(rows)})")
    return held_out(pairs, heldout_fraction, where) if heldout_fraction else pairs
