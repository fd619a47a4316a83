"""`lmforge eval`'s benchmarks (lmforge.lib.benchmarks, lm-eval in-process) on tiny Hub-schema mirrors, offline: the
default suite on a base model and an assistant trained from it, scores recomputed by hand from the model's own
log-likelihoods and replies, the benchmarks table with before/after rows, HumanEval's programs judged in the
sandbox, and bad input in one line."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmark_mirrors import rows, write_benchmarks
from lmforge import report
from lmforge.cli import main as lmforge
from lmforge.lib import benchmarks
from lmforge.lib.files import read_json
from lmforge.lib.tables import percent
from tiny import save_tiny_model


LIMIT = 3  # rows per benchmark
DOCUMENTS = [f"Document {i}: the river ran past the mill, and the miller counted {i * 7} sacks." * 3 for i in range(6)]


def one_line(*argv) -> str:
    """`lmforge eval argv`: the one line it exits with."""
    with pytest.raises(SystemExit) as exit:
        lmforge(["eval", *map(str, argv)])
    message = str(exit.value.code)
    assert message.startswith("lmforge eval: error: ") and "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("benchmarks")


@pytest.fixture(scope="module")
def recipe(root):
    """A base model and an "assistant" from the same tokenizer (random weights: the scores are what they are, and
    are checked by hand), held-out documents for bits per byte, the mirrors, and an eval recipe of them."""
    texts = [json.dumps(row) for name in benchmarks.SUITE for row in rows(name)] + DOCUMENTS
    save_tiny_model(root / "base", texts, end_of_turn=True)
    save_tiny_model(root / "assistant", texts, end_of_turn=True, seed=1)
    documents = [{"text": text, "id": f"doc{i}", "metadata": {"language": "en"}} for i, text in enumerate(DOCUMENTS)]
    pq.write_table(pa.Table.from_pylist(documents), root / "documents.parquet")
    suite = write_benchmarks(root / "data", [*benchmarks.DEFAULT_SUITE, "humaneval"])
    for name in ("gsm8k", "ifeval", "humaneval"):
        suite[name]["max_new_tokens"] = 16
    suite["gsm8k"] |= {"num_fewshot": 2, "note": "made-up rows"}
    settings = {
        "models": {
            "base": {"path": str(root / "base"), "kind": "base"},
            "assistant": {"path": str(root / "assistant"), "kind": "assistant", "from": "base"},
        },
        "output_dir": str(root / "out"),
        "documents": [str(root / "documents.parquet")],
        "heldout_fraction": 0.5,
        "arithmetic_problems": 0,
        "known_questions": [],
        "unknowable_questions": [],
        "tools": [],
        "max_new_tokens": 8,
        "samples": 1,
        "batch_size": 4,
        "benchmarks": suite,
        "benchmark_limit": LIMIT,
    }
    (root / "eval.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return root / "eval.yaml"


@pytest.fixture(scope="module")
def results(recipe, root):
    lmforge(["eval", "--config", str(recipe)])
    return read_json(root / "out" / "results.json")


def details(root, model: str, name: str) -> list[dict]:
    lines = (root / "out" / "samples" / model / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def log_likelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), the continuation's tokens being those that follow the context's."""
    context_ids = tokenizer(context)["input_ids"]
    ids = tokenizer(context + continuation)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    return sum(logits[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids)))


def hand_scores(root, model_name: str, name: str) -> list[float]:
    """The benchmark's rows scored by hand, in cloze form: the right answer has the highest log-likelihood per
    character (acc_norm), or, for Winogrande, the sentence's end is likeliest after the right option (acc)."""
    tokenizer = AutoTokenizer.from_pretrained(root / model_name)
    model = AutoModelForCausalLM.from_pretrained(root / model_name).eval()
    scores = []
    for row in rows(name)[:LIMIT]:
        if name == "hellaswag":
            context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
            choices, gold = row["endings"], int(row["label"])
        elif name == "winogrande":
            blank = row["sentence"].index("_")
            end = " " + row["sentence"][blank + 1 :].strip()
            likelihoods = [
                log_likelihood(model, tokenizer, row["sentence"][:blank] + row[o], end) for o in ("option1", "option2")
            ]
            scores.append(float(likelihoods.index(max(likelihoods)) == int(row["answer"]) - 1))
            continue
        else:  # arc_easy
            context = f"Question: {row['question']}\nAnswer:"
            choices, gold = row["choices"]["text"], "ABCD".index(row["answerKey"])
        normalised = [log_likelihood(model, tokenizer, context, f" {c}") / len(f" {c}") for c in choices]
        scores.append(float(normalised.index(max(normalised)) == gold))
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hellaswag", "arc_easy", "winogrande"])
def test_multiple_choice_scores_are_the_hand_computed_ones(results, root, name):
    for model in ("base", "assistant"):  # no chat template on loglikelihood sets: the same text for both
        by_hand = hand_scores(root, model, name)
        score = results["models"][model]["benchmarks"][name]
        assert score["score"] == pytest.approx(sum(by_hand) / len(by_hand))
        assert score["rows"] == LIMIT and score["num_fewshot"] == 0
        assert [row["acc_norm" if name != "winogrande" else "acc"] for row in details(root, model, name)] == by_hand


@pytest.mark.slow
def test_the_default_suite_runs_on_every_model(results):
    base, assistant = (results["models"][name]["benchmarks"] for name in ("base", "assistant"))
    assert set(assistant) == {*benchmarks.DEFAULT_SUITE, "humaneval"}
    assert set(base) == set(assistant) - {"ifeval"}  # a base model is not asked the chat benchmark
    for score in assistant.values():
        assert 0 <= score["score"] <= 1 and score["rows"] == (2 if score is assistant["humaneval"] else LIMIT)
    assert assistant["gsm8k"]["num_fewshot"] == 2 and assistant["mmlu"]["metric"] == "acc_norm,none"


@pytest.mark.slow
def test_generated_answers_are_scored_as_by_hand(results, root):
    """GSM8K: the last number of the reply against the one after "####"; IFEval: no comma, all lowercase."""
    for model in ("base", "assistant"):
        scored = [r for r in details(root, model, "gsm8k") if r["filter"] == "flexible-extract"]
        right = []
        for row in scored:
            numbers = re.findall(r"-?[$0-9.,]{2,}|-?[0-9]+", row["resps"][0][0])
            right.append(bool(numbers) and numbers[-1].strip("$.,") == row["doc"]["answer"].split("#### ")[-1])
        assert results["models"][model]["benchmarks"]["gsm8k"]["score"] == pytest.approx(sum(right) / len(right))
    # The assistant's prompts went through its chat template, the base model's did not.
    assert "<|im_start|>user" in details(root, "assistant", "gsm8k")[0]["arguments"][0][0]
    assert "<|im_start|>" not in details(root, "base", "gsm8k")[0]["arguments"][0][0]
    checks = {
        "punctuation:no_comma": lambda t: "," not in t,
        "change_case:english_lowercase": lambda t: t == t.lower(),
    }
    followed = [
        all(checks[instruction](row["resps"][0][0]) for instruction in row["doc"]["instruction_id_list"])
        for row in details(root, "assistant", "ifeval")
    ]
    assert results["models"]["assistant"]["benchmarks"]["ifeval"]["score"] == pytest.approx(sum(followed) / 3)


@pytest.mark.slow
def test_the_table_has_a_column_per_model_and_before_after_rows(results, root):
    table = (root / "out" / "table.md").read_text()
    assert "| benchmark | metric | n-shot | rows | base (base) | assistant (assistant) |" in table
    ifeval = results["models"]["assistant"]["benchmarks"]["ifeval"]
    assert f"| ifeval | prompt_level_strict_acc | 0 | 3 | – | {percent(ifeval)} |" in table
    hellaswag = (
        results["models"]["assistant"]["benchmarks"]["hellaswag"],
        results["models"]["base"]["benchmarks"]["hellaswag"],
    )
    change = f"{100 * (hellaswag[0]['score'] - hellaswag[1]['score']):+.1f}"
    assert any(
        line.startswith("| base → assistant | hellaswag |") and line.endswith(f"| {change} |")
        for line in table.splitlines()
    )
    assert "- gsm8k: made-up rows" in table
    lines, _, summary = report.eval_section(results, 1)  # the report embeds the same tables
    assert "\n".join(lines) == table.rstrip("\n") and f"assistant IFEval {percent(ifeval)} %" in summary


def test_humaneval_runs_the_programs_in_the_sandbox():
    problem = rows("humaneval")[0]
    assert benchmarks.sandboxed_pass_at_1(problem, [problem["canonical_solution"]]) == {"pass@1": 1.0}
    assert benchmarks.sandboxed_pass_at_1(problem, ["    return a - b\n"]) == {"pass@1": 0.0}
    escape = "    import socket; socket.create_connection(('1.1.1.1', 53)); return a + b\n"
    assert benchmarks.sandboxed_pass_at_1(problem, [escape]) == {"pass@1": 0.0}


@pytest.mark.slow
def test_models_flag_gives_the_table(results, root, capsys):
    models = json.dumps({"m": {"path": str(root / "assistant"), "kind": "assistant"}})
    suite = json.dumps({"ifeval": {"data": str(root / "data" / "ifeval.jsonl"), "max_new_tokens": 8}})
    lmforge(
        [
            "eval",
            "--config",
            str(root / "eval.yaml"),
            "--models",
            models,
            "--benchmarks",
            suite,
            "--output_dir",
            str(root / "m"),
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "| benchmark | metric | n-shot | rows | m (assistant) |" in printed
        and "| ifeval | prompt_level_strict_acc | 0 | 3 |" in printed
    )


def test_bad_benchmark_input_is_one_line(recipe, root):
    assert "benchmarks.hellaswag2: unknown benchmark" in one_line(
        "--config", recipe, "--benchmarks", '{"hellaswag2": {}}'
    )
    missing = json.dumps({"gsm8k": {"data": str(root / "no.jsonl")}})
    assert f"benchmarks.gsm8k.data: {root / 'no.jsonl'} not found" in one_line(
        "--config", recipe, "--benchmarks", missing
    )
    assert "benchmarks.piqa: the Hub is offline" in one_line("--config", recipe, "--benchmarks", '{"piqa": {}}')
    # An assistant whose tokenizer has no chat template, asked IFEval.
    tokenizer = AutoTokenizer.from_pretrained(root / "assistant")
    tokenizer.chat_template = None
    AutoModelForCausalLM.from_pretrained(root / "assistant").save_pretrained(root / "no_template")
    tokenizer.save_pretrained(root / "no_template")
    (root / "no_template" / "chat_template.jinja").unlink(missing_ok=True)
    models = json.dumps({"m": {"path": str(root / "no_template"), "kind": "assistant"}})
    suite = json.dumps({"ifeval": {"data": str(root / "data" / "ifeval.jsonl")}})
    message = one_line("--config", recipe, "--models", models, "--benchmarks", suite, "--output_dir", root / "nt")
    assert "benchmarks: gsm8k, ifeval need a chat template" not in message and "ifeval need a chat template" in message
