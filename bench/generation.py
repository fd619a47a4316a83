"""Generation throughput: transformers' continuous batching (`model.generate_batch`, what GRPOConfig's
`use_transformers_continuous_batching` uses) against plain batched `model.generate` (what lmforge's tool loop,
rollouts, the watch and the evaluation call), the same model, prompts and greedy settings, side by side.

    python bench/generation.py                                   # a small Llama on this machine (CPU: ~1 min)
    python bench/generation.py --depth 12 --hidden_size 768 --prompts 256 --max_new_tokens 256   # on a GPU

The model is random (speed does not depend on the weights) and never stops early: both sides generate exactly
`max_new_tokens` for every prompt, so tokens/s compare work for work. Prompts have lengths spread over
`min_prompt`-`max_prompt` tokens, as chat prompts do; plain `generate` pads each batch of `batch_size` on the left.
Prints tokens/s of each, their ratio and the share of prompts whose greedy continuations agree.
"""

import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from lmforge.lib.configs import parse


@dataclass
class GenerationBenchConfig:
    depth: int = 4
    hidden_size: int = 256
    vocab_size: int = 8192
    prompts: int = 32
    min_prompt: int = 16
    max_prompt: int = 96
    max_new_tokens: int = 32
    batch_size: int = 16  # plain generate's batch (tool_accuracy's default)
    repeats: int = 2  # each side runs this many times after one warm-up run; the best time counts


def build(config: GenerationBenchConfig) -> tuple[LlamaForCausalLM, list[list[int]]]:
    torch.manual_seed(0)
    shape = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.hidden_size * 8 // 3 // 32 * 32,
        num_hidden_layers=config.depth,
        num_attention_heads=max(config.hidden_size // 64, 1),
        num_key_value_heads=max(config.hidden_size // 128, 1),
        max_position_embeddings=config.max_prompt + config.max_new_tokens,
        eos_token_id=None,  # never stops early: both sides do the same work
        pad_token_id=0,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = LlamaForCausalLM(shape).to(device).eval()
    if device == "cuda":
        model = model.to(torch.bfloat16)
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(config.min_prompt, config.max_prompt + 1, (config.prompts,), generator=generator)
    prompts = [torch.randint(1, config.vocab_size, (int(n),), generator=generator).tolist() for n in lengths]
    return model, prompts


def greedy(config: GenerationBenchConfig) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=config.max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0, use_cache=True
    )


def plain(model, prompts: list[list[int]], config: GenerationBenchConfig) -> list[list[int]]:
    """Left-padded batches through model.generate, as lmforge.lib.tools.generation.model_generate does."""
    outputs = []
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=model.device)
        with torch.no_grad():
            generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=greedy(config))
        outputs += generated[:, width:].tolist()
    return outputs


def continuous(model, prompts: list[list[int]], config: GenerationBenchConfig) -> list[list[int]]:
    """transformers' continuous batching: requests scheduled into one running batch, paged KV cache."""
    with torch.no_grad():
        results = model.generate_batch(prompts, generation_config=greedy(config), progress_bar=False)
    return [
        result.generated_tokens for result in sorted(results.values(), key=lambda r: int(r.request_id.split("_")[-1]))
    ]


def timed(function, model, prompts, config) -> tuple[float, list[list[int]]]:
    function(model, prompts, config)  # warm-up: kernels, allocator, the manager's first set-up
    best, outputs = float("inf"), None
    for _ in range(config.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = function(model, prompts, config)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, outputs


def main(config: GenerationBenchConfig) -> dict:
    model, prompts = build(config)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    results = {}
    outputs = {}
    for name, function in (("generate", plain), ("continuous batching", continuous)):
        seconds, outputs[name] = timed(function, model, prompts, config)
        tokens = sum(map(len, outputs[name]))
        results[name] = tokens / seconds
        print(f"{name:>20}: {tokens} tokens in {seconds:.2f} s, {results[name]:,.0f} tokens/s")
    ratio = results["continuous batching"] / results["generate"]
    same = sum(a == b for a, b in zip(outputs["generate"], outputs["continuous batching"])) / len(prompts)
    print(
        f"device {device}; {model.num_parameters() / 1e6:.1f}M parameters, {config.prompts} prompts of "
        f"{config.min_prompt}-{config.max_prompt} tokens, {config.max_new_tokens} new tokens each, generate in "
        f"batches of {config.batch_size}: continuous / generate = {ratio:.2f}; identical greedy outputs {same:.0%}"
    )
    return {"tokens_per_s": results, "ratio": ratio, "identical": same}


if __name__ == "__main__":
    (generation_config,) = parse((GenerationBenchConfig,), None)
    main(generation_config)
