"""See how a tokenizer splits a text or a whole conversation: ids, each token's bytes, special tokens, loss mask.

    lmforge tokens --config recipes/demo/tokens.yaml
    lmforge tokens --tokenizer runs/demo/tokenizer --text "Strawberry has 3 r's."
    lmforge tokens --tokenizer runs/demo/sft --messages '[{"role": "user", "content": "Hi"}, ...]'
    lmforge tokens --config recipes/demo/tokens.yaml --tokenizer runs/demo/sft --file chat.json

A text is encoded as training documents are (special-token strings stay text unless `special: true`); a
conversation (`messages`, or a .json `file` holding a list of messages or {"messages": [...]}) goes
through the tokenizer's chat template, and the tokens the loss trains on (the assistant mask) are marked.

The terminal shows token boundaries as alternating background colours (`|` between tokens without
colour), special tokens in bold and trained-on tokens underlined, then one line per token: position,
id, bytes (hex) and text. `html` writes the same view to a file; hover a token for its id and bytes.
"""

import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from lmforge import LmforgeError
from lmforge.lib.configs import parse
from lmforge.lib.encoding import encode_text
from lmforge.lib.files import write_text
from lmforge.lib.loading import load


BACKGROUNDS = (153, 229, 194, 217)  # xterm-256 pastel colours, cycled token by token
HTML_COLOURS = ("#cfe8ff", "#fff3b0", "#d4f5d4", "#ffd6d6")


@dataclass
class TokensConfig:
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "A saved tokenizer or model folder."})
    text: str | None = field(default=None, metadata={"help": "Text to split into tokens."})
    messages: str | None = field(default=None, metadata={"help": "A conversation as JSON messages (over text)."})
    file: str | None = field(default=None, metadata={"help": "A .txt file, or a .json file of messages (over text)."})
    special: bool = field(default=False, metadata={"help": "Read special-token strings in a text as special."})
    html: str | None = field(default=None, metadata={"help": "Also write an HTML view to this file."})
    color: str = field(default="auto", metadata={"help": "auto (when printing to a terminal), always or never."})
    table: bool = field(default=True, metadata={"help": "Print one line per token: position, id, bytes, text."})

    def __post_init__(self):
        if self.text is None and self.messages is None and self.file is None:
            raise LmforgeError("give text, messages or file")
        if self.color not in ("auto", "always", "never"):
            raise LmforgeError(f"color: {self.color!r} is not one of auto, always, never")


CONFIGS = (TokensConfig,)


def byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> the byte it stands for."""
    printable = set(pre_tokenizers.ByteLevel.alphabet())
    # The alphabet keeps printable Latin-1 bytes as themselves and moves the others, in order, to 256 upwards.
    own = [b for b in range(256) if chr(b) in printable]
    moved = [b for b in range(256) if chr(b) not in printable]
    return {**{chr(b): b for b in own}, **{chr(256 + n): b for n, b in enumerate(moved)}}


def token_bytes(tokenizer, token_id: int, decoder: dict[str, int]) -> bytes:
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token_id in tokenizer.all_special_ids or not all(char in decoder for char in token):
        return tokenizer.decode([token_id]).encode()  # not a byte-level token: its decoded text
    return bytes(decoder[char] for char in token)


def load_input(config: TokensConfig):
    """The text (str) or the conversation (list of messages) to show: messages, else file, else text."""
    if config.messages is not None:
        try:
            return json.loads(config.messages)
        except json.JSONDecodeError as error:
            raise LmforgeError(f"messages: not JSON ({error})") from None
    if config.file:
        path = Path(config.file)
        if not path.is_file():
            raise LmforgeError(f"file: {path} not found")
        if path.suffix != ".json":
            return path.read_text(encoding="utf-8")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LmforgeError(f"{path}: not JSON ({error})") from None
        return data["messages"] if isinstance(data, dict) and "messages" in data else data
    return config.text


def split(tokenizer, source, special: bool = False) -> list[dict]:
    """One row per token: id, bytes, text (decoded alone), special, trained (in the assistant mask)."""
    if isinstance(source, str):
        ids = (
            tokenizer(source, add_special_tokens=False)["input_ids"]
            if special
            else encode_text(tokenizer, [source])[0]
        )
        mask = [0] * len(ids)
    else:
        if not isinstance(source, list) or not all(isinstance(m, dict) and "role" in m for m in source):
            raise LmforgeError("messages: expected a list of {role, content} messages")
        if not tokenizer.chat_template:
            raise LmforgeError("tokenizer: has no chat template to render messages with")
        out = tokenizer.apply_chat_template(source, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = out["input_ids"], out["assistant_masks"]
    decoder = byte_decoder()
    return [
        {
            "id": i,
            "bytes": token_bytes(tokenizer, i, decoder),
            "text": tokenizer.decode([i]),
            "special": i in tokenizer.all_special_ids,
            "trained": bool(m),
        }
        for i, m in zip(ids, mask)
    ]


def shown(text: str) -> str:
    """A token's text with whitespace made visible, so a boundary next to a space or newline can be seen."""
    return text.replace(" ", "·").replace("\t", "→").replace("\n", "↵\n")


def ansi(rows: list[dict], color: bool) -> str:
    if not color:
        return "|".join(shown(row["text"]) for row in rows)
    parts = []
    for n, row in enumerate(rows):
        style = (
            f"\033[30;48;5;{BACKGROUNDS[n % len(BACKGROUNDS)]}m"
            + ("\033[1m" if row["special"] else "")
            + ("\033[4m" if row["trained"] else "")
        )
        # Each line of a token is styled on its own, so a newline inside it does not colour the line's end.
        parts.append("\n".join(f"{style}{line}\033[0m" if line else "" for line in shown(row["text"]).split("\n")))
    return "".join(parts)


def table(rows: list[dict]) -> str:
    lines = [f"{'pos':>5} {'id':>7}  {'bytes':<24} text"]
    for n, row in enumerate(rows):
        flags = ("special " if row["special"] else "") + ("trained" if row["trained"] else "")
        lines.append(f"{n:>5} {row['id']:>7}  {row['bytes'].hex(' '):<24} {row['text']!r} {flags}".rstrip())
    return "\n".join(lines)


def html_page(rows: list[dict], title: str) -> str:
    spans = []
    for n, row in enumerate(rows):
        classes = " ".join(name for name in ("special", "trained") if row[name])
        tip = f"#{n} id {row['id']} bytes {row['bytes'].hex(' ')}"
        spans.append(
            f'<span class="{classes}" style="background:{HTML_COLOURS[n % len(HTML_COLOURS)]}" '
            f'title="{html.escape(tip)}">{html.escape(shown(row["text"]))}</span>'
        )
    return (
        f'<!doctype html>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>\n'
        "body { font-family: sans-serif; } pre { font-size: 15px; white-space: pre-wrap; }\n"
        "span { border-right: 1px solid #888; } .special { font-weight: bold; color: #a00; }\n"
        ".trained { text-decoration: underline 2px; }\n</style>\n"
        f"<h3>{html.escape(title)}</h3>\n<p>{summary(rows)}. Colours change at each token boundary; "
        "<b>bold red</b>: special token; <u>underlined</u>: trained on (assistant mask). "
        f"Hover for id and bytes.</p>\n<pre>{''.join(spans)}</pre>\n"
    )


def summary(rows: list[dict]) -> str:
    total = sum(len(row["bytes"]) for row in rows)
    trained = sum(row["trained"] for row in rows)
    return (
        f"{len(rows)} tokens, {total} bytes ({total / max(len(rows), 1):.2f} bytes/token), "
        f"{sum(row['special'] for row in rows)} special, {trained} trained on"
    )


def main(config: TokensConfig) -> list[dict]:
    tokenizer = load(AutoTokenizer, config.tokenizer, "tokenizer")
    rows = split(tokenizer, load_input(config), config.special)
    color = config.color == "always" or (config.color == "auto" and sys.stdout.isatty())
    print(ansi(rows, color))
    print(f"\n{summary(rows)}")
    print("ids:", [row["id"] for row in rows])
    if config.table:
        print(table(rows))
    if config.html:
        write_text(config.html, html_page(rows, f"{config.tokenizer}: {summary(rows)}"))
        print(f"tokens: HTML view -> {config.html}")
    return rows


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
