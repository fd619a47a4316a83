"""Writing artifacts so that a killed stage never leaves a half-written file behind."""

import json
import os
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
