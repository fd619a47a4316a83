"""Models in a stage's process: one device convention, LoRA targets checked, checkpoints to resume from, and the
weights of a sharded model gathered whole.

Training stages resume through `last_checkpoint`, which passes over checkpoints that cannot be resumed. Loading
models and tokenizers, with one-line errors, is `lib.loading`.
"""

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, TrainerState
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.integrations.fsdp import is_fsdp_managed_module
from transformers.trainer_utils import get_last_checkpoint

from lmforge import LmforgeError
from lmforge.lib.loading import load, unreadable_file


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


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` started (rank, device, main or not), or a lone process.

    On a machine without an accelerator, PartialState must be told to use the CPU, or it sees no GPUs and treats
    each of two launched processes as the only one (both would write). A Trainer with `use_cpu` tells it; stages
    that run without a Trainer (eval) and helpers called before one (resume) ask here first."""
    return PartialState(cpu=not torch.accelerator.is_available())


def load_for_generation(
    name_or_path: str, template_for: str | None = None
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """A causal LM on this process's device, in eval mode, and its tokenizer, both through lib.loading.load. With
    `template_for` (what the chat template is needed for: "to ask questions with"), a tokenizer without one is one
    line, before the model loads."""
    tokenizer = load(AutoTokenizer, name_or_path)
    if template_for and not tokenizer.chat_template:
        raise LmforgeError(f"model {name_or_path}: its tokenizer has no chat template {template_for}")
    return load(AutoModelForCausalLM, name_or_path).to(device()).eval(), tokenizer


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
