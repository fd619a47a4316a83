"""The demo measures on held-out data: the questions `lmforge eval` and the RL stages ask are never in the demo's
training data (identity phrasings, sums of the ladder, trivia for interrogation), whatever the seeds."""

import json
from pathlib import Path

import pytest
import yaml

from lmforge.lib.conversations import chatterbot, identity, load_source, sums
from lmforge.lib.intervals import paired_bootstrap
from lmforge.lib.rewards import verifiable_prompts


RECIPES = Path(__file__).parents[1] / "recipes" / "demo"


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def training_questions(name: str) -> set[str]:
    """The first user turn of every conversation an SFT recipe of the demo trains on (generators only)."""
    questions = set()
    for source, spec in recipe(name)["datasets"].items():
        if "generator" in spec:
            spec = {key: value for key, value in spec.items() if key != "weight"}
            questions |= {messages[0]["content"] for messages in load_source(source, spec, seed=42)}
    return questions


def test_identity_heldout_phrasings_are_never_taught():
    taught = {question for questions in identity.QUESTIONS.values() for question in questions}
    assert len(identity.HELDOUT_QUESTIONS) >= 20
    assert not taught & set(identity.HELDOUT_QUESTIONS)
    assert not training_questions("sft") & set(identity.HELDOUT_QUESTIONS)


@pytest.mark.parametrize("level", sorted(sums.LEVELS))
def test_sums_split_is_the_same_for_every_seed(level):
    train = {p["question"] for seed in range(5) for p in sums.problems(300, seed, level)}
    heldout = {p["question"] for seed in range(5) for p in sums.problems(200, seed, level, heldout=True)}
    assert not train & heldout
    assert all(sums.is_heldout(q) for q in heldout) and not any(sums.is_heldout(q) for q in train)
    assert all(p["answer"] == eval(p["solution"].split(" = ")[0]) for p in sums.problems(50, 0, level))


def test_sums_heldout_has_200_distinct_single_digit_questions():
    assert len({p["question"] for p in sums.problems(200, 3000, 1, heldout=True)}) == 200


def test_demo_recipes_train_on_no_question_they_are_measured_on():
    measured = {p["question"] for level in sums.LEVELS for p in sums.problems(200, 3000, level, heldout=True)}
    measured |= set(identity.HELDOUT_QUESTIONS)
    for name in ("sft", "sft_refusals"):
        assert not training_questions(name) & measured, name
    for name in ("grpo", "ppo"):
        config = recipe(name)
        train = {row[-1]["content"] for row in verifiable_prompts(config["tasks"], config["seed"])["prompt"]}
        heldout = {
            row[-1]["content"] for row in verifiable_prompts(config["heldout_tasks"], config["heldout_seed"])["prompt"]
        }
        assert all(task.endswith("_heldout") for task in config["heldout_tasks"]), name
        assert len(heldout) >= (200 if name == "grpo" else 64) and not train & heldout, name


def test_interrogation_trivia_is_not_in_the_sft_chit_chat():
    trivia = {json.loads(line)["question"] for line in (RECIPES.parents[1] / "data/demo/trivia.jsonl").open()}
    options = {k: v for k, v in recipe("sft")["datasets"]["chit_chat"].items() if k not in ("generator", "size")}
    chit_chat = {m["content"] for turns in chatterbot.conversations(**options) for m in turns if m["role"] == "user"}
    assert len(trivia) >= 100 and not trivia & chit_chat


def test_paired_bootstrap_interval():
    before, after = [0.0] * 100 + [1.0] * 100, [1.0] * 150 + [0.0] * 50
    clear = paired_bootstrap(before, after)
    assert clear["change"] == pytest.approx(0.25) and 0 < clear["low"] < 0.25 < clear["high"]
    same = paired_bootstrap(before, list(before))
    assert same["low"] == same["high"] == 0.0
    noisy = paired_bootstrap([0.0, 1.0] * 50, [1.0, 0.0] * 50)
    assert noisy["low"] < 0 < noisy["high"]


def test_interrogation_questions_are_not_the_unknowable_ones_eval_asks():
    def questions(name):
        return {json.loads(line)["question"] for line in (RECIPES.parents[1] / "data/demo" / name).open()}

    asked = questions("private_questions.jsonl") | questions("trivia.jsonl")
    assert len(questions("private_questions.jsonl")) >= 50 and not asked & questions("unknowable_questions.jsonl")
