"""Labels: pair counts of the export, labeler agreement, the judges, and the ranking page driven in a real
browser (Chromium through Playwright) across a restart of its server."""

import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from browser import free_port, launch_chromium, needs_chromium, serving
from lmforge import label
from lmforge.lib import judges, labeling
from lmforge.lib.configs import parse


QUESTION = "Ana buys 3 packs of beads with 4 beads in each pack, then gives 5 beads to a friend. How many beads?"
REFERENCE = "Step 1: 3 packs * 4 beads = 12 beads.\nStep 2: 12 - 5 = 7 beads.\nFinal answer: 7"


def rollout(prompt_id, question, responses, task="identity", reference=None, finished=None):
    return {
        "prompt_id": prompt_id,
        "prompt": [{"role": "user", "content": question}],
        "task": task,
        "reference": reference,
        "responses": responses,
        "finished": finished or [True] * len(responses),
        "seed": prompt_id,
        "model": "test",
    }


@pytest.fixture
def rollouts(tmp_path):
    rows = [
        rollout(
            0,
            QUESTION,
            ["Final answer: 7", "Final answer: 9", "Final answer: 7 7 7 7 7 7 7 7"],
            task="arithmetic",
            reference=REFERENCE,
        ),
        rollout(
            1, "Who are you?", ["I'm Forge.", "I am Forge, an assistant.", "user\nwho?"], finished=[True, True, False]
        ),
        rollout(2, "Who made you?", ["The lmforge project.", "I do not know.", "lmforge made me."]),
    ]
    path = tmp_path / "rollouts"
    Dataset.from_list(rows).save_to_disk(path)
    return path


def test_a_ranking_of_k_gives_k_choose_2_pairs_and_flags_sink():
    texts = ["a", "b", "c", "d"]
    assert [(c, r) for c, r, _ in label.ranking_pairs([2, 0, 3, 1], [], None, texts)] == [
        (2, 0),
        (2, 3),
        (2, 1),
        (0, 3),
        (0, 1),
        (3, 1),
    ]
    # A flagged response counts below every unflagged one whatever its rank: still 6 pairs.
    flagged_best = label.ranking_pairs([2, 0, 3, 1], [2], None, texts)
    assert len(flagged_best) == 6 and all(r == 2 for c, r, _ in flagged_best if 2 in (c, r))
    # No preference between two flagged responses (5 pairs), between equal texts, or a judge's tie.
    assert len(label.ranking_pairs([0, 1, 2, 3], [2, 3], None, texts)) == 5
    assert len(label.ranking_pairs([0, 1, 2, 3], [], None, ["a", "a", "c", "d"])) == 5
    assert len(label.ranking_pairs([0, 1, 2, 3], [], [2.0, 2.0, 1.0, 0.0], texts)) == 5
    assert label.ranking_pairs([0, 1, 2], [], None, ["x", "y", "z"])[1] == (0, 2, 2)  # rank_gap


def test_page_answers_become_a_ranking():
    order = [2, 0, 1]  # A shows response 2, B response 0, C response 1
    assert label.ranking_from_page(["2", "3", "1"], ["B"], order) == ([1, 2, 0], [0])
    with pytest.raises(ValueError, match="different rank from 1 to 3"):
        label.ranking_from_page(["1", "1", None], [], order)


def test_judges_prefer_right_answers_and_clean_turns():
    row = rollout(
        0,
        QUESTION,
        [
            "Step 1: 12 - 5 = 7.\nFinal answer: 7",
            "Final answer: 8",
            "Final answer: 7 " + "and again " * 30,
            "<|im_start|>user\nFinal answer: 7",
        ],
        task="arithmetic",
        reference=REFERENCE,
        finished=[True, True, True, False],
    )
    weights = {"arithmetic": 4.0, "format": 1.0, "repetition": 1.0, "length": 0.5}
    ranking, scores = judges.rank(row, weights)
    assert ranking[0] == 0 and ranking[-1] == 1  # the wrong answer is last despite its clean format
    assert judges.arithmetic_correct("Final answer: 7", True, {**row, "task": "identity"}) is None
    assert judges.format_compliance("hi\nuser\nmore", True, row) == 0.5
    assert judges.repetition("a b c a b c a b c", True, row) < 0.5 < judges.repetition("one two three four", True, row)


def test_export_counts_pairs_splits_by_prompt_and_measures_agreement(rollouts, tmp_path):
    out = tmp_path / "labels"
    out.mkdir()
    with closing(label.connect(out / "rankings.sqlite")) as connection:
        label.store_prompts(connection, load_from_disk(str(rollouts)), out / "rankings.sqlite")
        assert label.save_ranking(connection, 0, "ann", "human", [0, 2, 1], [])
        assert not label.save_ranking(connection, 0, "ann", "human", [1, 2, 0], [])  # answered: ignored
        label.save_ranking(connection, 0, "bob", "human", [0, 1, 2], [])  # agrees with ann on 2 of 3 pairs
        label.save_ranking(connection, 1, "ann", "human", [0, 1, 2], [2])
        label.save_ranking(connection, 2, "ann", "human", None, [])  # a skip: no pairs
        assert label.next_prompt(connection, "bob", 1) == 2 and label.next_prompt(connection, "ann", 1) is None
        counts = label.export(connection, out, test_fraction=0.5, seed=0)
    assert counts == {
        "rankings": 3,
        "pairs": 9,
        "train_pairs": counts["train_pairs"],
        "test_pairs": 9 - counts["train_pairs"],
        "test_prompts": 1,
        "by_source": {"human": 9},
        "skipped": 1,
    }
    assert counts["train_pairs"] in (3, 6)
    agreement = json.loads((out / "agreement.json").read_text())
    assert (agreement["pair_comparisons"], agreement["agreements"]) == (3, 2)
    assert agreement["pairwise_agreement"] == pytest.approx(2 / 3)
    pairs = load_from_disk(str(out / "preferences"))
    train, test = set(pairs["train"]["prompt_id"]), set(pairs["test"]["prompt_id"])
    assert train and test and not train & test
    pair = pairs["train"][0]
    assert pair["prompt"][-1]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"
    assert {"rejected", "source", "labeler", "rank_gap"} <= set(pair)


def test_judges_rank_and_export_marks_the_source(rollouts, tmp_path):
    # The arithmetic judge weighs most here (the demo recipe ranks sums by other judges, see recipes/demo/label.yaml).
    judges = {"arithmetic": 4.0, "format": 1.0, "repetition": 1.0, "length": 0.5}
    argv = [
        "--config",
        "recipes/demo/label.yaml",
        "--rollouts",
        str(rollouts),
        "--output_dir",
        str(tmp_path),
        "--test_fraction",
        "0.0",
        "--judges",
        json.dumps(judges),
    ]
    label.main(*parse(label.CONFIGS, argv))
    label.main(*parse(label.CONFIGS, argv))  # again: nothing is ranked twice
    pairs = load_from_disk(str(tmp_path / "preferences"))["train"]
    assert set(pairs["source"]) == {"judge"} and set(pairs["labeler"]) == {"judge"}
    # Right beats right-but-repetitive beats wrong: 3 pairs. Two equally good identity answers are a tie
    # (no pair) but both beat the unfinished one that writes a user turn: 2 pairs. Prompt 2 is all ties.
    texts = [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs if p["prompt_id"] == 0]
    assert texts == [
        ("Final answer: 7", "Final answer: 7 7 7 7 7 7 7 7"),
        ("Final answer: 7", "Final answer: 9"),
        ("Final answer: 7 7 7 7 7 7 7 7", "Final answer: 9"),
    ]
    assert sorted(pairs["prompt_id"]) == [0, 0, 0, 1, 1]
    with closing(sqlite3.connect(tmp_path / "rankings.sqlite")) as connection:
        assert connection.execute("SELECT COUNT(*) FROM rankings").fetchone()[0] == 3


def test_judges_rank_a_users_own_rollouts_from_a_jsonl_file(tmp_path):
    """Rollouts a user brings (a JSONL file of a text prompt and its responses, nothing else): imported through
    lib.sources, what they lack filled in, ranked by the judges and exported as pairs."""
    rows = [
        {"prompt": QUESTION, "responses": ["Final answer: 7", "Final answer: 7 7 7 7 7 7 7 7 7 7"]},
        {"prompt": "What is 1 + 1?", "responses": ["2 2 2 2 2 2 2 2 2 2 2 2", "1 + 1 = 2.\nFinal answer: 2"]},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--config", "recipes/demo/label.yaml", "--rollouts", str(path), "--output_dir", str(tmp_path / "out")]
    argv += ["--test_fraction", "0.0", "--judges", json.dumps({"repetition": 1.0})]
    label.main(*parse(label.CONFIGS, argv))
    pairs = load_from_disk(str(tmp_path / "out" / "preferences"))["train"]
    assert sorted(set(pairs["prompt_id"])) == [0, 1]
    assert pairs[0]["prompt"] == [{"role": "user", "content": QUESTION}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "responses": ["only one"]}) + "\n")
    with pytest.raises(
        label.LmforgeError, match=r"bad.jsonl split train row 0: column 'responses' holds .*a list of at"
    ):
        label.main(*parse(label.CONFIGS, [*argv[:2], "--rollouts", str(bad), "--output_dir", str(tmp_path / "o")]))


def test_labelers_writing_at_once_lose_nothing(rollouts, tmp_path):
    database = tmp_path / "rankings.sqlite"
    with closing(label.connect(database)) as connection:
        label.store_prompts(connection, load_from_disk(str(rollouts)), database)

    def rank_everything(labeler):
        with closing(label.connect(database)) as connection:  # one connection per labeler, as on the page
            for prompt_id in range(3):
                label.save_ranking(connection, prompt_id, labeler, "human", [0, 1, 2], [])

    threads = [threading.Thread(target=rank_everything, args=(f"labeler{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("SELECT COUNT(DISTINCT labeler), COUNT(*) FROM rankings").fetchone() == (8, 24)


# The page in a browser -----------------------------------------------------------------------------------


def ranking_page(rollouts: Path, output_dir: Path, port: int):
    return serving(
        "lmforge.label",
        [
            "--rollouts",
            str(rollouts),
            "--output_dir",
            str(output_dir),
            "--rankings_per_prompt",
            "1",
            "--instructions",
            "recipes/demo/labeling_instructions.md",
        ],
        port,
    )


def open_as(browser, port: int, labeler: str):
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.locator("#labeler textarea, #labeler input").first.fill(labeler)
    page.locator("#start").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Labeler')", timeout=20000)
    return page


def shown(page) -> dict:
    texts = {letter: page.locator(f"#response-{letter} textarea").input_value() for letter in "ABC"}
    return {"prompt": page.locator("#prompt textarea").input_value(), **texts}


def answer(page, button: str, ranks: dict | None = None, harmful: str | None = None) -> None:
    before = page.locator("#prompt textarea").input_value()
    for letter, rank in (ranks or {}).items():
        page.locator(f"#rank-{letter}").get_by_label(str(rank), exact=True).check()
    if harmful:
        page.locator("#flags").get_by_label(harmful, exact=True).check()
    page.locator(f"#{button}").click()
    # The page moves on only after the answer is committed: wait for the next prompt (or the end).
    page.wait_for_function(f"document.querySelector('#prompt textarea').value !== {json.dumps(before)}", timeout=20000)


@pytest.mark.slow
@needs_chromium
def test_ranking_page_in_a_browser_saves_at_once_and_resumes_after_a_restart(rollouts, tmp_path):
    from playwright.sync_api import sync_playwright

    port, database = free_port(), tmp_path / "rankings.sqlite"
    rows = {row["prompt_id"]: row for row in load_from_disk(str(rollouts))}
    with ranking_page(rollouts, tmp_path, port), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = open_as(browser, port, "alice")
        assert "Labeling instructions" in page.locator("#instructions").inner_text()
        first = shown(page)
        answer(page, "submit", {"A": 2, "B": 1, "C": 3}, harmful="C")
        second = shown(page)
        answer(page, "skip")
        browser.close()

    with closing(sqlite3.connect(database)) as connection:
        saved = connection.execute(
            "SELECT prompt_id, labeler, source, status, ranking, flagged FROM rankings ORDER BY id"
        ).fetchall()
        versions = {row[0] for row in connection.execute("SELECT instructions FROM rankings")}
    assert versions == {labeling.load_instructions("recipes/demo/labeling_instructions.md").version}
    (first_id, *_), (second_id, *_) = saved
    assert [row[1:4] for row in saved] == [("alice", "human", "ranked"), ("alice", "human", "skipped")]
    assert first["prompt"].endswith(rows[first_id]["prompt"][0]["content"])
    responses = rows[first_id]["responses"]
    # The stored ranking names responses, not letters: best is what was shown as B, then A, then C (flagged).
    assert [responses[i] for i in json.loads(saved[0][4])] == [first["B"], first["A"], first["C"]]
    assert [responses[i] for i in json.loads(saved[0][5])] == [first["C"]]
    assert second["prompt"].endswith(rows[second_id]["prompt"][0]["content"])

    with ranking_page(rollouts, tmp_path, port), sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = open_as(browser, port, "alice")  # resumes with the one prompt alice has not answered
        (remaining,) = set(rows) - {first_id, second_id}
        assert shown(page)["prompt"].endswith(rows[remaining]["prompt"][0]["content"])
        answer(page, "submit", {"A": 1, "B": 2, "C": 3})
        assert "No prompts left" in page.locator("#status").inner_text()
        # Another labeler gets only the prompt alice skipped: the others have their one ranking.
        page = open_as(browser, port, "bob")
        assert shown(page)["prompt"].endswith(rows[second_id]["prompt"][0]["content"])
        browser.close()
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT COUNT(*) FROM rankings WHERE status = 'ranked'").fetchone()[0] == 2


def test_two_labelers_at_once_get_different_prompts_until_a_reservation_expires(rollouts, tmp_path):
    database = tmp_path / "rankings.sqlite"
    with closing(label.connect(database)) as connection:
        label.store_prompts(connection, load_from_disk(str(rollouts)), database)
    # One connection per labeler, as each page request has.
    with closing(label.connect(database)) as ann, closing(label.connect(database)) as bob:
        assert label.next_prompt(ann, "ann", 1, hold_seconds=60, now=0) == 0
        assert label.next_prompt(bob, "bob", 1, hold_seconds=60, now=1) == 1  # 0 is ann's for now
        assert label.next_prompt(ann, "ann", 1, hold_seconds=60, now=2) == 0  # a reload keeps her prompt
        assert label.next_prompt(bob, "bob", 1, hold_seconds=60, now=3) == 1
        label.save_ranking(bob, 1, "bob", "human", [0, 1, 2], [])
        assert label.next_prompt(bob, "bob", 1, hold_seconds=60, now=4) == 2
        # Ann went away: once her reservation has expired, her prompt is given out again.
        assert label.next_prompt(bob, "bob", 1, hold_seconds=60, now=90) == 0
        assert label.next_prompt(ann, "ann", 1, hold_seconds=60, now=91) == 2  # bob's 2 expired too; 0 is his
        label.save_ranking(bob, 0, "bob", "human", [0, 1, 2], [])
        label.save_ranking(ann, 2, "ann", "human", [0, 1, 2], [])
        assert label.next_prompt(ann, "ann", 1, now=92) is None and label.next_prompt(bob, "bob", 1, now=92) is None
        ranked = ann.execute("SELECT prompt_id, COUNT(*) FROM rankings GROUP BY prompt_id").fetchall()
    assert ranked == [(0, 1), (1, 1), (2, 1)]  # one ranking each, as rankings_per_prompt asks
