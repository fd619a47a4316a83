"""Loading models and tokenizers, local or from the Hub, with one-line errors.

Every stage loads through here, so a missing folder, a folder that holds no weights or no tokenizer, a corrupt
weight file or a Hub id that cannot be reached is reported the same way everywhere: the path and what is wrong,
without a library traceback.

torch and transformers are imported where a model or tokenizer is loaded, not with the module: the runner and the
stages that train nothing (data, tokenizer, pack) check their recipes' model folders through here, and those imports
cost seconds of every such process's start.
"""

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError, safe_open

from lmforge import LmforgeError


if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
        raise LmforgeError(f"{what} {name_or_path} does not exist (and is not a Hub repo id)")


# What a loadable model folder holds: its weights (whole, sharded or a PEFT adapter) and its tokenizer's files.
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_folder(name_or_path: str, what: str = "model_name_or_path") -> None:
    """One line when an existing local folder cannot be a model: no weights (a config alone, a run that never saved),
    or no tokenizer (transformers would try to convert one and fail asking for sentencepiece or tiktoken)."""
    folder = Path(name_or_path)
    if folder.is_file():
        raise LmforgeError(f"{what}: {folder} is a file, not a model folder")
    if not folder.is_dir():  # a Hub id, or a folder an earlier stage has yet to write: checked when loaded
        return
    check_holds(folder, WEIGHTS, what)
    check_holds(folder, TOKENIZER_FILES, what)


def check_holds(folder: Path, patterns: tuple[str, ...], what: str) -> None:
    """One line when `folder` holds none of `patterns` (WEIGHTS or TOKENIZER_FILES)."""
    if any(any(folder.glob(pattern)) for pattern in patterns):
        return
    if patterns is WEIGHTS:
        raise LmforgeError(f"{what}: {folder} holds no model weights (no .safetensors, .bin or LoRA adapter)")
    raise LmforgeError(f"{what}: {folder} holds no tokenizer (none of {', '.join(patterns)})")


# What a model class must find whole in a checkpoint, and what a checkpoint lacking some of it would do: transformers
# initializes missing weights at random and says so only in a load report (a causal LM's head from a reward model's
# folder, a reward model's score head from a causal LM's).
KINDS = {
    "AutoModelForCausalLM": ("a causal language model", "generate from random weights"),
    "AutoModelForSequenceClassification": (
        "a reward model",
        "score at random; train one with `lmforge reward`, or name a sequence-classification model with one label",
    ),
}


def load(loader: type, name_or_path: str, what: str = "model", **kwargs: Any) -> Any:
    """`loader.from_pretrained(name_or_path, **kwargs)`, its failures turned into one line naming the source, and a
    model of KINDS refused when its checkpoint lacks some of its weights."""
    check_source(name_or_path, what)
    if Path(name_or_path).is_dir():  # transformers would ask for sentencepiece, or name a missing weights file
        check_holds(Path(name_or_path), TOKENIZER_FILES if "Tokenizer" in loader.__name__ else WEIGHTS, what)
    kind = KINDS.get(loader.__name__)
    try:
        loaded = loader.from_pretrained(name_or_path, **kwargs, **({"output_loading_info": True} if kind else {}))
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        where = "folder" if is_local(name_or_path) else "Hub repo"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if where == "folder":  # safetensors' own message does not say which file
            reason = unreadable_file(Path(name_or_path)) or reason
        else:  # `out/sft` reads as a Hub id: say so for the user who meant a folder that is not there
            reason += f" (nor is there a folder {name_or_path} here, in {Path.cwd()})"
        raise LmforgeError(f"{what} {where} {name_or_path} could not be loaded: {reason}") from None
    if not kind:
        return loaded
    model, info = loaded
    if info["missing_keys"]:
        saved = ", ".join(model.config.architectures or []) or model.config.model_type
        raise LmforgeError(
            f"{what} {name_or_path} is not {kind[0]}: its checkpoint ({saved}) lacks "
            f"{', '.join(sorted(info['missing_keys'])[:3])}, which would {kind[1]}"
        )
    return model


def load_tokenizer(name_or_path: str, *special_tokens: str, what: str = "tokenizer") -> "PreTrainedTokenizerBase":
    """AutoTokenizer through `load`, checked to define each of `special_tokens` ("bos_token", ...): a folder
    without tokenizer_config.json loads without them, and their ids would be None in every encoded row."""
    from transformers import AutoTokenizer

    tokenizer = load(AutoTokenizer, name_or_path, what)
    missing = [name for name in special_tokens if getattr(tokenizer, f"{name}_id") is None]
    if missing:
        raise LmforgeError(
            f"{what} {name_or_path} defines no {' or '.join(missing)} (is its tokenizer_config.json missing?)"
        )
    return tokenizer


def load_reward_model(name_or_path: str, what: str = "reward model", **kwargs: Any) -> "PreTrainedModel":
    """A model that scores (sequence classification, one label) through `load`, which refuses one without its score
    head (a causal LM, or a base model, named as the reward model)."""
    from transformers import AutoModelForSequenceClassification

    return load(AutoModelForSequenceClassification, name_or_path, what, num_labels=1, **kwargs)


def unreadable_file(checkpoint: Path) -> str | None:
    """The first file of a checkpoint that does not load, and why, or None. Only headers and pickled
    structure are read (safetensors' header, torch.load with mmap), so a large checkpoint is checked fast."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    for path in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            return f"{path} is unreadable ({error})"
    for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]):  # optimizer, scheduler, RNG
        try:
            with safe_globals():  # what Trainer allows when it loads them (numpy RNG states)
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
            return f"{path} is unreadable ({' '.join(str(error).split())[:200]})"
    return None
