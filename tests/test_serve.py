"""The chat page: replies stream in pieces, and in a real browser (Chromium through Playwright) each reply is
what lmforge.lib.assistant.generate_reply writes for the same conversation and settings."""

import json

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect, sync_playwright
from transformers import AutoModelForCausalLM, AutoTokenizer

from browser import free_port, launch_chromium, needs_chromium, serving
from lmforge import serve
from lmforge.lib.assistant import generate_reply
from lmforge.lib.configs import parse
from tiny import save_tiny_model


TEXTS = ["Hello there, how are you today?", "I am Forge, a small assistant.", "Two and three make five."] * 20
BOT = '#chat [data-testid="bot"] .message-content'


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("assistant"), TEXTS, vocab_size=300, end_of_turn=True)
    # The page's settings: the demo recipe's (repetition_penalty included), greedy so that replies can be compared.
    argv = [
        "--config",
        "recipes/demo/serve.yaml",
        "--model_name_or_path",
        str(path),
        "--do_sample",
        "false",
        "--max_new_tokens",
        "12",
    ]
    (config,) = parse(serve.CONFIGS, argv)
    return argv, config, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_reply_streams_in_pieces_then_gives_the_message(assistant):
    _, config, model, tokenizer = assistant
    messages = [{"role": "user", "content": "Hello"}]
    steps = list(serve.stream_reply(model, tokenizer, messages, config, tools={}))
    partial = [shown for shown, content in steps if content is None]
    assert len(partial) > 1 and all(a != b for a, b in zip(partial, partial[1:]))
    assert steps[-1] == (generate_reply(model, tokenizer, messages, config),) * 2


def send(page, text: str, expected: str) -> str:
    """Send a message; return the last reply once it reads `expected`, or as it is after 30 s of streaming."""
    replies = page.locator(BOT).count() + 1
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()
    try:
        page.wait_for_function(
            f"(replies => replies.length === {replies} && replies[{replies - 1}].textContent === "
            f"{json.dumps(expected)})(document.querySelectorAll({json.dumps(BOT)}))",
            timeout=30000,
        )
    except PlaywrightTimeout:
        pass  # the assertion shows what arrived instead
    return page.locator(BOT).nth(replies - 1).text_content() if page.locator(BOT).count() == replies else None


@pytest.mark.slow
@needs_chromium
def test_page_streams_the_models_replies_over_two_turns(assistant):
    argv, config, model, tokenizer = assistant
    port, system = free_port(), "You are Forge."
    # What the model writes for this conversation, called directly: the page must show exactly this.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hello there"}]
    first = generate_reply(model, tokenizer, messages, config)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Who are you?"}]
    second = generate_reply(model, tokenizer, messages, config)
    assert first and second

    with serving("lmforge.serve", argv, port), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#settings").get_by_text("Settings").click()  # opens the settings
        # Typed, then left (Tab): Gradio takes a textbox's new value into the next event's inputs on its change, which
        # under load could come after the send's click (the first reply was then the one without a system prompt).
        page.locator("#system-prompt textarea").fill(system)
        page.locator("#system-prompt textarea").press("Tab")
        expect(page.locator("#system-prompt textarea")).to_have_value(system)
        assert send(page, "Hello there", first) == first
        assert send(page, "Who are you?", second) == second
        browser.close()
