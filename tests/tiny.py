"""Tiny Llama models for the tests: a config sized to run on a CPU in seconds, a random model saved with a
tokenizer trained on the given texts, and a model taught to continue given prompts with given replies."""

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from lmforge.tokenizer import train_tokenizer


def tiny_llama_config(tokenizer, hidden_size=64, layers=2, heads=4, kv_heads=2, max_positions=512, **extra):
    """A small Llama config with the vocabulary and special tokens of `tokenizer`; `extra` overrides any field."""
    return LlamaConfig(
        **{
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": max_positions,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **extra,
        }
    )


def save_tiny_model(path, texts, vocab_size=512, hidden_size=64, layers=2, seed=0, end_of_turn=False, **config):
    """Train a tokenizer on `texts`, build a random LlamaForCausalLM (seeded) and save both to `path`.

    With `end_of_turn`, generation also stops at the chat template's <|im_end|>; `config` goes to
    tiny_llama_config."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    if end_of_turn:
        config["eos_token_id"] = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(tokenizer, hidden_size, layers, **config)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def memorize(tokenizer, examples: list[tuple[list[int], list[int]]], steps=40) -> LlamaForCausalLM:
    """A one-layer model (seeded) trained until it continues each example's prompt ids with its reply ids: a
    planted behaviour that greedy decoding reproduces. The loss covers the replies only."""
    batch = tokenizer.pad({"input_ids": [prompt + reply for prompt, reply in examples]}, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    labels = torch.tensor(
        [[-100] * len(prompt) + reply + [-100] * (width - len(prompt) - len(reply)) for prompt, reply in examples]
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, hidden_size=32, layers=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05
    return model.eval()


def save_liking_reward_model(path, tokenizer, liked: list[int]):
    """A reward model that likes the tokens `liked`, saved at `path`: its one layer attends evenly to every token (zero
    queries) and copies the embeddings through (identity values); embedding coordinate 0 is 0.2 for the liked tokens
    and 0 for the rest, and the score head reads coordinate 0 of the result: the score rises with the share of liked
    tokens in the text."""
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, layers=1, kv_heads=4, num_labels=1))
    layer = model.model.layers[0]
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 0.0
        model.model.embed_tokens.weight[liked, 0] = 0.2
        layer.self_attn.q_proj.weight.zero_()
        layer.self_attn.v_proj.weight.copy_(torch.eye(64))
        layer.self_attn.o_proj.weight.copy_(torch.eye(64))
        layer.mlp.down_proj.weight.zero_()
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def one_step_sft_args(model: Path, output_dir: Path) -> list[str]:
    """`lmforge sft` on the demo recipe for one step from `model`, as a subprocess runs it by hand."""
    argv = ["--config", "recipes/demo/sft.yaml", "--model_name_or_path", str(model), "--output_dir", str(output_dir)]
    argv += ["--max_steps", "1", "--use_cpu", "true", "--report_to", "none", "--eval_strategy", "no"]
    # The tiny tokenizer spends about a token per character: rows longer than max_length would be dropped.
    return argv + ["--max_length", "512"]
