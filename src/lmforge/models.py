"""Loading models and tokenizers, local or from the Hub, with one-line errors and one device convention.

Every stage loads through here, so a missing folder, a corrupt weight file or a Hub id that cannot be
reached is reported the same way everywhere: the path and what is wrong, without a library traceback.
"""

from pathlib import Path

from accelerate import PartialState
from huggingface_hub.utils import HFValidationError, validate_repo_id

from lmforge import LmforgeError


def is_local(name_or_path: str) -> bool:
    """True when `name_or_path` names a folder on disk, or cannot be a Hub repo id (so it must have been meant
    as a folder): `runs/demo/sft` and `./model` are paths, `someone/model` is a Hub id unless the folder exists."""
    if Path(name_or_path).exists():
        return True
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return True
    return name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1


def check_source(name_or_path: str, what: str = "model") -> None:
    """Fail with one line when a local `name_or_path` does not exist."""
    if is_local(name_or_path) and not Path(name_or_path).exists():
        raise LmforgeError(f"{what} {name_or_path}: no such folder (and not a Hub repo id)")


def load(loader, name_or_path: str, what: str = "model", **kwargs):
    """`loader.from_pretrained(name_or_path, **kwargs)`, its failures turned into one line naming the source."""
    check_source(name_or_path, what)
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        where = "folder" if is_local(name_or_path) else "Hub repo"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LmforgeError(f"{what} {where} {name_or_path} could not be loaded: {reason}") from None


def device():
    """The device this process computes on: its GPU under `accelerate launch` or on a GPU machine, else the CPU.
    accelerate's PartialState knows the local rank, so every stage that generates agrees."""
    return PartialState().device
