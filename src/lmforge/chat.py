"""Talk to a saved assistant model in the terminal, its replies streamed as they are generated.

    lmforge chat --config recipes/demo/chat.yaml
    lmforge chat --model_name_or_path runs/demo/sft_lora_merged --temperature 0.3
    printf 'Who are you?\\n/exit\\n' | lmforge chat --config recipes/demo/chat.yaml   # input from a pipe

Type a message and press Enter; `/reset` starts a new conversation, `/exit` (or end of input) quits.
The whole conversation is sent each turn, rendered with the model's chat template.

With `tools: [python, search]` the assistant's tool calls run (lmforge.lib.tools; the call's result is
printed and appended to its turn, at most `max_tool_calls` a turn). With `few_shot: true` a base model
chats through a few-shot text prompt instead of the chat template (lmforge.lib.fewshot).
"""

import glob
import os
import sys

import torch

from lmforge.lib.assistant import ChatConfig, generate_reply, load_assistant, new_conversation
from lmforge.lib.configs import parse
from lmforge.lib.files import read_json
from lmforge.lib.tools import load_tools


CONFIGS = (ChatConfig,)


def reply(model, tokenizer, messages: list[dict], config: ChatConfig, tools: dict | None = None) -> str:
    """Generate the assistant's next turn, printing it as it comes; returns its text."""
    text = generate_reply(
        model,
        tokenizer,
        messages,
        config,
        tools,
        on_text=lambda piece: print(piece, end="", flush=True),
        on_result=lambda result: print(f"\n[result] {result}", flush=True),
    )
    print(flush=True)
    return text


def watch_flag(folder: str) -> str | None:
    """Why the RL watch (lmforge.lib.watch) flagged the model saved in `folder`, or None: a run it stopped without a
    healthy checkpoint to fall back on left a degenerate model, which is not worth talking to."""
    for path in glob.glob(os.path.join(folder, "*_results.json")):
        results = read_json(path)
        watch = results.get("watch") or {}
        if watch.get("stopped") and results.get("final_model") == "last step":
            alarms = "; ".join(str(alarm) for alarm in watch.get("alarms", [])[-1:])
            return f"the watch stopped its training run and no healthy checkpoint was kept ({alarms})"
    return None


def main(config: ChatConfig, lines=None) -> list[dict]:
    """Chat over `lines` (default: standard input); returns the last conversation. A model the RL watch flagged is
    not run: its replies would be the degenerate text the watch caught."""
    flag = watch_flag(config.model_name_or_path)
    if flag:
        print(f"Not chatting with {config.model_name_or_path}: {flag}.")
        return []
    model, tokenizer = load_assistant(config)
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
