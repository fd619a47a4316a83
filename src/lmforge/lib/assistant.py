"""One assistant turn: the chat settings and the generation shared by `lmforge chat` (terminal) and `lmforge serve`
(page), so that both render a conversation and sample its reply the same way.

With `tools`, the assistant's tool calls run as it writes (lmforge.lib.tools.generation); with `few_shot`, a base model
answers through a few-shot text prompt instead of the chat template (lmforge.lib.fewshot).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from lmforge.lib.fewshot import EXAMPLES, few_shot_ids, reply_text, stopping
from lmforge.lib.models import load_for_generation
from lmforge.lib.sampling import sampling_field, sampling_options
from lmforge.lib.tools.generation import (
    end_of_turn_ids,
    generate_with_tools,
    generation_eos,
    model_generate,
    prompt_tools,
)


@dataclass
class ChatConfig:
    model_name_or_path: str = field(default="runs/demo/sft", metadata={"help": "A saved assistant model."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message opening each conversation."})
    max_new_tokens: int = sampling_field("max_new_tokens", 256)
    do_sample: bool = field(default=True, metadata={"help": "false: greedy decoding."})
    temperature: float = sampling_field("temperature", 0.7)
    top_p: float = sampling_field("top_p", 0.9)
    top_k: int = sampling_field("top_k", 50)
    repetition_penalty: float = sampling_field("repetition_penalty", 1.0)
    seed: int | None = field(default=None, metadata={"help": "Fix sampling for reproducible replies."})
    tools: list[str] = field(default_factory=list, metadata={"help": "Tools the assistant may call: python, search."})
    max_tool_calls: int = field(default=4, metadata={"help": "Tool calls allowed in one assistant turn."})
    few_shot: bool = field(default=False, metadata={"help": "Chat with a base model through a few-shot prompt."})

    def __post_init__(self):
        sampling_options(self, self.do_sample)  # bad settings fail before the model loads


def load_assistant(config: ChatConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model chat and serve talk to, on this process's device, and its tokenizer. A tokenizer without a chat
    template is one line, before the model loads, unless the model is a base model chatted with `few_shot`."""
    why = (
        "(a base model): chat with it through a few-shot prompt (`--few_shot true`), or give it one with `lmforge sft`"
    )
    return load_for_generation(config.model_name_or_path, None if config.few_shot else why)


def new_conversation(config: ChatConfig) -> list[dict]:
    return [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []


class CallbackStreamer(TextStreamer):
    """A TextStreamer that hands each piece of decoded text to `on_text` instead of printing it."""

    def __init__(self, tokenizer, on_text):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.on_text(text)


def generate_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    config: ChatConfig,
    tools: dict | None = None,
    on_text: Callable[[str], None] | None = None,
    on_result: Callable[[str], None] | None = None,
) -> str:
    """The assistant's next turn after `messages`, rendered with the chat template; returns its text.

    `on_text(piece)` receives the reply's text as it is generated (the terminal prints it, `lmforge serve`
    streams it to the page); `on_result(result)` receives each tool call's formatted result.
    """
    if config.few_shot:
        text = few_shot_reply(model, tokenizer, messages, config)
        if on_text:
            on_text(text)
        return text
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=prompt_tools(tokenizer, tools))[
        "input_ids"
    ]
    streamer = CallbackStreamer(tokenizer, on_text) if on_text else None
    generate = model_generate(model, tokenizer, streamer=streamer, **sampling_options(config, config.do_sample))
    stops = end_of_turn_ids(model, tokenizer)
    (turn,) = generate_with_tools(
        generate, tokenizer, [prompt], tools, stops, config.max_new_tokens, config.max_tool_calls, on_result=on_result
    )
    ids = turn.ids[:-1] if turn.ids and turn.ids[-1] in stops else turn.ids
    # With tools the markers stay in the message: the chat template needs them to render the turn again.
    return tokenizer.decode(ids, skip_special_tokens=not tools).strip()


def few_shot_reply(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, messages: list[dict], config: ChatConfig
) -> str:
    """A base model's reply: earlier turns of this conversation join the prompt's examples."""
    turns = [m["content"] for m in messages if m["role"] in ("user", "assistant")]
    prompt = few_shot_ids(tokenizer, turns[-1], EXAMPLES + list(zip(turns[:-1:2], turns[1:-1:2])))
    generate = model_generate(model, tokenizer, **stopping(tokenizer), **sampling_options(config, config.do_sample))
    (ids,) = generate([prompt], generation_eos(model), config.max_new_tokens)
    return reply_text(tokenizer.decode(ids, skip_special_tokens=True))
