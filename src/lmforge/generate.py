"""Sample from any saved causal language model, with transformers' `generate` (KV cache on).

    lmforge generate --config recipes/demo/generate.yaml
    lmforge generate --model runs/demo/pretrain --prompt "To be, or not" --num_samples 3 --temperature 0.8 --seed 1
    lmforge generate --model runs/demo/sft --chat true --prompt "Hi, who are you?"
    lmforge generate --config recipes/demo/generate_few_shot.yaml   # a base model as an assistant, before SFT
    lmforge generate --model runs/demo/pretrain --few_shot_chat true --prompt "Who wrote Romeo and Juliet?"

    lmforge generate --model runs/demo/sft --chat true --tools python --prompt "Count the letter r in \"cherry\"."

A base model continues `prompt` (after <|bos|>, as every training document began); with `chat` the
prompt is a user message put through the model's chat template; with `few_shot_chat` it is a user
question put in lmforge.lib.fewshot's few-shot conversation, and a sample is the reply up to the next
`User:` line (the stream shows the raw continuation). Sampling stops at the end-of-text
tokens in the model's generation config, or after `max_new_tokens`. Samples stream to the terminal
as they are produced when `stream` is on; `output_file` also saves them as JSON. The same `seed`
gives the same samples; sample i uses seed + i.
"""

from dataclasses import dataclass, field

from transformers import TextStreamer, set_seed

from lmforge import LmforgeError
from lmforge.lib.configs import parse
from lmforge.lib.encoding import document_ids
from lmforge.lib.fewshot import few_shot_ids, reply_text, stopping
from lmforge.lib.files import write_json
from lmforge.lib.models import load_for_generation
from lmforge.lib.sampling import sampling_field, sampling_options
from lmforge.lib.tools import load_tools
from lmforge.lib.tools.generation import (
    end_of_turn_ids,
    generate_with_tools,
    generation_eos,
    model_generate,
    prompt_tools,
)


@dataclass
class GenerateConfig:
    model: str = field(default="runs/demo/pretrain", metadata={"help": "Saved model directory or Hub id."})
    prompt: str = field(default="", metadata={"help": "Text to continue (or the user message with chat)."})
    chat: bool = field(default=False, metadata={"help": "Wrap the prompt in the chat template."})
    few_shot_chat: bool = field(
        default=False,
        metadata={
            "help": "Wrap the prompt, a user question, in a few-shot conversation, so that a "
            "base model answers it as an assistant (before SFT)."
        },
    )
    max_new_tokens: int = sampling_field("max_new_tokens", 64)
    temperature: float = sampling_field("temperature", 1.0, "0 means greedy decoding.")
    top_k: int = sampling_field("top_k", 0)
    top_p: float = sampling_field("top_p", 1.0)
    tools: list[str] = field(
        default_factory=list, metadata={"help": "With chat: tools whose calls run when written: python, search."}
    )
    max_tool_calls: int = field(default=4, metadata={"help": "Tool calls allowed in one sample."})
    num_samples: int = 1
    seed: int = 0
    stream: bool = field(default=True, metadata={"help": "Print tokens as they are generated."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the samples here as JSON."})


def prompt_ids(tokenizer, config: GenerateConfig, tools: dict | None = None) -> list[int]:
    if config.few_shot_chat:
        return few_shot_ids(tokenizer, config.prompt)
    if config.chat:
        if not tokenizer.chat_template:
            raise LmforgeError(f"chat: {config.model}'s tokenizer has no chat template")
        messages = [{"role": "user", "content": config.prompt}]
        # sanitize_control_tokens: special-token strings typed in the prompt stay text, they cannot end the turn.
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, sanitize_control_tokens=True, tools=prompt_tools(tokenizer, tools)
        )["input_ids"]
    return document_ids(tokenizer, [config.prompt])[0]


def sample(model, tokenizer, config: GenerateConfig, tools: dict | None = None) -> list[str]:
    """`num_samples` continuations of the prompt (text after the prompt, special tokens dropped); few-shot, the
    replies in them; with `tools`, the assistant's turns with their calls and results (markers kept)."""
    prompt = prompt_ids(tokenizer, config, tools)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if config.stream else None
    generate = model_generate(
        model,
        tokenizer,
        **sampling_options(config, do_sample=config.temperature != 0),
        streamer=streamer,
        **(stopping(tokenizer) if config.few_shot_chat else {}),
    )
    stops = end_of_turn_ids(model, tokenizer) if config.chat else generation_eos(model)
    samples = []
    for i in range(config.num_samples):
        set_seed(config.seed + i)
        (turn,) = generate_with_tools(
            generate,
            tokenizer,
            [prompt],
            tools,
            stops,
            config.max_new_tokens,
            config.max_tool_calls,
            on_result=print if streamer else None,
        )
        text = tokenizer.decode(turn.ids, skip_special_tokens=not tools)
        samples.append(reply_text(text) if config.few_shot_chat else text)
        if streamer:
            print("\n" + "-" * 40)
    return samples


def main(config: GenerateConfig) -> list[str]:
    sampling_options(config, do_sample=config.temperature != 0)  # bad settings fail before the model loads
    if config.tools and not config.chat:
        raise LmforgeError("tools: tool calls are part of the chat protocol; set chat: true as well")
    if config.chat and config.few_shot_chat:
        raise LmforgeError(
            "chat and few_shot_chat: choose one (the chat template is for a fine-tuned assistant, "
            "the few-shot prompt for a base model)"
        )
    model, tokenizer = load_for_generation(config.model)
    samples = sample(model, tokenizer, config, load_tools(config.tools))
    if config.output_file:
        write_json(config.output_file, {"prompt": config.prompt, "settings": vars(config), "samples": samples})
    return samples


CONFIGS = (GenerateConfig,)  # what `--config recipes/*/generate*.yaml` is parsed into


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
