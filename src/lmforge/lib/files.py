"""Writing artifacts so that a killed stage never leaves a half-written file behind.

One convention for every artifact: write beside the target under a hidden name (`.NAME.tmp`, or `.NAME.<random>.tmp`
for single files), then rename over it. `write_text`/`write_json` for small files, `staged_file` for a file another
library writes (sqlite), `staged_dir` for a directory (`save_pretrained`, `save_to_disk`)."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, not `.NAME.tmp`: two writers of one file never share a half-written temporary.
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    ) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically (see `write_text`)."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Write one JSON object a line to `path` atomically (see `write_text`)."""
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def staging_path(path: str | Path) -> Path:
    """Where `path` is built before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging path beside `path` for another library to write a file to; when the block ends
    without an error, the file replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(path)
    staging.unlink(missing_ok=True)
    yield staging
    os.replace(staging, path)


@contextmanager
def staged_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh staging directory path beside `path` (not created: `save_pretrained` and `save_to_disk` create
    it); when the block ends without an error, it replaces `path` (`replace_dir`)."""
    path = Path(path)
    staging = staging_path(path)
    shutil.rmtree(staging, ignore_errors=True)
    yield staging
    replace_dir(staging, path)


def replace_dir(staging: str | Path, path: str | Path) -> None:
    """Move the finished directory `staging` to `path`, replacing what is there, so that a kill at any moment
    leaves the old directory or the new one: the old one is renamed aside before the new one is renamed in, and
    `recover_dir` (called here and by a stage at start-up) puts it back if the kill fell between the two renames."""
    staging, path = Path(staging), Path(path)
    recover_dir(path)
    aside = _aside(path)
    if path.exists():
        path.rename(aside)
    staging.rename(path)
    shutil.rmtree(aside, ignore_errors=True)


def recover_dir(path: str | Path) -> None:
    """Finish a `replace_dir` that was killed: put the old directory back if nothing took its place, else drop it."""
    path = Path(path)
    aside = _aside(path)
    if aside.exists():
        if path.exists():
            shutil.rmtree(aside)
        else:
            aside.rename(path)


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")
