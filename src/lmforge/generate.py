"""Sample from any saved causal language model, with transformers' `generate` (KV cache on).

    lmforge generate --config recipes/demo/generate.yaml
    lmforge generate --model runs/demo/pretrain --prompt "To be, or not" --num_samples 3 --temperature 0.8 --seed 1
    lmforge generate --model runs/demo/sft --chat true --prompt "Hi, who are you?"

A base model continues `prompt` (after <|bos|>, as every training document began); with `chat` the
prompt is a user message put through the model's chat template. Sampling stops at the end-of-text
tokens in the model's generation config, or after `max_new_tokens`. Samples stream to the terminal
as they are produced when `stream` is on; `output_file` also saves them as JSON. The same `seed`
gives the same samples; sample i uses seed + i.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer, set_seed

from lmforge import LmforgeError
from lmforge.configs import parse
from lmforge.files import write_json


@dataclass
class GenerateConfig:
    model: str = field(default="runs/demo/pretrain", metadata={"help": "Saved model directory or Hub id."})
    prompt: str = field(default="", metadata={"help": "Text to continue (or the user message with chat)."})
    chat: bool = field(default=False, metadata={"help": "Wrap the prompt in the chat template."})
    max_new_tokens: int = 64
    temperature: float = field(default=1.0, metadata={"help": "0 means greedy decoding."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Keep the smallest set with this probability mass."})
    num_samples: int = 1
    seed: int = 0
    stream: bool = field(default=True, metadata={"help": "Print tokens as they are generated."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the samples here as JSON."})


def prompt_ids(tokenizer, config: GenerateConfig) -> torch.Tensor:
    if config.chat:
        if not tokenizer.chat_template:
            raise LmforgeError(f"chat: {config.model}'s tokenizer has no chat template")
        messages = [{"role": "user", "content": config.prompt}]
        # sanitize_control_tokens: special-token strings typed in the prompt stay text, they cannot end the turn.
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, sanitize_control_tokens=True)
        return torch.tensor([ids["input_ids"]])
    ids = tokenizer(config.prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return torch.tensor([[tokenizer.bos_token_id, *ids]])


def sample(model, tokenizer, config: GenerateConfig) -> list[str]:
    """`num_samples` continuations of the prompt (text after the prompt, special tokens dropped)."""
    prompt = prompt_ids(tokenizer, config).to(model.device)
    greedy = config.temperature == 0
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if config.stream else None
    samples = []
    for i in range(config.num_samples):
        set_seed(config.seed + i)
        output = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=config.max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else config.temperature,
            top_k=None if greedy else config.top_k,
            top_p=None if greedy else config.top_p,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            streamer=streamer,
        )
        samples.append(tokenizer.decode(output[0, prompt.shape[1]:], skip_special_tokens=True))
        if streamer:
            print("\n" + "-" * 40)
    return samples


def main(config: GenerateConfig) -> list[str]:
    if config.temperature < 0 or not 0 < config.top_p <= 1 or config.top_k < 0 or config.max_new_tokens < 1:
        raise LmforgeError("temperature >= 0, 0 < top_p <= 1, top_k >= 0 and max_new_tokens >= 1 are required")
    if not Path(config.model).exists() and config.model.startswith((".", "/", "runs")):
        raise LmforgeError(f"model: {config.model} does not exist (train it first)")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    device_map = "auto" if torch.cuda.is_available() else None
    model = AutoModelForCausalLM.from_pretrained(config.model, device_map=device_map)
    model.eval()
    samples = sample(model, tokenizer, config)
    if config.output_file:
        write_json(config.output_file, {"prompt": config.prompt, "settings": vars(config), "samples": samples})
    return samples


CONFIGS = (GenerateConfig,)  # what `--config recipes/*/generate*.yaml` is parsed into


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
