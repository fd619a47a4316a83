"""Writing artifacts so that a killed stage never leaves a half-written file behind."""

import json
import os
import shutil
import tempfile
from pathlib import Path


def write_json(path: str | Path, data) -> None:
    """Write `data` as JSON to `path` atomically: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def read_json(path: str | Path):
    with open(path) as f:
        return json.load(f)


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
