"""Every stage that reads rows, on every kind of source and every format it takes (issue 22): the same questions and
answers, written as JSONL, CSV, Parquet, Arrow, a saved dataset, a folder, a glob, a Hub repo ..., reach each stage
as the same rows. Each stage is entered where it reads its data (the function its `main` calls), so no model is
needed; the stages' own tests train on such sources (test_sft, test_reward, test_rl, test_rollouts, test_label,
test_tokenizer)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset

from hub_server import HubServer
from lmforge import LmforgeError, rollouts
from lmforge.label import load_rollouts
from lmforge.lib.conversations import load_conversations
from lmforge.lib.documents import iter_documents
from lmforge.lib.rewards import ANSWER_INSTRUCTION, verifiable_prompts
from lmforge.lib.sources import in_heldout, load_pairs, load_questions
from lmforge.lib.writing import load_prompts
from test_sources import SOURCES, csv_file, jsonl_file, parquet_glob


QUESTIONS = [(f"What is {i} plus two?", f"The answer is {i + 2}.") for i in range(12)]
WRONG = "No idea."


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# Each format (TRL's, standard or conversational, and lmforge's question files), as a row of one question.
FORMATS = {
    "language modeling": lambda q, a: {"text": f"{q} {a}"},
    "conversational": lambda q, a: {"messages": user(q) + assistant(a)},
    "prompt-only": lambda q, a: {"prompt": q},
    "prompt-only (conversational)": lambda q, a: {"prompt": user(q)},
    "prompt-completion": lambda q, a: {"prompt": q, "completion": a},
    "prompt-completion (conversational)": lambda q, a: {"prompt": user(q), "completion": assistant(a)},
    "prompt with an answer": lambda q, a: {"prompt": q, "answer": a},
    "prompt with an answer (conversational)": lambda q, a: {"prompt": user(q), "answer": a},
    "problem-solution": lambda q, a: {"problem": q, "solution": a},
    "preference": lambda q, a: {"prompt": q, "chosen": a, "rejected": WRONG},
    "preference (conversational)": lambda q, a: {
        "prompt": user(q),
        "chosen": assistant(a),
        "rejected": assistant(WRONG),
    },
    "preference (implicit prompt)": lambda q, a: {"chosen": f"{q} {a}", "rejected": f"{q} {WRONG}"},
    "preference (implicit prompt, conversational)": lambda q, a: {
        "chosen": user(q) + assistant(a),
        "rejected": user(q) + assistant(WRONG),
    },
    "question-answer": lambda q, a: {"question": q, "answer": a},
    "question-answer (GSM8K)": lambda q, a: {"question": q, "answer": f"Two more.\n#### {a.split()[-1].rstrip('.')}"},
    "question": lambda q, a: {"question": q},
    "rollouts": lambda q, a: {"prompt": q, "responses": [a, WRONG]},
    "rollouts (conversational)": lambda q, a: {"prompt": user(q), "responses": [a, WRONG]},
}


def rows_in(fmt: str) -> list[dict]:
    return [FORMATS[fmt](q, a) for q, a in QUESTIONS]


# --- each stage where it reads its rows, and what it must read from the questions above ---


def as_mapping(spec):
    return spec if isinstance(spec, dict) else {"path": spec}


def as_text(spec):  # a recipe field that holds one string: a mapping is given as JSON
    return spec if isinstance(spec, str) else json.dumps(spec)


def by_json(items) -> list:
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


def sft(spec):
    train, _, _ = load_conversations({"mine": as_mapping(spec)}, tokenizer=None, max_length=None)
    return by_json(train["messages"])


def sft_expected(fmt):
    return by_json(user(q) + assistant(a) for q, a in QUESTIONS)


def rollouts_prompts(spec):
    return by_json([row["prompt"], row["reference"]] for row in rollouts.load_prompts({"mine": as_mapping(spec)}))


def rollouts_expected(fmt):
    return by_json([user(q), None if fmt.startswith("prompt-only") else a] for q, a in QUESTIONS)


def writing_prompts(spec):
    return by_json(row["prompt"] for row in load_prompts({"mine": as_mapping(spec)}, "", seed=0))


def writing_expected(fmt):
    return by_json(user(q) for q, _ in QUESTIONS)


def pairs(spec):
    splits, _ = load_pairs(spec)
    return by_json(splits["train"].select_columns(["prompt", "chosen", "rejected"]).to_list())


def pairs_expected(fmt):
    if "conversational" in fmt:
        return by_json({"prompt": user(q), "chosen": assistant(a), "rejected": assistant(WRONG)} for q, a in QUESTIONS)
    space = " " if "implicit" in fmt else ""  # TRL's prompt extraction leaves the space on the replies
    return by_json({"prompt": q, "chosen": space + a, "rejected": space + WRONG} for q, a in QUESTIONS)


def problems(spec):
    rows = verifiable_prompts({"mine": as_mapping(spec)})
    return by_json([row["prompt"], row["answer"]] for row in rows)


def problems_expected(fmt):
    conversational = "conversational" in fmt
    return by_json(
        [
            user(q) if conversational else user(q + ANSWER_INSTRUCTION),
            a.split()[-1].rstrip(".") if "GSM8K" in fmt else a,
        ]
        for q, a in QUESTIONS
        if not in_heldout({"question": user(q) if conversational else q}, 0.05)  # GRPO's default held-out share
    )


def known_questions(spec):
    return by_json(load_questions(spec, "known_questions"))


def known_expected(fmt):
    return by_json({"question": q, "answer": a.split()[-1].rstrip(".") if "GSM8K" in fmt else a} for q, a in QUESTIONS)


def unknowable_questions(spec):
    return by_json(load_questions(spec, "unknowable_questions", answers=False))


def unknowable_expected(fmt):
    return by_json({"question": q} for q, _ in QUESTIONS)


def label_rollouts(spec):
    return by_json([row["prompt"], row["responses"]] for row in load_rollouts(as_text(spec)))


def label_expected(fmt):
    return by_json([user(q), [a, WRONG]] for q, a in QUESTIONS)


def documents(spec):
    return sorted(document["text"] for document in iter_documents([as_text(spec)], []))


def documents_expected(fmt):
    return sorted(f"{q} {a}" for q, a in QUESTIONS)


# stage (where it reads) -> (read, expected, the formats it takes); the first format is standard (text), so that
# every kind of source, CSV included, can hold it.
STAGES = {
    "sft datasets": (sft, sft_expected, ["prompt-completion", "prompt-completion (conversational)", "conversational"]),
    "rollouts prompts": (
        rollouts_prompts,
        rollouts_expected,
        [
            "prompt-only",
            "prompt-only (conversational)",
            "prompt-completion",
            "prompt-completion (conversational)",
            "conversational",
        ],
    ),
    "writing prompts": (
        writing_prompts,
        writing_expected,
        [
            "prompt-only",
            "prompt-only (conversational)",
            "prompt-completion",
            "prompt-completion (conversational)",
            "conversational",
        ],
    ),
    "reward/dpo/eval preferences": (
        pairs,
        pairs_expected,
        [
            "preference",
            "preference (conversational)",
            "preference (implicit prompt)",
            "preference (implicit prompt, conversational)",
        ],
    ),
    "grpo/ppo tasks": (
        problems,
        problems_expected,
        [
            "question-answer (GSM8K)",
            "question-answer",
            "prompt with an answer",
            "prompt with an answer (conversational)",
            "prompt-completion",
            "prompt-completion (conversational)",
            "problem-solution",
        ],
    ),
    "interrogate/eval known questions": (
        known_questions,
        known_expected,
        [
            "question-answer",
            "question-answer (GSM8K)",
            "prompt-completion",
            "prompt-completion (conversational)",
            "conversational",
        ],
    ),
    "eval unknowable questions": (
        unknowable_questions,
        unknowable_expected,
        ["question", "prompt-only", "prompt-only (conversational)", "question-answer", "conversational"],
    ),
    "label rollouts": (label_rollouts, label_expected, ["rollouts", "rollouts (conversational)"]),
    "tokenizer/pack/eval documents": (documents, documents_expected, ["language modeling"]),
}


# --- every kind of source ---


def other_column_names(rows, root):
    renamed = [{f"my_{column}": value for column, value in row.items()} for row in rows]
    return {"path": jsonl_file(renamed, root), "columns": {f"my_{column}": column for column in rows[0]}}


KINDS = [*SOURCES, other_column_names]


@pytest.mark.parametrize("kind", KINDS, ids=[kind.__name__ for kind in KINDS])
@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_reads_every_kind_of_source(stage, kind, tmp_path):
    read, expected, formats = STAGES[stage]
    rows = rows_in(formats[0])
    if kind is csv_file and any(not isinstance(value, str) for row in rows for value in row.values()):
        # a CSV cell holds text only: a list of replies comes back as its text, and is named
        with pytest.raises(LmforgeError, match=r"\.csv split train row 0: column '\w+' holds .* expected"):
            read(kind(rows, tmp_path))
        return
    assert read(kind(rows, tmp_path)) == expected(formats[0])


@pytest.mark.parametrize("kind", [jsonl_file, parquet_glob], ids=["jsonl", "parquet"])
@pytest.mark.parametrize("stage, fmt", [(stage, fmt) for stage, (_, _, formats) in STAGES.items() for fmt in formats])
def test_every_stage_reads_every_format_it_takes(stage, fmt, kind, tmp_path):
    read, expected, _ = STAGES[stage]
    assert read(kind(rows_in(fmt), tmp_path)) == expected(fmt)


@pytest.mark.slow  # a subprocess that imports every stage: 7 s
def test_every_stage_reads_a_hub_dataset(tmp_path):
    """Each stage's rows as a Hub dataset (`user/<format>`, Parquet shards as the Hub stores them) through the
    loopback Hub, in one subprocess: huggingface_hub reads HF_ENDPOINT when it is imported."""
    cases = {}
    for stage, (_, _, formats) in STAGES.items():
        for fmt in (formats[0], formats[-1]):
            repo = "user/" + "-".join(re.findall(r"[a-z0-9]+", fmt.lower()))
            folder = tmp_path / "datasets" / repo / "data"
            if not folder.exists():
                folder.mkdir(parents=True)
                Dataset.from_list(rows_in(fmt)).to_parquet(folder / "train-00000-of-00001.parquet")
            cases[f"{stage}: {fmt}"] = (stage, fmt, repo)
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_stage_sources import STAGES\n"
        "cases = json.loads(sys.argv[1])\n"
        "print(json.dumps({case: STAGES[stage][0](repo) for case, (stage, fmt, repo) in cases.items()}))\n"
    )
    with HubServer(mirrors=tmp_path) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.splitlines()[-1])
    for case, (stage, fmt, _) in cases.items():
        assert read[case] == json.loads(json.dumps(STAGES[stage][1](fmt))), case
