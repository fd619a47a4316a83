"""Talk to a saved assistant model in the terminal, its replies streamed as they are generated.

    lmforge chat --config recipes/demo/chat.yaml
    lmforge chat --model_name_or_path runs/demo/sft_lora_merged --temperature 0.3
    printf 'Who are you?\\n/exit\\n' | lmforge chat --config recipes/demo/chat.yaml   # input from a pipe

Type a message and press Enter; `/reset` starts a new conversation, `/exit` (or end of input) quits.
The whole conversation is sent each turn, rendered with the model's chat template.

With `tools: [python, search]` the assistant's tool calls run (lmforge.tools: the call's result is
printed and appended to its turn, at most `max_tool_calls` a turn). With `few_shot: true` a base model
chats through a few-shot text prompt instead of the chat template (lmforge.fewshot).
"""

import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

from lmforge.configs import parse
from lmforge.fewshot import EXAMPLES, few_shot_ids, reply_text, stopping
from lmforge.models import load
from lmforge.tools import load_tools
from lmforge.tools.generation import end_of_turn_ids, generate_with_tools, generation_eos, model_generate


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
    tools: list[str] = field(default_factory=list, metadata={"help": "Tools the assistant may call: python, search."})
    max_tool_calls: int = field(default=4, metadata={"help": "Tool calls allowed in one assistant turn."})
    few_shot: bool = field(default=False, metadata={"help": "Chat with a base model through a few-shot prompt."})


CONFIGS = (ChatConfig,)


def new_conversation(config: ChatConfig) -> list[dict]:
    return [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []


def sampling(config: ChatConfig) -> dict:
    options = {"do_sample": config.do_sample, "repetition_penalty": config.repetition_penalty}
    if config.do_sample:
        options.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    return options


class CallbackStreamer(TextStreamer):
    """A TextStreamer that hands each piece of decoded text to `on_text` instead of printing it."""

    def __init__(self, tokenizer, on_text):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.on_text(text)


def generate_reply(model, tokenizer, messages: list[dict], config: ChatConfig, tools: dict | None = None,
                   on_text=None, on_result=None) -> str:
    """The assistant's next turn after `messages`, rendered with the chat template; returns its text.

    `on_text(piece)` receives the reply's text as it is generated (the terminal prints it, `lmforge serve`
    streams it to the page); `on_result(result)` receives each tool call's formatted result.
    """
    if config.few_shot:
        text = few_shot_reply(model, tokenizer, messages, config)
        if on_text:
            on_text(text)
        return text
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    streamer = CallbackStreamer(tokenizer, on_text) if on_text else None
    generate = model_generate(model, tokenizer, streamer=streamer, **sampling(config))
    stops = end_of_turn_ids(model, tokenizer)
    (turn,) = generate_with_tools(generate, tokenizer, [prompt], tools, stops, config.max_new_tokens,
                                  config.max_tool_calls, on_result=on_result)
    ids = turn.ids[:-1] if turn.ids and turn.ids[-1] in stops else turn.ids
    # With tools the markers stay in the message: the chat template needs them to render the turn again.
    return tokenizer.decode(ids, skip_special_tokens=not tools).strip()


def reply(model, tokenizer, messages: list[dict], config: ChatConfig, tools: dict | None = None) -> str:
    """Generate the assistant's next turn, printing it as it comes; returns its text."""
    text = generate_reply(model, tokenizer, messages, config, tools,
                          on_text=lambda piece: print(piece, end="", flush=True),
                          on_result=lambda result: print(f"\n[result] {result}", flush=True))
    print(flush=True)
    return text


def few_shot_reply(model, tokenizer, messages: list[dict], config: ChatConfig) -> str:
    """A base model's reply: earlier turns of this conversation join the prompt's examples."""
    turns = [m["content"] for m in messages if m["role"] in ("user", "assistant")]
    prompt = few_shot_ids(tokenizer, turns[-1], EXAMPLES + list(zip(turns[:-1:2], turns[1:-1:2])))
    generate = model_generate(model, tokenizer, **stopping(tokenizer), **sampling(config))
    (ids,) = generate([prompt], generation_eos(model), config.max_new_tokens)
    return reply_text(tokenizer.decode(ids, skip_special_tokens=True))


def main(config: ChatConfig, lines=None) -> list[dict]:
    """Chat over `lines` (default: standard input); returns the last conversation."""
    tokenizer = load(AutoTokenizer, config.model_name_or_path)
    model = load(AutoModelForCausalLM, config.model_name_or_path).eval()
    tools = load_tools(config.tools)
    if config.seed is not None:
        torch.manual_seed(config.seed)
    # Piped input is not echoed by a terminal: print it, so a transcript shows both sides.
    echo = lines is not None or not sys.stdin.isatty()
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
        if echo:
            print(text)
        if text == "/reset":
            messages = new_conversation(config)
            print("(new conversation)")
        elif text:
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": reply(model, tokenizer, messages, config, tools)})


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
