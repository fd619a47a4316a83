"""The writing page of `lmforge label`: people edit a tiny model's drafts or write their own replies, in a real
browser (Chromium through Playwright) across a restart of the page; answers survive a killed writer; several labelers
at once share the prompts out; the export trains `lmforge sft` and `lmforge reward` as it is; bad input is one line."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from browser import free_port, launch_chromium, needs_chromium, serving
from lmforge import LmforgeError, label, reward, sft
from lmforge.cli import main as lmforge
from lmforge.lib import labeling, writing
from lmforge.lib.assistant import ChatConfig, generate_reply
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS
from lmforge.lib.models import load_for_generation
from tiny import save_tiny_model


INSTRUCTIONS = Path("recipes/demo/labeling_instructions.md")
QUESTIONS = ["What is 2 + 3?", "Who are you?", "Name a colour."]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A random 2-layer Llama with the lmforge tokenizer and chat template, stopping at <|im_end|>."""
    path = tmp_path_factory.mktemp("chat_model")
    texts = [m["content"] for g in ("identity", "sums") for c in GENERATORS[g](seed=0) for m in c]
    return save_tiny_model(path, texts, vocab_size=400, hidden_size=32, end_of_turn=True)


def prompts_file(path: Path, questions: list[str]) -> dict:
    """A prompts source of SFT conversations in a JSON Lines file: their assistant turns are dropped."""
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "ref"}]} for q in questions]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"questions": {"path": "json", "data_files": str(path)}}


def page_args(model, prompts: dict, output_dir: Path, *extra) -> list[str]:
    return [
        "--config",
        "recipes/demo/write_page.yaml",
        "--model",
        str(model),
        "--prompts",
        json.dumps(prompts),
        "--output_dir",
        str(output_dir),
        "--max_new_tokens",
        "12",
        *extra,
    ]


def stored_prompts(connection, model, questions: list[str]) -> None:
    """The prompts and the model's drafts in the store, as the page's start-up leaves them."""
    prompts = [{"prompt": [{"role": "user", "content": q}], "task": "test"} for q in questions]
    causal_lm, tokenizer = load_for_generation(str(model))  # as the page's start-up loads it
    settings = ChatConfig(model_name_or_path=str(model), max_new_tokens=8, do_sample=False)
    draft = partial(generate_reply, causal_lm, tokenizer, config=settings)
    writing.store_drafts(connection, prompts, list(range(len(prompts))), draft, str(model))


def test_edit_distance_counts_words_changed():
    assert writing.edit_distance("Final answer: 7", "Final answer: 7") == 0
    assert writing.edit_distance("Final answer: 7", "Final  answer:\n7 ") == 0  # whitespace alone
    assert writing.edit_distance("Final answer: 7", "Final answer: 8") == 1
    assert (
        writing.edit_distance("Step 1: 3 + 4 = 7.\nFinal answer: 7", "Final answer: 7") == 7
    )  # the first line, 7 words
    assert writing.edit_distance("", "I do not know.") == 4


def test_prompts_come_from_sft_sources_or_the_rollouts(tmp_path):
    sources = prompts_file(tmp_path / "prompts.jsonl", [*QUESTIONS, QUESTIONS[0]])  # a repeat is asked once
    assert [row["prompt"] for row in writing.load_prompts(sources, "unused", 0)] == [
        [{"role": "user", "content": q}] for q in QUESTIONS
    ]
    rollouts = [{"prompt": [{"role": "user", "content": q}], "responses": ["a", "b"]} for q in QUESTIONS]
    Dataset.from_list(rollouts).save_to_disk(tmp_path / "rollouts")
    rows = writing.load_prompts(None, str(tmp_path / "rollouts"), 0)
    assert [row["prompt"] for row in rows] == [r["prompt"] for r in rollouts] and rows[0]["task"] == "rollouts"
    Dataset.from_list([{"prompt": [{"role": "assistant", "content": "hi"}]}]).save_to_disk(tmp_path / "bad")
    with pytest.raises(LmforgeError, match="row 0: message 0 is .assistant. where .user. was expected"):
        writing.load_prompts(None, str(tmp_path / "bad"), 0)


def test_several_labelers_at_once_share_the_prompts_out(chat_model, tmp_path):
    """Six labelers at once, two replies wanted per prompt: every prompt gets exactly two, none from one labeler
    twice, and nothing is lost."""
    path = tmp_path / "replies.sqlite"
    with closing(labeling.connect(path, writing.SCHEMA)) as connection:
        stored_prompts(connection, chat_model, [f"Question {i}?" for i in range(10)])

    def work(labeler):
        with closing(labeling.connect(path, writing.SCHEMA)) as connection:  # one connection each, as on the page
            while (prompt_id := writing.next_prompt(connection, labeler, 2)) is not None:
                writing.save_reply(connection, prompt_id, labeler, "written", f"{labeler} on {prompt_id}", 1.0, "v")

    threads = [threading.Thread(target=work, args=(f"labeler{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with closing(sqlite3.connect(path)) as connection:
        per_prompt = connection.execute("SELECT prompt_id, COUNT(DISTINCT labeler) FROM replies GROUP BY 1").fetchall()
        replies = connection.execute("SELECT prompt_id, labeler, reply FROM replies").fetchall()
    assert per_prompt == [(i, 2) for i in range(10)]
    assert all(reply == f"{labeler} on {prompt_id}" for prompt_id, labeler, reply in replies)


# A writer that saves answers as fast as it can and says each one it has committed.
WRITER = """
import sys
from contextlib import closing
from functools import partial
from lmforge.lib import labeling, writing
with closing(labeling.connect(sys.argv[1], writing.SCHEMA)) as connection:
    while (prompt_id := writing.next_prompt(connection, "w", 1)) is not None:
        writing.save_reply(connection, prompt_id, "w", "edited", f"reply to {prompt_id} " * 20, 2.5, "v1")
        print(prompt_id, flush=True)
"""


def test_a_killed_writer_loses_no_committed_answer_and_leaves_no_partial_one(tmp_path):
    path = tmp_path / "replies.sqlite"
    with closing(labeling.connect(path, writing.SCHEMA)) as connection:
        connection.executemany(
            "INSERT INTO prompts VALUES (?, ?, 'test', ?, 'model')",
            [(i, json.dumps([{"role": "user", "content": f"q{i}"}]), f"draft {i}") for i in range(300)],
        )
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    said = [int(writer.stdout.readline()) for _ in range(40)]
    os.kill(writer.pid, signal.SIGKILL)  # mid-answer, most likely: each commit waits for the disk
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    with closing(labeling.connect(path, writing.SCHEMA)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        saved = connection.execute("SELECT prompt_id, reply, seconds FROM replies").fetchall()
        # Every answer the writer saw committed is there, whole; at most one more (committed, not yet said).
        assert said == [row[0] for row in saved[: len(said)]] and len(said) <= len(saved) <= len(said) + 1
        assert all(reply == f"reply to {i} " * 20 and seconds == 2.5 for i, reply, seconds in saved)
        # The restarted writer carries on with the first prompt not answered, its reservation included.
        assert writing.next_prompt(connection, "w", 1) == len(saved)


def test_export_trains_sft_and_reward_unchanged(chat_model, tmp_path):
    """Replies typed over the drafts export as SFT conversations and pairs that the stages train on as they are."""
    sums = GENERATORS["sums"](size=16, seed=3)
    path = tmp_path / "replies.sqlite"
    with closing(labeling.connect(path, writing.SCHEMA)) as connection:
        stored_prompts(connection, chat_model, [c[0]["content"] for c in sums])
        for prompt_id, conversation in enumerate(sums):
            reply = conversation[1]["content"]
            writing.save_reply(connection, prompt_id, "ann", "edited", reply, 10.0 + prompt_id, "v1")
        writing.save_reply(connection, 0, "bob", "skipped", None, 1.0, "v1")
    label.main(*parse(label.CONFIGS, [*page_args(chat_model, {}, tmp_path), "--export", "--test_fraction", "0.25"]))
    counts = json.loads((tmp_path / "export.json").read_text())
    assert counts["rows"] == 16 == counts["edits"] == counts["pairs"] and counts["skips"] == 1
    assert counts["median_seconds_per_reply"] == 17.5

    data = {"labeled": {"path": "json", "data_files": str(tmp_path / "conversations.jsonl")}}
    fast = ["--max_steps", "24", "--logging_steps", "4", "--per_device_train_batch_size", "4", "--report_to", "none"]
    results = sft.main(
        *parse(
            sft.CONFIGS,
            [
                "--config",
                "recipes/demo/sft.yaml",
                "--model_name_or_path",
                str(chat_model),
                "--datasets",
                json.dumps(data),
                "--output_dir",
                str(tmp_path / "sft"),
                "--eval_fraction",
                "0.25",
                "--eval_steps",
                "1000",
                "--save_steps",
                "1000",
                *fast,
            ],
        )
    )
    labeled = results["sources"]["labeled"]
    assert labeled["taken"] + labeled["heldout"] == 16 and labeled["heldout"] == results["eval_rows"] > 0
    assert results["eval_loss_after"] < results["eval_loss_before"] - 0.5
    rewards = reward.main(
        *parse(
            reward.CONFIGS,
            [
                "--config",
                "recipes/demo/reward.yaml",
                "--model_name_or_path",
                str(chat_model),
                "--preferences",
                str(tmp_path / "preferences"),
                "--output_dir",
                str(tmp_path / "reward"),
                "--save_steps",
                "1000",
                "--learning_rate",
                "1e-3",
                *fast,
            ],
        )
    )
    assert rewards["train_pairs"] == 12 and rewards["pair_sources"] == ["human"]
    assert rewards["heldout_accuracy"] == 1.0


# Bad input -------------------------------------------------------------------------------------------------------


def one_line(*argv: str) -> str:
    with pytest.raises(SystemExit) as exit:
        lmforge(["label", *map(str, argv)])
    message = str(exit.value.code)
    assert message.startswith("lmforge label: error: ") and "\n" not in message, message
    return message


def test_bad_input_is_one_line(chat_model, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    empty = {"questions": {"path": "json", "data_files": str(tmp_path / "empty.jsonl")}}
    assert f"{tmp_path / 'empty.jsonl'} is empty" in one_line(*page_args(chat_model, empty, tmp_path / "a"))
    prompts = prompts_file(tmp_path / "prompts.jsonl", QUESTIONS)
    missing = tmp_path / "missing.md"
    assert f"instructions: {missing} cannot be read" in one_line(
        *page_args(chat_model, prompts, tmp_path / "b", "--instructions", missing)
    )
    ranking_page = ["--config", "recipes/demo/label_page.yaml", "--output_dir", tmp_path / "d"]
    assert f"instructions: {missing} cannot be read" in one_line(*ranking_page, "--instructions", missing)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert f"{tmp_path / 'broken'} holds no tokenizer" in one_line(*page_args(tmp_path / "broken", prompts, tmp_path))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a tokenizer, beside a config that is not JSON
        (tmp_path / "broken" / name).write_bytes((chat_model / name).read_bytes())
    assert f"{tmp_path / 'broken'} could not be loaded" in one_line(*page_args(tmp_path / "broken", prompts, tmp_path))
    assert "no replies to export yet" in one_line(*page_args(chat_model, prompts, tmp_path / "c", "--export"))


# The page in a browser -------------------------------------------------------------------------------------------


def open_as(browser, port: int, labeler: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/")
    page.locator("#labeler textarea, #labeler input").first.fill(labeler)
    page.locator("#start").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Labeler')", timeout=20000)
    return page


def shown(page) -> dict:
    return {name: page.locator(f"#{name} textarea").input_value() for name in ("prompt", "draft", "reply")}


def press(page, button: str) -> None:
    """Press a button that answers, and wait until the answer is committed: the page then shows the next prompt."""
    before = page.locator("#prompt textarea").input_value()
    page.locator(f"#{button}").click()
    page.wait_for_function(f"document.querySelector('#prompt textarea').value !== {json.dumps(before)}", timeout=20000)


@pytest.mark.slow
@needs_chromium
def test_writing_page_in_a_browser_keeps_what_was_typed_across_a_restart(chat_model, tmp_path):
    from playwright.sync_api import sync_playwright

    port, version = free_port(), labeling.load_instructions(str(INSTRUCTIONS)).version
    args = page_args(chat_model, prompts_file(tmp_path / "prompts.jsonl", QUESTIONS), tmp_path)
    with serving("lmforge.label", args, port, timeout=180), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = open_as(browser, port, "alice")
        assert "Says when it does not know" in page.locator("#instructions").inner_text()
        assert version in page.locator("#instructions-version").inner_text()
        first = shown(page)
        assert first["draft"] and first["reply"] == first["draft"]  # the draft is there to edit
        edited = f"{first['draft']} Checked by a person: fine."
        page.locator("#reply textarea").fill(edited)
        press(page, "submit")
        second = shown(page)
        press(page, "skip")
        third = shown(page)
        press(page, "flag")
        assert "No prompts left" in page.locator("#status").inner_text()
        browser.close()

    with serving("lmforge.label", args, port, timeout=180), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = open_as(browser, port, "bob")  # gets only what alice skipped: the others are answered or flagged
        assert shown(page)["prompt"] == second["prompt"]
        page.locator("#clear").click()
        page.wait_for_function("document.querySelector('#reply textarea').value === ''", timeout=20000)
        written = "Blue, the colour of a clear sky.\nAny colour you can name is an answer."
        page.locator("#reply textarea").fill(written)
        press(page, "submit")
        assert "No prompts left" in page.locator("#status").inner_text()
        browser.close()

    label.main(*parse(label.CONFIGS, [*args, "--export", "--test_fraction", "0.5"]))
    rows = [json.loads(line) for line in (tmp_path / "conversations.jsonl").read_text().splitlines()]
    assert [(r["labeler"], r["status"], r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows] == [
        ("alice", "edited", first["prompt"].removeprefix("USER: "), edited),
        ("bob", "written", second["prompt"].removeprefix("USER: "), written),
    ]
    assert [r["edit_distance"] for r in rows] == [5, writing.edit_distance(second["draft"], written)]
    assert {r["instructions"] for r in rows} == {version} and all(r["seconds"] > 0 for r in rows)
    pairs = load_from_disk(str(tmp_path / "preferences"))
    pairs = sorted([*pairs["train"], *pairs["test"]], key=lambda pair: pair["reply_id"])
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["labeler"]) for p in pairs] == [
        (edited, first["draft"], "alice"),
        (written, second["draft"], "bob"),
    ]
    counts = json.loads((tmp_path / "export.json").read_text())
    assert {k: counts[k] for k in ("rows", "edits", "rewrites", "skips", "flags", "pairs")} == {
        "rows": 2,
        "edits": 1,
        "rewrites": 1,
        "skips": 1,
        "flags": 1,
        "pairs": 2,
    }
    assert len({first["prompt"], second["prompt"], third["prompt"]}) == 3
    with closing(sqlite3.connect(tmp_path / "replies.sqlite")) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
