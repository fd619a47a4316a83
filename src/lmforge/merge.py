"""Fold a LoRA adapter into its base model, giving an ordinary model that needs no peft to load.

    lmforge merge --config recipes/demo/merge.yaml
    lmforge merge --adapter_path runs/demo/sft_lora --output_dir runs/demo/sft_lora_merged

The base is the one recorded in the adapter (adapter_config.json) unless `base_model_name_or_path` names
another. The tokenizer and generation config (which stops at the model's end of turn) come from the adapter
folder, where `lmforge sft` saved them. The merged weights keep the adapter's training dtype (the dtype of its
saved weights: a float32 adapter is not rounded into a bfloat16 base) unless `dtype` says otherwise, and the
folder gets a model card naming the base (by its Hub id when it has one) and the adapter. The merged model is
written under a temporary name and renamed when
complete, so a killed merge leaves no half-written model; an existing `output_dir` is left alone.
"""

import os
from dataclasses import dataclass, field

import torch
from peft import PeftConfig, PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lmforge import LmforgeError
from lmforge.lib.cards import merged_card
from lmforge.lib.configs import parse
from lmforge.lib.files import staged_dir


@dataclass
class MergeConfig:
    adapter_path: str = field(default="runs/demo/sft_lora", metadata={"help": "Folder of a saved LoRA adapter."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model to merge into (default: the one the adapter records)."}
    )
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype of the merged model: float32, bfloat16, float16 (default: the adapter's training dtype)."
        },
    )
    output_dir: str = field(default="runs/demo/sft_lora_merged", metadata={"help": "Where the merged model goes."})
    push_to_hub: bool = field(default=False, metadata={"help": "Also upload the merged model to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository for push_to_hub."})


CONFIGS = (MergeConfig,)


def adapter_dtype(adapter_path: str) -> torch.dtype:
    """The dtype the adapter was trained and saved in (that of its first LoRA weight)."""
    path = os.path.join(adapter_path, "adapter_model.safetensors")
    if not os.path.isfile(path):
        raise LmforgeError(f"{adapter_path}: no adapter_model.safetensors; give the merged model's `dtype`")
    with safe_open(path, framework="pt") as weights:
        return weights.get_tensor(next(iter(weights.keys()))).dtype


def main(config: MergeConfig) -> None:
    if os.path.isdir(config.output_dir):
        print(f"{config.output_dir} exists: merge already done")
        return
    if not os.path.isfile(os.path.join(config.adapter_path, "adapter_config.json")):
        raise LmforgeError(f"{config.adapter_path}: no adapter_config.json, not a LoRA adapter folder")
    recorded = PeftConfig.from_pretrained(config.adapter_path).base_model_name_or_path
    base_path = config.base_model_name_or_path or recorded
    if config.dtype not in (None, "float32", "bfloat16", "float16"):
        raise LmforgeError(f"dtype: {config.dtype!r} is not one of float32, bfloat16, float16")
    dtype = getattr(torch, config.dtype) if config.dtype else adapter_dtype(config.adapter_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(config.adapter_path)
    # SFT may have given the base a chat template with new control tokens (lmforge.lib.chat_format.set_chat_template).
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, config.adapter_path).merge_and_unload()
    if os.path.isfile(os.path.join(config.adapter_path, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(config.adapter_path)

    card = merged_card(base_path, config.adapter_path, str(dtype).removeprefix("torch."))
    with staged_dir(config.output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        card.save(str(staging / "README.md"))
    print(
        f"merged {config.adapter_path} into {base_path} ({card.data.base_model or 'local'}) as {dtype} "
        f"-> {config.output_dir}"
    )
    if config.push_to_hub:
        repo = config.hub_model_id or os.path.basename(os.path.normpath(config.output_dir))
        model.push_to_hub(repo)
        tokenizer.push_to_hub(repo)
        card.push_to_hub(repo)


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
