"""Talk to a saved assistant model in the terminal, its replies streamed as they are generated.

    lmforge chat --config recipes/demo/chat.yaml
    lmforge chat --model_name_or_path runs/demo/sft_lora_merged --temperature 0.3
    printf 'Who are you?\\n/exit\\n' | lmforge chat --config recipes/demo/chat.yaml   # input from a pipe

Type a message and press Enter; `/reset` starts a new conversation, `/exit` (or end of input) quits.
The whole conversation is sent each turn, rendered with the model's chat template.
"""

import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

from lmforge.configs import parse


@dataclass
class ChatConfig:
    model_name_or_path: str = field(default="runs/demo/sft", metadata={"help": "A saved assistant model."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message opening each conversation."})
    max_new_tokens: int = 256
    do_sample: bool = field(default=True, metadata={"help": "false: greedy decoding."})
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = field(default=None, metadata={"help": "Fix sampling for reproducible replies."})


CONFIGS = (ChatConfig,)


def new_conversation(config: ChatConfig) -> list[dict]:
    return [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []


def reply(model, tokenizer, messages: list[dict], config: ChatConfig) -> str:
    """Generate the assistant's next turn, printing it as it comes; returns its text."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k}
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                                repetition_penalty=config.repetition_penalty,
                                streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
                                **(sampling if config.do_sample else {}))
    return tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(config: ChatConfig, lines=None) -> list[dict]:
    """Chat over `lines` (default: standard input); returns the last conversation."""
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path).eval()
    if config.seed is not None:
        torch.manual_seed(config.seed)
    lines = iter(sys.stdin if lines is None else lines)
    messages = new_conversation(config)
    print(f"Chatting with {config.model_name_or_path}. /reset starts over, /exit quits.")
    while True:
        print("> ", end="", flush=True)
        line = next(lines, None)
        if line is None or line.strip() == "/exit":
            print()
            return messages
        text = line.strip()
        if text == "/reset":
            messages = new_conversation(config)
            print("(new conversation)")
        elif text:
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": reply(model, tokenizer, messages, config)})


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
