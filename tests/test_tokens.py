"""`lmforge tokens`: token ids and bytes add up to the input, special tokens and the assistant mask are shown."""

import json

import pytest

from lmforge import LmforgeError, tokens
from lmforge.lib.configs import parse
from lmforge.tokenizer import train_tokenizer


CONVERSATION = [
    {"role": "user", "content": "How many r's in strawberry?"},
    {
        "role": "assistant",
        "content": 'Let me count.<|tool_call|>{"name": "python", "arguments": {"code": '
        "\"print('strawberry'.count('r'))\"}}<|/tool_call|><|tool_result|>3"
        "<|/tool_result|>Final answer: 3",
    },
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(["The strawberry has three r's. Café 東京 😀 " * 30], vocab_size=320).save_pretrained(path)
    return path


def test_text_rows_carry_ids_and_exact_bytes(tokenizer_dir, capsys):
    text = "Strawberry 😀 <|im_end|> café\n\tend"
    rows = tokens.main(tokens.TokensConfig(tokenizer=str(tokenizer_dir), text=text, color="always"))
    assert b"".join(row["bytes"] for row in rows) == text.encode()  # byte-exact, even inside the emoji
    assert not any(row["special"] or row["trained"] for row in rows)  # typed special strings stay text
    shown = capsys.readouterr().out
    assert "\033[30;48;5;" in shown and "↵" in shown and f"{len(rows)} tokens, {len(text.encode())} bytes" in shown
    special = tokens.main(tokens.TokensConfig(tokenizer=str(tokenizer_dir), text=text, special=True, color="never"))
    assert [row["text"] for row in special if row["special"]] == ["<|im_end|>"]


def test_conversation_shows_special_tokens_and_the_trained_mask(tokenizer_dir, tmp_path, capsys):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"messages": CONVERSATION}))
    html = tmp_path / "view" / "chat.html"
    tokens.cli(["--tokenizer", str(tokenizer_dir), "--file", str(path), "--html", str(html), "--color", "never"])
    rows = tokens.split(tokens.AutoTokenizer.from_pretrained(tokenizer_dir), CONVERSATION)
    trained = "".join(row["text"] for row in rows if row["trained"])
    assert trained == CONVERSATION[1]["content"].replace("<|tool_result|>3<|/tool_result|>", "") + "<|im_end|>"
    assert [row["text"] for row in rows if row["special"]][:2] == ["<|bos|>", "<|im_start|>"]
    page = html.read_text()
    assert page.count("<span") == len(rows) and page.count('class="special trained"') == 3  # call, end call, im_end
    assert 'class="special"><' not in page and "&lt;|tool_result|&gt;" in page
    table = capsys.readouterr().out
    assert "'<|tool_result|>' special\n" in table and "'<|im_end|>' special trained" in table


def test_bad_input_is_named(tokenizer_dir, tmp_path):
    with pytest.raises(LmforgeError, match="give text, messages or file"):
        parse(tokens.CONFIGS, ["--tokenizer", str(tokenizer_dir)])
    with pytest.raises(LmforgeError, match="messages: not JSON"):
        tokens.main(tokens.TokensConfig(tokenizer=str(tokenizer_dir), messages="[{oops"))
    with pytest.raises(LmforgeError, match="list of {role, content} messages"):
        tokens.main(tokens.TokensConfig(tokenizer=str(tokenizer_dir), messages='{"role": "user"}'))
    with pytest.raises(LmforgeError, match="does not exist"):
        tokens.main(tokens.TokensConfig(tokenizer=str(tmp_path / "missing"), text="x"))
