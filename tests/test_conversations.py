"""Conversation generators and validation: deterministic per seed, right answers, clear errors."""

import json
import random
import re

import pytest

from lmforge import LmforgeError
from lmforge.lib.conversations import GENERATORS, arithmetic, check_conversation, load_conversations, spelling
from lmforge.lib.sources import take
from lmforge.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["Some plain text to learn a few merges from. " * 20], vocab_size=300)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic_and_valid(name):
    first, again, other = GENERATORS[name](seed=1), GENERATORS[name](seed=1), GENERATORS[name](size=50, seed=2)
    assert first == again and len(first) > 0
    assert all(check_conversation(messages) is None for messages in first + other)
    if name not in ("chatterbot", "python_faq"):  # these two take every row unless a size is given
        assert first[:50] != other


@pytest.mark.parametrize("module", [arithmetic, spelling])
def test_verifiable_answers_are_correct(module):
    """Letter counting is checked by arithmetic.check too (lib.rewards.accuracy): an integer final answer."""
    for problem in module.problems(size=300, seed=7):
        assert arithmetic.check(problem["solution"], problem) == 1.0
        assert (
            arithmetic.check(
                problem["solution"].replace(f"Final answer: {problem['answer']}", "Final answer: -1"), problem
            )
            == 0.0
        )
    assert arithmetic.check("no final answer here", {"answer": 3}) == 0.0


def test_arithmetic_steps_add_up():
    for problem in arithmetic.problems(size=200, seed=3):
        for line in problem["solution"].splitlines()[:-1]:
            left, right = line.split(": ", 1)[1].split(" = ")
            numbers = [int(word) for word in left.split() if word.isdigit()]
            operator = next(word for word in left.split() if word in "+-*/")
            value = {"+": sum, "-": lambda n: n[0] - n[1], "*": lambda n: n[0] * n[1], "/": lambda n: n[0] // n[1]}[
                operator
            ](numbers)
            assert int(right.split()[0].rstrip(".")) == value


def test_spelling_counts_letters():
    for problem in spelling.problems(size=100, seed=0):
        assert problem["answer"] == problem["word"].count(problem["letter"])
        assert ", ".join(problem["word"]) in problem["solution"]


def test_identity_uses_name_and_maker():
    rows = GENERATORS["identity"](size=30, seed=0, name="Zed", maker="Acme Labs")
    replies = " ".join(m["content"] for messages in rows for m in messages if m["role"] == "assistant")
    assert "Zed" in replies and "Acme Labs" in replies and "Forge" not in replies


@pytest.mark.parametrize(
    "messages, problem",
    [
        ([], "non-empty list"),
        ([{"role": "bot", "content": "hi"}], "message 0 has unknown role 'bot'"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
            r"message 1 \(assistant\) has empty",
        ),
        ([{"role": "assistant", "content": "hi"}], "message 0 is 'assistant' where 'user' was expected"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 1 is 'user' where 'assistant'",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "system", "content": "c"},
            ],
            "message 2 is 'system' where 'user'",
        ),
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            "must end with an assistant message",
        ),
    ],
)
def test_malformed_conversations_are_named(messages, problem):
    assert re.search(problem, check_conversation(messages))


def test_invalid_rows_stop_or_are_dropped_and_counted(tokenizer, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        '{"messages": [{"role": "user", "content": "hi"}]}\n'
    )
    sources = {"mine": {"path": "json", "data_files": str(path)}}
    with pytest.raises(
        LmforgeError,
        match=r"datasets.mine: \S+chats.jsonl split train row 1: conversation must end with an assistant message",
    ):
        load_conversations(sources, tokenizer, max_length=None)
    dataset, _, report = load_conversations(sources, tokenizer, max_length=None, on_invalid="drop")
    assert len(dataset) == 1 and report["mine"]["invalid_dropped"] == 1
    with pytest.raises(
        LmforgeError, match=r"datasets.mine: \S+ split train row 0: \d+ tokens, longer than max_length 5"
    ):
        load_conversations(sources, tokenizer, max_length=5, on_invalid="stop")


def test_mixing_by_weight_with_system_prompt(tokenizer):
    sources = {
        "maths": {"generator": "arithmetic", "size": 40, "weight": 0.5},
        "me": {"generator": "identity", "size": 10, "weight": 2},
    }
    dataset, _, report = load_conversations(sources, tokenizer, max_length=None, system_prompt="Be kind.", seed=3)
    assert (report["maths"]["taken"], report["me"]["taken"], len(dataset)) == (20, 20, 40)
    assert all(row[0] == {"role": "system", "content": "Be kind."} for row in dataset["messages"])
    again, _, _ = load_conversations(sources, tokenizer, max_length=None, system_prompt="Be kind.", seed=3)
    assert again["messages"] == dataset["messages"]


def test_unknown_generator_and_option_are_named(tokenizer):
    with pytest.raises(LmforgeError, match="datasets.x: unknown generator"):
        load_conversations({"x": {"generator": "nope"}}, tokenizer, None)
    with pytest.raises(LmforgeError, match="datasets.x: generator has no option 'colour'"):
        load_conversations({"x": {"generator": "identity", "colour": "red"}}, tokenizer, None)


def test_rows_are_taken_by_weight_before_any_is_checked_or_rendered(tokenizer, tmp_path):
    """Only the rows a weight takes are checked (and tokenized for their length): every other row here is invalid,
    and the stage does not stop on them. The rows taken are take()'s, with the source's seed."""
    good = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(400)
    ]
    taken = set(take(list(range(400)), 0.05, random.Random(7)))
    rows = [row if i in taken else {"messages": row["messages"][:1]} for i, row in enumerate(good)]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset, heldout, report = load_conversations(
        {"mine": {"path": str(path), "weight": 0.05}}, tokenizer, max_length=64, seed=7
    )
    assert len(dataset) == 20 and heldout is None and report["mine"]["rows"] == 400
    with pytest.raises(LmforgeError, match="conversation must end with an assistant message"):
        load_conversations({"mine": {"path": str(path), "weight": 0.5}}, tokenizer, max_length=64, seed=7)


def test_prompt_completion_rows_become_conversations(tokenizer, tmp_path):
    standard = tmp_path / "standard.csv"
    standard.write_text("prompt,completion\nWhat is 2 + 2?,4\nName a colour.,Blue\n")
    conversational = tmp_path / "conversational.jsonl"
    row = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}]}
    conversational.write_text(json.dumps(row) + "\n")
    sources = {"standard": {"path": str(standard)}, "conversational": {"path": str(conversational)}}
    dataset, _, report = load_conversations(sources, tokenizer, max_length=None, system_prompt="Be brief.")
    assert sorted(map(json.dumps, dataset["messages"])) == sorted(
        json.dumps(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        )
        for q, a in (("What is 2 + 2?", "4"), ("Name a colour.", "Blue"), ("Hi", "Hello"))
    )
    assert report["standard"]["format"] == report["conversational"]["format"] == "prompt-completion"


def test_held_out_conversations_come_from_a_test_split_or_a_hash(tokenizer, tmp_path):
    chats = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(60)]
    for split, part in (("train", chats[:50]), ("test", chats[50:])):
        (tmp_path / "split").mkdir(exist_ok=True)
        (tmp_path / "split" / f"{split}.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in part))
    sources = {"split": {"path": str(tmp_path / "split")}, "generated": {"generator": "arithmetic", "size": 100}}
    train, heldout, report = load_conversations(sources, tokenizer, None, heldout_fraction=0.2, num_proc=2)
    assert report["split"]["heldout"] == 10 and report["split"]["taken"] == 50
    assert (
        0 < report["generated"]["heldout"] < 40
        and report["generated"]["taken"] + report["generated"]["heldout"] == 100
    )
    assert len(heldout) == 10 + report["generated"]["heldout"] and len(train) == 50 + report["generated"]["taken"]
    assert not set(map(json.dumps, train["messages"])) & set(map(json.dumps, heldout["messages"]))
