"""Peak GPU memory of a recipe's training step, estimated from its model's config: does it fit the GPU it names?

    python bench/memory.py recipes/smollm-135m/grpo.yaml
    python bench/memory.py recipes/smollm2-360m-instruct/grpo.yaml --gpu_gib 24
    python bench/memory.py RECIPE --model_config path/to/folder_or_config.json   # offline, a Hub model's config

The model comes from `--model_config` (a folder or config.json), else from the recipe: a pretrain recipe's shape
(depth, width, heads; the vocabulary from the folder's tokenizer.yaml), a local model folder, a `runs/...` path that
another recipe of the folder writes (followed to that recipe's model), or a Hub id (AutoConfig: online or cached).
Parameters are counted exactly on the meta device; the rest is arithmetic, per GPU under data parallelism (ZeRO and
FSDP shard weights, gradients and optimizer: this is their upper bound):
    weights     trained model (+ the frozen reference of DPO and GRPO with beta > 0, + PPO's value and reward models)
    gradients   trainable parameters, in the weights' dtype
    optimizer   AdamW: two states per trainable parameter, in the weights' dtype
    activations what backward keeps of each decoder layer per token (bf16 autocast on a GPU; see `layer_bytes`), or,
                with activation checkpointing, each layer's input plus one layer recomputed
    logits      the LM head's output over the micro-batch's tokens with the loss's fp32 copy and its gradient (none
                for a reward model, whose head has one output)
    KV cache    generation with transformers (GRPO without vLLM): the whole generation batch at full length
    vLLM        colocated vLLM reserves `vllm_gpu_memory_utilization` of the GPU (weights and KV cache inside it)
and a fixed allowance for the CUDA context and the allocator's slack (`overhead_gib`). tests/test_memory.py checks the
arithmetic against parameter counts and against a training step's measured peak on CPU.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from lmforge import LmforgeError
from lmforge.lib.configs import parse
from lmforge.lib.loading import is_local
from lmforge.pretrain import model_config


GiB = 2**30
# Keys by which a recipe names the model it starts from, in the order a stage reads them.
SOURCE_KEYS = ("model_name_or_path", "sft_model_path", "base_model_name_or_path", "adapter_path")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, None: 4, "auto": 4}
# GRPO prompts are not cut by the recipe: tokens of a chat-templated gsm_symbolic / arithmetic prompt, rounded up.
GRPO_PROMPT_TOKENS = 256


@dataclass
class MemoryConfig:
    recipe: str = ""
    model_config: str | None = None  # a folder or config.json; default: from the recipe
    gpu_gib: float | None = None  # the GPU's memory; with vLLM colocated, its share is reserved from this
    overhead_gib: float = 1.5  # CUDA context, cuBLAS workspaces, allocator fragmentation
    autocast_bf16: bool = True  # the GPU accelerate configs' mixed_precision: bf16 (False: fp32, as on a CPU)
    per_device_train_batch_size: int | None = None  # instead of the recipe's, as on its command line


def load_recipe(path: Path) -> dict:
    if not path.is_file():
        raise LmforgeError(f"recipe {path} not found")
    return yaml.safe_load(path.read_text()) or {}


class Vocabulary:
    """What lmforge.pretrain.model_config reads of a tokenizer, for a tokenizer that is not trained yet."""

    bos_token_id = eos_token_id = pad_token_id = None

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def recipe_model(recipe_path: Path, recipe: dict) -> PretrainedConfig:
    """The config of the model a recipe trains, followed through the recipes of its folder (see the docstring)."""
    if "depth" in recipe:  # pretrain: the shape is in the recipe
        tokenizer_recipe = recipe_path.with_name("tokenizer.yaml")
        vocab = load_recipe(tokenizer_recipe)["vocab_size"] if tokenizer_recipe.is_file() else 49152
        return model_config(
            recipe["depth"],
            Vocabulary(vocab),
            recipe.get("context_length", 1024),
            recipe.get("hidden_size"),
            recipe.get("num_attention_heads"),
            recipe.get("num_key_value_heads"),
            recipe.get("tie_word_embeddings", False),
        )
    source = next((recipe[key] for key in SOURCE_KEYS if recipe.get(key)), None)
    if source is None:
        raise LmforgeError(f"{recipe_path}: names no model ({', '.join(SOURCE_KEYS)})")
    if Path(source, "config.json").is_file():
        return AutoConfig.from_pretrained(source)
    for other in sorted(recipe_path.parent.glob("*.yaml")):  # a model another recipe of the folder writes
        written = load_recipe(other)
        if other != recipe_path and written.get("output_dir") == source:
            return recipe_model(other, written)
    if is_local(source):
        raise LmforgeError(f"{recipe_path}: {source} is neither a model folder nor written by a recipe beside it")
    try:
        return AutoConfig.from_pretrained(source)
    except OSError:
        raise LmforgeError(f"{source}: its config is not reachable offline; pass --model_config FOLDER") from None


def parameter_counts(config: PretrainedConfig) -> dict:
    """Parameters of the model, and those of each linear layer name (for LoRA), counted on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            key = name.rsplit(".", 1)[-1]
            linear[key] = linear.get(key, 0) + module.in_features + module.out_features
    return {"total": model.num_parameters(), "linear_in_plus_out": linear}


def lora_parameters(counts: dict, recipe: dict) -> int:
    """Adapter parameters: r x (in + out) for each targeted linear layer (peft's LoRA A and B)."""
    targets = recipe.get("lora_target_modules") or ["q_proj", "v_proj"]  # peft's default for Llama
    if targets in ("all-linear", ["all-linear"]):
        targets = list(counts["linear_in_plus_out"])
    return recipe.get("lora_r", 16) * sum(counts["linear_in_plus_out"].get(t, 0) for t in targets)


def layer_bytes(config: PretrainedConfig, bf16: bool) -> float:
    """Bytes backward keeps of one Llama-style decoder layer per token. The residual stream and both RMSNorms work in
    the weights' fp32 (input and normalised output: 2 x 4 x hidden each); under bf16 autocast every linear layer
    also keeps its own bf16 copy of its input (q, k, v, gate, up: 5 x hidden). Then, in `element` bytes: q, k, v and
    their rotated copies, the attention output (flash / memory-efficient SDPA keep no scores), and the MLP's gate,
    up, SiLU(gate) and product."""
    hidden, inner = config.hidden_size, config.intermediate_size
    kv = hidden * config.num_key_value_heads // config.num_attention_heads
    element = 2 if bf16 else 4
    norms = 2 * 2 * 4 * hidden
    casts = 5 * hidden * 2 if bf16 else 0
    attention = (hidden + 2 * kv) + (hidden + kv) + hidden
    mlp = 4 * inner
    return norms + casts + element * (attention + mlp)


def step_tokens(recipe: dict, stage: str, recipe_path: Path) -> tuple[int, int]:
    """(sequences, tokens per sequence) of one micro-batch's forward and backward."""
    batch = recipe.get("per_device_train_batch_size", 8)
    if stage == "pretrain":
        pack = recipe_path.with_name("pack.yaml")
        return batch, load_recipe(pack)["seq_len"] if pack.is_file() else recipe.get("context_length", 1024)
    if stage == "grpo":
        return batch, GRPO_PROMPT_TOKENS + recipe.get("max_completion_length", 256)
    if stage == "ppo":
        return batch, GRPO_PROMPT_TOKENS + recipe.get("response_length", 53)
    pairs = 2 if stage in ("dpo", "reward") else 1  # chosen and rejected go through together
    return pairs * batch, recipe.get("max_length", 1024)


def estimate(config: MemoryConfig) -> dict:
    """Each part of the peak, in bytes, and the model it was computed for."""
    recipe_path = Path(config.recipe)
    recipe = load_recipe(recipe_path)
    if config.per_device_train_batch_size:
        recipe["per_device_train_batch_size"] = config.per_device_train_batch_size
    stage = recipe_path.stem.split("_")[0]
    shape = (
        AutoConfig.from_pretrained(config.model_config) if config.model_config else recipe_model(recipe_path, recipe)
    )
    counts = parameter_counts(shape)
    total = counts["total"]
    dtype = recipe.get("dtype") or (recipe.get("model_init_kwargs") or {}).get("dtype")
    width = DTYPE_BYTES[dtype]
    trainable = lora_parameters(counts, recipe) if recipe.get("use_peft") else total
    frozen_models = {"dpo": 1, "grpo": 1 if recipe.get("beta", 0.0) > 0 else 0, "ppo": 2}.get(stage, 0)
    if recipe.get("use_peft"):
        frozen_models = 0  # the reference is the base with the adapter switched off
    trained_models = 2 if stage == "ppo" else 1  # PPO also trains its value model
    sequences, length = step_tokens(recipe, stage, recipe_path)
    tokens = sequences * length
    checkpointing = recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False))
    per_layer = layer_bytes(shape, config.autocast_bf16)
    layers = shape.num_hidden_layers
    if checkpointing:  # each layer's fp32 input is kept; one layer at a time is recomputed in full
        activations = tokens * (layers * 4 * shape.hidden_size + per_layer)
    else:
        activations = tokens * layers * per_layer
    logit_bytes = (2 + 4 + 4) if config.autocast_bf16 else (4 + 4 + 4)  # logits, fp32 log-softmax, its gradient
    parts = {
        "weights": (trained_models + frozen_models) * total * width,
        "gradients": trained_models * trainable * (4 if recipe.get("use_peft") else width),
        "optimizer": trained_models * trainable * 2 * (4 if recipe.get("use_peft") else width),
        "activations": trained_models * activations,
        # A reward model's head has one output: its logits are nothing beside the rest.
        "logits": 0 if stage == "reward" else tokens * shape.vocab_size * logit_bytes,
    }
    if stage == "grpo" and recipe.get("use_vllm"):
        if config.gpu_gib is None:
            raise LmforgeError("--gpu_gib: a recipe with colocated vLLM reserves a share of the GPU; give its size")
        parts["vLLM (colocated)"] = recipe.get("vllm_gpu_memory_utilization", 0.3) * config.gpu_gib * GiB
    elif stage == "grpo":  # transformers' generate: the generation batch's KV cache at full length
        rows = sequences * (recipe.get("steps_per_generation") or recipe.get("gradient_accumulation_steps", 1))
        kv_width = shape.hidden_size * shape.num_key_value_heads // shape.num_attention_heads
        parts["KV cache (generate)"] = 2 * layers * kv_width * (2 if config.autocast_bf16 else 4) * rows * length
    parts["CUDA context, allocator slack"] = config.overhead_gib * GiB
    return {
        "recipe": str(recipe_path),
        "parameters": total,
        "trainable": trainable,
        "micro_batch": f"{sequences} x {length} tokens",
        "activation_checkpointing": bool(checkpointing),
        "parts": parts,
        "total": sum(parts.values()),
    }


def table(result: dict, gpu_gib: float | None) -> str:
    lines = [
        f"{result['recipe']}: {result['parameters'] / 1e6:.1f}M parameters ({result['trainable'] / 1e6:.1f}M "
        f"trained), micro-batch {result['micro_batch']}, activation checkpointing "
        f"{'on' if result['activation_checkpointing'] else 'off'}",
        "",
        "| part | GiB |",
        "|---|---:|",
        *(f"| {name} | {size / GiB:.1f} |" for name, size in result["parts"].items()),
        f"| **peak, estimated** | **{result['total'] / GiB:.1f}** |",
    ]
    if gpu_gib:
        verdict = "fits" if result["total"] <= gpu_gib * GiB else "does NOT fit"
        lines.append(f"\n{verdict} a {gpu_gib:g} GiB GPU")
    return "\n".join(lines)


def main(config: MemoryConfig) -> dict:
    result = estimate(config)
    print(table(result, config.gpu_gib))
    print(json.dumps({name: round(size / GiB, 2) for name, size in result["parts"].items()}))
    return result


def cli(argv: list[str]) -> dict:
    """`RECIPE [--option value ...]`: the recipe first, as the docstring shows it."""
    if argv and not argv[0].startswith("-"):
        argv = ["--recipe", *argv]
    (memory_config,) = parse((MemoryConfig,), argv)
    return main(memory_config)


if __name__ == "__main__":
    cli(sys.argv[1:])
