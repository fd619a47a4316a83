"""The eval stage on tiny models with planted behaviour: bits per byte equals the value recomputed from the model's
own loss, an assistant taught a fixed answer scores exactly the share of problems with that answer, a reply that
opens the user's turn is caught, assistants are compared with tools off and on, a base model answers the
assistants' sample questions few-shot, a reward model that likes one word ranks pairs by it, and missing models
are skipped with a note."""

import json
import math
from collections import Counter
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForCausalLM, LlamaForCausalLM, LlamaForSequenceClassification

from lmforge import LmforgeError
from lmforge import eval as lmforge_eval
from lmforge.lib import chat_format, fewshot
from lmforge.lib.answers import taught_accuracy
from lmforge.lib.configs import parse
from lmforge.lib.conversations import arithmetic
from lmforge.lib.documents import is_heldout, iter_documents
from lmforge.lib.metrics import load_metric
from lmforge.lib.tools.generation import heldout_problems
from lmforge.tokenizer import encode_text, train_tokenizer
from tiny import memorize, save_liking_reward_model, tiny_llama_config


SEED = 3000  # the recipe's arithmetic_seed
PROBLEMS = arithmetic.problems(12, SEED)
ANSWER = Counter(p["answer"] for p in PROBLEMS).most_common(1)[0][0]  # the planted model's one answer
KNOWN = [
    {"question": "What does the shop answer?", "answer": f"Final answer: {ANSWER}"},
    {"question": "Who created Python?", "answer": "Guido van Rossum"},
]
UNKNOWABLE = ["What did I eat this morning?", "What number am I thinking of?"]
DOCUMENTS = [
    f"Document {i}: the river ran past the mill, and the miller counted {i * 7} sacks of grain." * 3 for i in range(8)
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p["question"] + " " + p["solution"] for p in arithmetic.problems(200, 0)] + DOCUMENTS
    texts += [q["question"] + " " + q["answer"] for q in KNOWN] + UNKNOWABLE + ["I don't know."]
    texts += ["yes no " * 50]  # whole-word tokens for the planted reward model
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="module")
def inputs(root):
    """The data stage's documents, question files and the eval recipe's options, all small."""
    rows = [{"text": text, "id": f"doc{i}", "metadata": {"language": "en"}} for i, text in enumerate(DOCUMENTS)]
    pq.write_table(pa.Table.from_pylist(rows), root / "documents.parquet")
    (root / "known.jsonl").write_text("".join(json.dumps(q) + "\n" for q in KNOWN))
    (root / "unknowable.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in UNKNOWABLE))
    return [
        "--documents",
        str(root / "documents.parquet"),
        "--heldout_fraction",
        "0.5",
        "--max_length",
        "512",
        "--arithmetic_problems",
        str(len(PROBLEMS)),
        "--arithmetic_seed",
        str(SEED),
        "--known_questions",
        str(root / "known.jsonl"),
        "--unknowable_questions",
        str(root / "unknowable.jsonl"),
        "--max_new_tokens",
        "24",
        "--batch_size",
        "4",
        "--samples",
        "1",
        "--tools",
        "python",
        "--tool_problems",
        "4",
        "--identity_name",
        "",
        "--sums_problems",
        "0",
        "--benchmarks",
        "{}",  # the recipe's IFEval: tests/test_benchmarks.py
    ]


def save(model, tokenizer, path):
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def base_model(root, tokenizer):
    torch.manual_seed(0)
    return save(LlamaForCausalLM(tiny_llama_config(tokenizer)), tokenizer, root / "base")


def chat_model(path, tokenizer, reply: str):
    """A tiny assistant trained to give `reply` to any question, ended by the chat template's <|im_end|>."""
    questions = [p["question"] for p in arithmetic.problems(12, 7)] + [q["question"] for q in KNOWN] + UNKNOWABLE
    answer = tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]  # specials as tokens
    examples = [
        (
            tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)[
                "input_ids"
            ],
            answer,
        )
        for question in questions
    ]
    return save(memorize(tokenizer, examples), tokenizer, path)


@pytest.fixture(scope="module")
def answering_model(root, tokenizer):
    return chat_model(root / "answering", tokenizer, f"Final answer: {ANSWER}")


@pytest.fixture(scope="module")
def leaking_model(root, tokenizer):
    """Refuses, then writes the user's next turn itself."""
    return chat_model(root / "leaking", tokenizer, "I don't know.<|im_start|>user\nthanks")


def liked_tokens(tokenizer):
    return [tokenizer.convert_tokens_to_ids(token) for token in ("yes", "Ġyes")]  # "Ġ": byte-level BPE's space


@pytest.fixture(scope="module")
def reward_model(root, tokenizer):
    """A reward model that likes the word "yes" (tiny.save_liking_reward_model): high scores only for "yes"."""
    assert tokenizer.convert_ids_to_tokens(liked_tokens(tokenizer)) == ["yes", "Ġyes"]
    return save_liking_reward_model(root / "reward", tokenizer, liked_tokens(tokenizer))


@pytest.fixture(scope="module")
def preferences(root):
    """Pairs shaped like `lmforge label --export`'s: "yes" chosen over "no", and the same pairs reversed."""

    def pairs(chosen, rejected):
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": p["question"]}],
                    "chosen": [{"role": "assistant", "content": f"{chosen} " * (1 + i % 3)}],
                    "rejected": [{"role": "assistant", "content": f"{rejected} " * (1 + i % 3)}],
                    "source": "judge",
                    "prompt_id": i,
                }
                for i, p in enumerate(PROBLEMS[:6])
            ]
        )

    DatasetDict({"train": pairs("yes", "no"), "test": pairs("yes", "no")}).save_to_disk(root / "right")
    DatasetDict({"train": pairs("yes", "no"), "test": pairs("no", "yes")}).save_to_disk(root / "reversed")
    return root


@pytest.fixture(scope="module")
def argv(root, inputs, base_model, answering_model, leaking_model, reward_model, preferences):
    models = {
        "base": {"path": str(base_model), "kind": "base"},
        "answering": {"path": str(answering_model), "kind": "assistant"},
        "leaking": {"path": str(leaking_model), "kind": "assistant"},
        "reward": {"path": str(reward_model), "kind": "reward"},
        "not_trained": {"path": str(root / "ppo"), "kind": "assistant"},
    }
    return [
        "--config",
        "recipes/demo/eval.yaml",
        "--models",
        json.dumps(models),
        "--output_dir",
        str(root / "out"),
        "--reward_model",
        str(reward_model),
        "--preferences",
        str(root / "right"),
        *inputs,
    ]


@pytest.fixture(scope="module")
def results(argv):
    return lmforge_eval.main(*parse(lmforge_eval.CONFIGS, argv))


@pytest.mark.slow
def test_bits_per_byte_is_the_models_loss_per_byte(results, base_model, tokenizer):
    heldout = [text for i, text in enumerate(DOCUMENTS) if is_heldout(f"doc{i}", 0.5)]
    assert 0 < len(heldout) < len(DOCUMENTS)
    model = AutoModelForCausalLM.from_pretrained(base_model).eval()
    nats = 0.0
    for ids in encode_text(tokenizer, heldout):  # each document fits one window: its own <|bos|> and tokens
        ids = torch.tensor([[tokenizer.bos_token_id, *ids]])
        with torch.no_grad():
            nats += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)  # mean over the predicted tokens
    by_hand = nats / math.log(2) / sum(len(text.encode()) for text in heldout)
    assert results["models"]["base"]["metrics"]["bits_per_byte"] == pytest.approx(by_hand, rel=1e-4)
    assert set(results["models"]["base"]["metrics"]) == {"bits_per_byte"}  # no chat metrics for a base model


def test_windows_predict_every_token_once():
    ids = list(range(1, 41))
    windows = lmforge_eval.text_windows([ids], bos_token_id=0, length=16)
    assert all(len(window) <= 16 for window in windows)
    assert [token for window in windows for token in window[1:]] == ids


@pytest.mark.slow
def test_a_planted_answer_scores_exactly_its_share(results):
    metrics = results["models"]["answering"]["metrics"]
    assert metrics["arithmetic_accuracy"] == sum(p["answer"] == ANSWER for p in PROBLEMS) / len(PROBLEMS) > 0
    assert metrics["compliance"] == metrics["ended_turn"] == 1.0 and metrics["role_leakage"] == 0.0
    assert metrics["answer_rate_known"] == 0.5  # the one known question whose answer is its fixed reply
    assert metrics["refusal_rate_unknowable"] == 0.0 and metrics["refusal_rate_known"] == 0.0
    samples = results["models"]["answering"]["samples"]
    assert {s["task"] for s in samples} == {"arithmetic", "known", "unknowable", "tools"}
    assert samples[0]["reply"] == f"Final answer: {ANSWER}<|im_end|>"


@pytest.mark.slow
def test_a_reply_that_opens_the_users_turn_is_not_compliant(results):
    metrics = results["models"]["leaking"]["metrics"]
    assert metrics["role_leakage"] == 1.0 and metrics["compliance"] == 0.0
    assert metrics["refusal_rate_unknowable"] == 1.0 and metrics["refusal_rate_known"] == 1.0
    assert metrics["answer_rate_known"] == 0.0 and metrics["arithmetic_accuracy"] == 0.0
    assert results["models"]["leaking"]["samples"][0]["reply"] == "I don't know.<|im_start|>user\nthanks<|im_end|>"


@pytest.mark.slow
def test_assistants_are_compared_with_tools_off_and_on(results):
    problems = heldout_problems(4, 3001)  # the recipe's tool_seed
    # Neither model ever writes <|tool_call|>: the same accuracy with tools on and off, its planted answer's share.
    share = {"answering": sum(p["answer"] == ANSWER for p in problems) / len(problems), "leaking": 0.0}
    assert 0 < share["answering"] < 1
    for name in ("answering", "leaking"):
        result = results["models"][name]
        metrics = result["metrics"]
        assert metrics["tool_accuracy_off"] == metrics["tool_accuracy_on"] == share[name]
        assert metrics["tool_calls_per_reply"] == 0.0
        assert result["tools"]["on"]["tools"] == ["python"] and result["tools"]["off"]["rows"] == len(problems)
        assert metrics["tool_accuracy_on"] == result["tools"]["on"]["accuracy"]
        tools = [sample for sample in result["samples"] if sample["task"] == "tools"]
        assert [sample["prompt"] for sample in tools] == [problems[0]["question"]]  # samples: 1
    assert results["models"]["base"]["tools"] is None


@pytest.mark.slow
def test_a_base_model_answers_the_assistants_questions_few_shot(results):
    asked = [s["prompt"] for s in results["models"]["answering"]["samples"] if s["task"] != "tools"]
    few_shot = [s for s in results["models"]["base"]["samples"] if s["task"] == "few-shot chat"]
    assert [s["prompt"] for s in few_shot] == asked and len(asked) == 3  # one per task
    assert all(fewshot.STOP not in s["reply"] and s["reply"] == fewshot.reply_text(s["reply"]) for s in few_shot)
    samples = results["models"]["base"]["samples"]
    tasks = [s["task"] for s in samples]
    assert tasks.count("continuation (documents)") == tasks.count("continuation (text_files)") == 1
    # The recipe's books: a held-out chunk opens the second continuation (the first is a held-out document).
    book = next(s for s in samples if s["task"] == "continuation (text_files)")
    chunks = iter_documents([], ["data/demo/books/*.txt.gz"])
    assert any(is_heldout(c["id"], 0.5) and c["text"].startswith(book["prompt"]) for c in chunks)


def test_taught_accuracy_on_planted_replies():
    rows = [
        {"task": "identity", "reference": "Forge"},
        {"task": "identity", "reference": "Forge"},
        {"task": "sums_1", "reference": "7"},
        {"task": "sums_1", "reference": "9"},
        {"task": "sums_2", "reference": "55"},
        {"task": "unknowable", "reference": ""},
    ]
    texts = [
        "I'm Forge.",
        "I'm Forgery, a model.",
        "3 + 4 = 7.\nFinal answer: 7",
        "4 + 5 = 9.\nFinal answer: 8",
        "Final answer: 55",
        "I don't know.",
    ]
    assert taught_accuracy(rows, texts) == {
        "identity_accuracy": 0.5,
        "sums_1_accuracy": 0.5,
        "sums_2_accuracy": 1.0,
        "known_answer_rate": 0.5,
    }


def test_compliance_metric_on_planted_replies():
    metric = load_metric("chat_compliance")
    replies = [
        "Final answer: 4<|im_end|>",
        "4\nUser: and 5?<|im_end|>",
        "4<|im_start|>assistant\n5<|im_end|>",
        "4<|endoftext|>",
        "a reply cut off by the length lim",
    ]
    assert metric.compute(replies=replies) == {"compliance": 0.2, "ended_turn": 0.6, "role_leakage": 0.4}


@pytest.mark.slow
def test_reward_model_pairwise_accuracy(results, root, inputs, reward_model, tokenizer):
    metrics = results["models"]["reward"]["metrics"]
    assert metrics["pairwise_accuracy"] == 1.0 and metrics["pairs"] == 6
    # The margin recomputed one text at a time, without batching or padding, where PPO reads it.
    model = LlamaForSequenceClassification.from_pretrained(reward_model).eval()
    pairs = DatasetDict.load_from_disk(root / "right")["test"]

    def score(prompt, reply):
        ids = torch.tensor([chat_format.scored_ids(tokenizer, prompt + reply)])  # read at the reply's end of turn
        with torch.no_grad():
            return model(ids).logits[0, 0].item()

    margins = [score(p["prompt"], p["chosen"]) - score(p["prompt"], p["rejected"]) for p in pairs]
    assert metrics["mean_margin"] == pytest.approx(sum(margins) / len(margins), rel=1e-4)
    # Every assistant reply got a reward-model score.
    assert all(
        isinstance(results["models"][name]["metrics"]["reward_model_score"], float)
        for name in ("answering", "leaking")
    )

    reversed_argv = [
        "--config",
        "recipes/demo/eval.yaml",
        "--output_dir",
        str(root / "reversed_out"),
        "--models",
        json.dumps({"reward": {"path": str(reward_model), "kind": "reward"}}),
        "--preferences",
        str(root / "reversed"),
        *inputs,
    ]
    reversed_results = lmforge_eval.main(*parse(lmforge_eval.CONFIGS, reversed_argv))
    assert reversed_results["models"]["reward"]["metrics"]["pairwise_accuracy"] == 0.0


@pytest.mark.slow
def test_missing_models_are_skipped_and_results_are_saved(results, root):
    assert "not_trained" in results["skipped"] and "not_trained" not in results["models"]
    saved = json.loads((root / "out" / "results.json").read_text())
    assert list(saved["models"]) == ["base", "answering", "leaking", "reward"]
    table = (root / "out" / "table.md").read_text()
    header = table.splitlines()[0]
    assert all(f"{name} (" in header for name in saved["models"]) and "not_trained: not evaluated" in table
    assert json.loads((root / "out" / "base.json").read_text())["metrics"] == saved["models"]["base"]["metrics"]


@pytest.mark.slow
def test_a_rerun_reuses_unchanged_models(results, argv, capsys):
    again = lmforge_eval.main(*parse(lmforge_eval.CONFIGS, argv))
    printed = capsys.readouterr().out
    assert all(f"{name}: unchanged" in printed for name in results["models"])
    assert again == results
    # Other settings: measured anew. Replies cut by the length limit have not ended their turn; no tools listed,
    # no comparison.
    (config,) = parse(lmforge_eval.CONFIGS, argv + ["--max_new_tokens", "3"])
    changed = lmforge_eval.main(replace(config, tools=[]))
    assert changed["models"]["answering"]["metrics"]["ended_turn"] == 0.0
    assert changed["models"]["answering"]["tools"] is None
    assert not any(key.startswith("tool_") for key in changed["models"]["answering"]["metrics"])


def test_bad_model_lists_are_named():
    with pytest.raises(LmforgeError, match="models.sft: needs a path and a kind"):
        lmforge_eval.EvalConfig(models={"sft": {"path": "runs/demo/sft", "kind": "chat"}})
