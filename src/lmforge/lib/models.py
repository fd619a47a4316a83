"""Loading models and tokenizers, local or from the Hub, with one-line errors and one device convention.

Every stage loads through here, so a missing folder, a corrupt weight file or a Hub id that cannot be
reached is reported the same way everywhere: the path and what is wrong, without a library traceback.
Training stages resume through `last_checkpoint`, which passes over checkpoints that cannot be resumed.
"""

import json
import pickle
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TrainerState
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import get_last_checkpoint

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


def peft_config(model_args: Any, model: torch.nn.Module) -> Any:
    """TRL's LoRA config of a recipe (None without use_peft), its target modules checked against the model: PEFT
    stops with NoMatchingPeftModuleError where none matches, and quietly adapts fewer layers where some do."""
    from trl import get_peft_config

    targets = model_args.lora_target_modules  # TRL unwraps a list of one: [all-linear] -> "all-linear"
    targets = [targets] if isinstance(targets, str) and targets != "all-linear" else targets
    if model_args.use_peft and isinstance(targets, list | tuple):
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if is_linear(module) and "." in name}
        )
        missing = [target for target in targets if target not in linear]
        if missing:
            raise LmforgeError(
                f"lora_target_modules: {model.config.model_type} has no {', '.join(missing)}; its linear modules are "
                f"{', '.join(linear)} (or say all-linear)"
            )
    return get_peft_config(model_args)


def is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's projections


def load(loader: type, name_or_path: str, what: str = "model", **kwargs: Any) -> Any:
    """`loader.from_pretrained(name_or_path, **kwargs)`, its failures turned into one line naming the source."""
    check_source(name_or_path, what)
    if Path(name_or_path).is_dir():  # transformers would ask for sentencepiece, or name a missing weights file
        check_holds(Path(name_or_path), TOKENIZER_FILES if "Tokenizer" in loader.__name__ else WEIGHTS, what)
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        where = "folder" if is_local(name_or_path) else "Hub repo"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if where == "folder":  # safetensors' own message does not say which file
            reason = unreadable_file(Path(name_or_path)) or reason
        raise LmforgeError(f"{what} {where} {name_or_path} could not be loaded: {reason}") from None


def load_tokenizer(name_or_path: str, *special_tokens: str, what: str = "tokenizer") -> PreTrainedTokenizerBase:
    """AutoTokenizer through `load`, checked to define each of `special_tokens` ("bos_token", ...): a folder
    without tokenizer_config.json loads without them, and their ids would be None in every encoded row."""
    tokenizer = load(AutoTokenizer, name_or_path, what)
    missing = [name for name in special_tokens if getattr(tokenizer, f"{name}_id") is None]
    if missing:
        raise LmforgeError(
            f"{what} {name_or_path} defines no {' or '.join(missing)} (is its tokenizer_config.json missing?)"
        )
    return tokenizer


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint in `output_dir` that training can resume from, or None.

    Trainer writes trainer_state.json last: a checkpoint without a readable one was cut short by a kill and
    is deleted. One with a weight, optimizer or scheduler file that does not load (a disk fault, a copy cut
    short) is moved aside to `unusable-checkpoint-N`, where the trainer's rotation does not look, and the
    checkpoint before it is used. Under `accelerate launch` the main process does this first, then the others
    find the same checkpoint.
    """
    with process_state().main_process_first():
        return usable_checkpoint(Path(output_dir))


def usable_checkpoint(output_dir: Path) -> str | None:
    while output_dir.is_dir() and (checkpoint := get_last_checkpoint(str(output_dir))):
        checkpoint = Path(checkpoint)
        if not readable_state(checkpoint):
            print(f"warning: deleting {checkpoint}, a checkpoint cut short (no readable trainer_state.json)")
            shutil.rmtree(checkpoint)
        elif problem := unreadable_file(checkpoint):
            aside = checkpoint.with_name(f"unusable-{checkpoint.name}")
            print(f"warning: {problem}; moved {checkpoint} to {aside} and resuming from the checkpoint before")
            shutil.rmtree(aside, ignore_errors=True)
            checkpoint.rename(aside)
        else:
            return str(checkpoint)
    return None


def readable_state(checkpoint: Path) -> bool:
    try:
        TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return False
    return True


def unreadable_file(checkpoint: Path) -> str | None:
    """The first file of a checkpoint that does not load, and why, or None. Only headers and pickled
    structure are read (safetensors' header, torch.load with mmap), so a large checkpoint is checked fast."""
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


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` started (rank, device, main or not), or a lone process.

    On a machine without an accelerator, PartialState must be told to use the CPU, or it sees no GPUs and treats
    each of two launched processes as the only one (both would write). A Trainer with `use_cpu` tells it; stages
    that run without a Trainer (eval) and helpers called before one (resume) ask here first."""
    return PartialState(cpu=not torch.accelerator.is_available())


def device() -> torch.device:
    """The device this process computes on: its GPU under `accelerate launch` or on a GPU machine, else the CPU.
    accelerate's PartialState knows the local rank, so every stage that generates agrees."""
    return process_state().device


@contextmanager
def whole_weights(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, every rank holds all of `model`'s weights, read-only. Under DeepSpeed ZeRO-3 each rank holds
    a slice of each weight (an empty tensor in the module), so a forward outside the engine fails; the slices are
    gathered here. Every rank must enter the block (it is a collective). Elsewhere it does nothing."""
    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


@contextmanager
def loading_alone() -> Iterator[None]:
    """Inside the block, `from_pretrained` loads whole models in this process alone. Under DeepSpeed ZeRO-3 it
    otherwise partitions each weight across the ranks as it loads (deepspeed.zero.Init), a collective that hangs when
    one process loads alone, as the RL stages' evaluation on the main process does. transformers reads ZeRO-3 from a
    module-level reference to the TrainingArguments' DeepSpeed config, which is set aside for the block."""
    from transformers.integrations import deepspeed as hf_deepspeed

    config = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = config


def generates_together(model: torch.nn.Module) -> bool:
    """Whether each `model.generate` step waits for every process: transformers' own test for `synced_gpus` (ZeRO-3
    is on, or FSDP manages the model, on more than one process)."""
    sharded = is_deepspeed_zero3_enabled() or is_fsdp_managed_module(model)
    return sharded and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
