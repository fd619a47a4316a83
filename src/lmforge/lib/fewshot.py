"""Chat with a base model: a few-shot prompt that reads like a conversation, so the model continues as the assistant.

A base model never saw <|im_start|> (special tokens appear only in chats), but it saw plenty of dialogue
written as plain text. So the prompt is text: a line saying what follows, a few `User:` / `Assistant:`
exchanges, the new question and an open `Assistant:`. The reply is what the model writes up to the next
`User:` line (`STOP`), which `reply_text` cuts at. `few_shot_ids` and `stopping` are what `lmforge chat`,
`lmforge generate` and `lmforge eval` give the model.
"""

from typing import TYPE_CHECKING

from lmforge.lib.encoding import document_ids


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from transformers import PreTrainedTokenizerBase

INTRODUCTION = "The following is a conversation between a user and a helpful, accurate assistant."
EXAMPLES = [
    ("Hi! Who are you?", "Hello! I am an assistant. I answer questions as well as I can."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
]
STOP = "\nUser:"


def few_shot_prompt(question: str, examples: list[tuple[str, str]] | None = None) -> str:
    """The prompt for `question` after the `examples` (user, assistant) pairs, ending in an open `Assistant:`."""
    turns = [
        f"User: {user.strip()}\nAssistant: {assistant.strip()}"
        for user, assistant in (EXAMPLES if examples is None else examples)
    ]
    return "\n\n".join([INTRODUCTION, *turns, f"User: {question.strip()}\nAssistant:"])


def few_shot_ids(
    tokenizer: "PreTrainedTokenizerBase", question: str, examples: list[tuple[str, str]] | None = None
) -> list[int]:
    """The prompt's token ids: <|bos|>, as every pretraining document began, then the prompt as plain text
    (a special-token string typed in a question stays text, as in the documents)."""
    return document_ids(tokenizer, [few_shot_prompt(question, examples)])[0]


def stopping(tokenizer: "PreTrainedTokenizerBase") -> dict:
    """`generate` options that end the reply at the next user turn; the tokenizer lets generate find `STOP`
    whatever tokens spell it."""
    return {"stop_strings": [STOP], "tokenizer": tokenizer}


def reply_text(continuation: str) -> str:
    """The assistant's reply in a continuation of the prompt: up to the next user turn (or a blank-line break)."""
    return continuation.split(STOP)[0].split("\n\n")[0].strip()
