"""The conversation convention of a tokenizer, read from its chat template: one home for every stage.

A chat model says how its turns are written in its chat template, so nothing here assumes a format:
the end of an assistant turn is found by rendering a short conversation and reading the token that follows
the assistant's words (<|im_end|> for ChatML, <|eot_id|> for Llama 3, <end_of_turn> for Gemma, </s> for
Mistral), and the same way the generation prompt, the opening of a turn and any default system prompt the
template injects. SFT, rollouts, the RL stages, eval, chat, serve and tokens all ask this module.

Training with `assistant_only_loss` needs `{% generation %}` markers around what the assistant writes. A
template without them is swapped for a marked one that renders every sample conversation byte for byte the
same: TRL's training templates (Llama 3, Gemma, Qwen 2.5, ... via `trl.get_training_chat_template`, or
matched by rendering) or the ones shipped here for the families TRL lacks (ChatML with any default system
prompt, Mistral). A base model with no template is given one by name, file or tokenizer (`set_chat_template`).
"""

import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge import LmforgeError
from lmforge.lib.loading import load_tokenizer


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# lmforge's own tokenizer (lmforge.tokenizer): ChatML turns, and tool calls and results inside the assistant turn.
BOS, EOS, PAD = "<|bos|>", "<|endoftext|>", "<|pad|>"
TOOL_MARKERS = ("<|tool_call|>", "<|/tool_call|>", "<|tool_result|>", "<|/tool_result|>")
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", *TOOL_MARKERS]
SPECIAL_TOKENS = [BOS, EOS, PAD, *CHAT_TOKENS]

# Training templates by name, with the control tokens a tokenizer without them gets (`set_chat_template`).
# TRL ships Llama 3, Gemma and Qwen 2.5; lmforge ships the families TRL lacks (src/lmforge/lib/templates/).
# TRL (and through it transformers) is imported only where a template is checked or swapped: the tool protocol
# imports this module for its token names and must stay light.
TRL_TEMPLATES = Path(find_spec("trl").submodule_search_locations[0]) / "chat_templates"
TEMPLATES = {
    "chatml": (resources.files("lmforge.lib") / "templates" / "chatml.jinja", ["<|im_start|>", "<|im_end|>"]),
    "mistral": (resources.files("lmforge.lib") / "templates" / "mistral.jinja", ["[INST]", "[/INST]"]),
    "llama3": (TRL_TEMPLATES / "llama3_training.jinja", ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "gemma": (TRL_TEMPLATES / "gemma_training.jinja", ["<start_of_turn>", "<end_of_turn>"]),
    "qwen2_5": (TRL_TEMPLATES / "qwen2_5_training.jinja", ["<|im_start|>", "<|im_end|>"]),
}
WAYS_FORWARD = (
    "set `chat_template_path:` in the recipe to a training template ({names}), a .jinja file with "
    "{{% generation %}} markers, or a chat model's tokenizer to clone; "
    "or set `assistant_only_loss: false`"
)
# Sentinels: rendered conversations are cut at them to find what the template writes around the content.
USER, REPLY, SYSTEM, NEXT = "USER_SENTINEL", "REPLY_SENTINEL", "SYSTEM_SENTINEL", "NEXT_SENTINEL"
# Conversations on which a replacement template must render exactly as the model's own.
SAMPLES = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [
        {"role": "user", "content": " 2+2? \n"},
        {"role": "assistant", "content": "4\n\nthat is all. "},
        {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6"},
    ],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ],
]


@dataclass(frozen=True)
class ChatFormat:
    """How a tokenizer's template writes a conversation (strings as rendered, before tokenization)."""

    template: str
    end_of_turn: str  # the token that ends an assistant turn
    turn_start: str  # what opens a turn: a reply that contains it wrote another speaker's turn
    generation_prompt: str  # what add_generation_prompt appends before the assistant writes
    marks_assistant: bool  # has {% generation %} markers (assistant_only_loss works)
    default_system_prompt: str | None  # injected into conversations without a system message
    tool_markers: bool  # the tokenizer has lmforge's tool-call and tool-result tokens


def chat_format(tokenizer: "PreTrainedTokenizerBase", where: str = "tokenizer") -> ChatFormat:
    """The ChatFormat of `tokenizer`; a tokenizer without a chat template is one line naming `where`."""
    from trl.chat_template_utils import has_generation_markers

    if not tokenizer.chat_template:
        raise LmforgeError(
            f"{where}: tokenizer has no chat template; give a base model one with "
            f"`chat_template_path:` ({', '.join(TEMPLATES)}) in the SFT recipe"
        )
    return ChatFormat(
        template=tokenizer.chat_template,
        end_of_turn=end_of_turn(tokenizer, where),
        turn_start=turn_start(tokenizer, where),
        generation_prompt=generation_prompt(tokenizer, where),
        marks_assistant=has_generation_markers(tokenizer.chat_template),
        default_system_prompt=default_system_prompt(tokenizer),
        tool_markers=has_tool_markers(tokenizer),
    )


def render(tokenizer: "PreTrainedTokenizerBase", messages: list[dict], template: str | None = None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template, **kwargs)


def _render(tokenizer, messages, where: str, **kwargs) -> str:
    try:
        return render(tokenizer, messages, **kwargs)
    except Exception as error:  # a template's raise_exception or a Jinja error: its message is the useful part
        raise LmforgeError(
            f"{where}: the chat template cannot render a user/assistant conversation: {error}"
        ) from None


def _first_token(tokenizer, text: str) -> str | None:
    """The control token `text` starts with (whitespace skipped), or None if it starts with ordinary text."""
    ids = tokenizer(text.lstrip(), add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    controls = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids[0] in controls else None


def end_of_turn(tokenizer: "PreTrainedTokenizerBase", where: str = "tokenizer") -> str:
    """The token that ends an assistant turn: the first control token the template writes after the assistant's
    words, else the tokenizer's eos (a template that ends a turn with plain text relies on the eos)."""
    text = _render(
        tokenizer,
        [
            {"role": "user", "content": USER},
            {"role": "assistant", "content": REPLY},
            {"role": "user", "content": NEXT},
        ],
        where,
    )
    token = _first_token(tokenizer, text.split(REPLY, 1)[1]) or tokenizer.eos_token
    if token is None:
        raise LmforgeError(
            f"{where}: the chat template ends an assistant turn with no control token and the "
            "tokenizer has no eos token, so generation could not stop at the end of a turn"
        )
    return token


def turn_start(tokenizer: "PreTrainedTokenizerBase", where: str = "tokenizer") -> str:
    """What opens the next user turn (<|im_start|>, <|start_header_id|>, <start_of_turn>, [INST])."""
    text = _render(
        tokenizer,
        [
            {"role": "user", "content": USER},
            {"role": "assistant", "content": REPLY},
            {"role": "user", "content": NEXT},
        ],
        where,
    )
    between = text.split(REPLY, 1)[1].split(NEXT, 1)[0].replace(end_of_turn(tokenizer, where), "", 1).strip()
    return (_first_token(tokenizer, between) or between.split()[0]) if between else ""


def generation_prompt(tokenizer: "PreTrainedTokenizerBase", where: str = "tokenizer") -> str:
    """The text add_generation_prompt appends after a user turn ("" for templates that have none, like Mistral's)."""
    messages = [{"role": "user", "content": USER}]
    with_prompt = _render(tokenizer, messages, where, add_generation_prompt=True)
    return with_prompt[len(_render(tokenizer, messages, where)) :]


def default_system_prompt(tokenizer: "PreTrainedTokenizerBase", template: str | None = None) -> str | None:
    """The system prompt the template writes into a conversation that has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM..."), or None. Found by rendering with and without an explicit system message."""
    user = [{"role": "user", "content": USER}]
    try:
        without = render(tokenizer, user, template)
        before, after = render(tokenizer, [{"role": "system", "content": SYSTEM}, *user], template).split(SYSTEM, 1)
    except Exception:  # templates that refuse a system role inject none
        return None
    if without.startswith(before) and without.endswith(after) and len(without) > len(before) + len(after):
        return without[len(before) : len(without) - len(after)] or None
    return None


def has_tool_markers(tokenizer: "PreTrainedTokenizerBase") -> bool:
    """lmforge's tool protocol needs its four marker tokens; a Hub model's template has its own (or no) tools."""
    vocab = tokenizer.get_vocab()
    return all(marker in vocab for marker in TOOL_MARKERS)


def end_of_turn_ids(tokenizer: "PreTrainedTokenizerBase", generation_eos: list[int] = ()) -> list[int]:
    """Token ids at which an assistant turn ends: the template's end of turn and the model's generation eos.
    Without a chat template (a base model continuing text) only the generation eos."""
    ids = set(generation_eos)
    if tokenizer.chat_template:
        ids.add(tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)))
    return sorted(ids)


def scored_ids(tokenizer: "PreTrainedTokenizerBase", messages: list[dict], **kwargs) -> list[int]:
    """A conversation's token ids through the end-of-turn token of its last turn: what a reward model reads its
    score at. PPO (TRL) scores a sampled reply at its end-of-turn token, the last one before padding, while a chat
    template may write more after it (ChatML's newline); a reward model trained or evaluated on the whole rendering
    would be read in PPO at a position it never learned."""
    ids = tokenizer.apply_chat_template(messages, return_dict=True, **kwargs)["input_ids"]
    end = tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))
    ends = [i for i, token in enumerate(ids) if token == end]
    return ids[: ends[-1] + 1] if ends else ids


def renders_identically(tokenizer: "PreTrainedTokenizerBase", template: str) -> bool:
    """Whether `template` renders every sample conversation exactly as the tokenizer's own template (raising
    where it raises: Gemma and Mistral refuse system messages)."""
    for messages in SAMPLES:
        outputs = []
        for candidate in (None, template):
            try:
                outputs.append(render(tokenizer, messages, candidate, add_generation_prompt=len(messages) == 1))
            except Exception:
                outputs.append(None)
        if outputs[0] != outputs[1]:
            return False
    return True


def template_text(name: str) -> str:
    return TEMPLATES[name][0].read_text(encoding="utf-8")


def training_template(tokenizer: "PreTrainedTokenizerBase", where: str = "tokenizer") -> tuple[str, str]:
    """A template with {% generation %} markers that renders as the tokenizer's own, and where it came from:
    "model" (already marked), "trl" (TRL's patch for a known template) or "lmforge:NAME" / "trl:NAME" (a
    shipped template that renders identically). Anything else is refused with the ways forward."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    chat_format(tokenizer, where)  # a template that exists and renders
    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template, "model"
    try:
        patched = get_training_chat_template(tokenizer)
        if patched:
            return patched, "trl"
    except ValueError:  # TRL does not know this template; try the shipped ones
        pass
    # ChatML templates differ mostly in their default system prompt: the shipped one takes it as a variable.
    default = default_system_prompt(tokenizer)
    prefix = "{%- set default_system_prompt = " + json.dumps(default) + " -%}\n" if default else ""
    for name in TEMPLATES:
        candidate = (prefix if name == "chatml" else "") + template_text(name)
        if renders_identically(tokenizer, candidate):
            return candidate, f"{'trl' if TEMPLATES[name][0].is_relative_to(TRL_TEMPLATES) else 'lmforge'}:{name}"
    raise LmforgeError(
        f"{where}: the chat template has no {{% generation %}} markers and no known training "
        f"equivalent; " + WAYS_FORWARD.format(names=", ".join(TEMPLATES))
    )


def check_clonable(choice: str) -> None:
    """One line when `choice`, neither a template name nor a .jinja file, is no tokenizer with a chat template:
    TRL's clone_chat_template would end in transformers' traceback (a typo reads as a Hub id) or clone nothing."""
    try:
        source = load_tokenizer(choice, what="tokenizer")
    except LmforgeError as error:
        raise LmforgeError(
            f"chat_template_path: {choice!r} is neither a template name ({', '.join(TEMPLATES)}) nor a .jinja file, "
            f"and as a chat model's tokenizer to clone: {error}"
        ) from None
    if not source.chat_template:
        raise LmforgeError(f"chat_template_path: the tokenizer of {choice} has no chat template to clone")


def set_chat_template(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", choice: str
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Give `tokenizer` the template `choice` names and return (model, tokenizer): a name in TEMPLATES (its
    control tokens added where missing and the embeddings resized), a .jinja file, or a chat model's tokenizer
    (folder or Hub id) cloned with its tokens by trl.clone_chat_template."""
    from trl import clone_chat_template

    if choice in TEMPLATES:
        missing = [token for token in TEMPLATES[choice][1] if token not in tokenizer.get_vocab()]
        tokenizer.add_tokens(missing, special_tokens=True)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        tokenizer.chat_template = template_text(choice)
    elif re.search(r"\.(jinja|j2)$", choice):
        if not Path(choice).is_file():
            raise LmforgeError(f"chat_template_path: {choice} not found")
        tokenizer.chat_template = Path(choice).read_text(encoding="utf-8")
    else:
        check_clonable(choice)
        model, tokenizer, _ = clone_chat_template(model, tokenizer, choice)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = end_of_turn(tokenizer, f"chat_template_path {choice}")
    if tokenizer.pad_token is None:  # batches need one; it is masked out of the loss and attention
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
