"""Reward functions: right and wrong answers, None where nothing can be verified, options bound by name."""

import json

import pytest
import torch
from transformers import LlamaForSequenceClassification

from lmforge import LmforgeError
from lmforge.lib.repetition import repetition_rate
from lmforge.lib.rewards import (
    REWARDS,
    accuracy,
    get_reward,
    length_penalty,
    math_equivalence,
    repetition_penalty,
    reward_functions,
    reward_model,
    think_format,
    tool_cost,
    verifiable_prompts,
)
from lmforge.tokenizer import train_tokenizer
from tiny import tiny_llama_config


@pytest.fixture(scope="module")
def prompts():
    return verifiable_prompts({"arithmetic": 3, "basic_arithmetic": 3, "gsm_symbolic": 2}, seed=7)


def columns(dataset):
    return {name: dataset[name] for name in ("task", "answer", "entry")}


def test_verifiable_prompts_are_chats_with_answers(prompts):
    assert len(prompts) == 8 and set(prompts["task"]) == {"arithmetic", "basic_arithmetic", "gsm_symbolic"}
    assert all(p[0]["role"] == "user" and p[0]["content"] for p in prompts["prompt"])
    gym = [row for row in prompts if row["task"] != "arithmetic"]
    assert all("Final answer" in row["prompt"][0]["content"] and json.loads(row["entry"]) for row in gym)
    assert verifiable_prompts({"basic_arithmetic": 3}, seed=7)["answer"] == prompts["answer"][3:6]  # seeded
    with pytest.raises(LmforgeError, match="'no_such_task' is neither"):
        verifiable_prompts({"no_such_task": 2})


def test_accuracy_on_lmforge_and_reasoning_gym_tasks(prompts):
    right = [f"Step 1: work.\nFinal answer: {a}" for a in prompts["answer"]]
    wrong = ["Final answer: 123456789" for _ in prompts["answer"]]
    assert accuracy(right, **columns(prompts)) == [1.0] * 8
    # gsm_symbolic's scorer gives 0.01 to a wrong answer that is at least a number.
    assert accuracy(wrong, **columns(prompts)) == [0.0] * 6 + [0.01] * 2
    assert accuracy(["no answer given"] * 8, **columns(prompts)) == [0.0] * 8
    # Conversational completions (what GRPOTrainer passes for chat prompts) are read the same way.
    assert accuracy(
        [[{"role": "assistant", "content": right[0]}]], task=["arithmetic"], answer=prompts["answer"][:1], entry=[""]
    ) == [1.0]


def test_counting_prompts_and_the_cost_of_tool_calls():
    counting = verifiable_prompts({"counting": 4}, seed=7)
    assert set(counting["task"]) == {"counting"} and counting["answer"] == ["0", "0", "3", "2"]
    # The answer a python call printed, read off the completion TRL decodes (special tokens dropped).
    reached = [
        f'{{"name": "python", "arguments": {{"code": "..."}}}}{a}The result is {a}.\nFinal answer: {a}'
        for a in counting["answer"]
    ]
    assert accuracy(reached, **columns(counting)) == [1.0] * 4
    assert tool_cost(["a", "b", "c"], tool_calls=[0, 1, 3], cost=0.5) == [-0.0, -0.5, -1.5]
    assert tool_cost(["a", "b"]) == [None, None]  # sampled without tools: nothing to charge


def test_accuracy_is_none_where_nothing_can_be_checked():
    assert accuracy(["Final answer: 3"], task=["chit_chat"], answer=[""], entry=[""]) == [None]
    assert accuracy(["Final answer: 3", "hi"]) == [None, None]


def test_math_verify_compares_values_not_strings():
    rewards = math_equivalence(
        ["Final answer: 0.5", "Final answer: $\\frac{1}{2}$", "Final answer: 3", "x"],
        answer=["1/2", "0.5", "1/2", "7"],
    )
    assert rewards == [1.0, 1.0, 0.0, 0.0]
    assert math_equivalence(["Final answer: 2"], answer=[""]) == [None]
    assert math_equivalence(["Final answer: 2"]) == [None]


def test_think_format():
    assert think_format(["<think>2 + 2 is 4</think>\nFinal answer: 4", "<think>\nsteps\n</think> 4"]) == [1.0, 1.0]
    assert think_format(["Final answer: 4", "<think></think>4", "<think>steps</think>", "4 <think>x</think> 4"]) == [
        0.0,
        0.0,
        0.0,
        0.0,
    ]


def test_length_and_repetition_penalties():
    assert length_penalty(["a" * 10, "a" * 30], max_chars=20) == [0.0, -0.5]
    varied = "the cat sat on the mat while a dog slept by the door"
    assert repetition_penalty([varied]) == [0.0]
    assert repetition_penalty(["go on " * 20])[0] < -0.9
    assert repetition_rate([1, 2, 3, 1, 2, 3], n=3) == pytest.approx(1 / 4) and repetition_rate([1], n=3) == 0.0


def test_registry_binds_options_and_keeps_names():
    length = get_reward("length", max_chars=5)
    assert length.__name__ == "length_penalty" and length(["abcdefghij"]) == [-1.0]
    functions, classes, weights = reward_functions(
        {"accuracy": {"weight": 2}, "format": None, "length": {"max_chars": 5}}
    )
    assert [f.__name__ for f in functions] == ["accuracy", "think_format", "length_penalty"] and weights == [2, 1, 1]
    assert classes == [None] * 3
    with pytest.raises(LmforgeError, match="unknown reward 'acuracy'"):
        get_reward("acuracy")
    with pytest.raises(LmforgeError, match="rewards.length: no option 'max_tokens'"):
        get_reward("length", max_tokens=3)
    assert set(REWARDS) >= {"accuracy", "math_verify", "format", "length", "repetition", "reward_model"}


def test_reward_model_scores_prompt_and_completion(tmp_path):
    tokenizer = train_tokenizer(["What is two plus two? It is four. Hello there."] * 20, vocab_size=300)
    config = tiny_llama_config(tokenizer, hidden_size=32, layers=1, heads=2, kv_heads=1, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts = [[{"role": "user", "content": "What is two plus two?"}]] * 2
    completions = [[{"role": "assistant", "content": "It is four."}], [{"role": "assistant", "content": "Hello"}]]
    scores = get_reward("reward_model", path=str(tmp_path))(completions, prompts=prompts)
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores) and scores[0] != scores[1]
    # Scored one at a time or in a padded batch, a reply gets the same score.
    alone = reward_model(completions[1:], prompts=prompts[1:], path=str(tmp_path))
    assert alone[0] == pytest.approx(scores[1], abs=1e-5)
    # For GRPOTrainer the reward model is passed as a model with its tokenizer as processing class.
    functions, classes, weights = reward_functions({"reward_model": {"path": str(tmp_path), "weight": 0.5}})
    assert isinstance(functions[0], LlamaForSequenceClassification) and classes[0].pad_token == "<|pad|>"
    assert weights == [0.5]
