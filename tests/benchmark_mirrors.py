"""Tiny copies of the benchmarks in their Hub schema (the columns of Rowan/hellaswag, allenai/ai2_arc, baber/piqa,
cais/mmlu "all", tau/commonsense_qa, allenai/openbookqa, allenai/winogrande, openai/gsm8k, google/IFEval and
openai_humaneval), written as JSONL for `lmforge eval`'s `benchmarks.NAME.data`. Made-up rows: the tests check the
scoring, not the model."""

import json
from pathlib import Path


LETTERS = "ABCDE"
QUESTIONS = [
    ("Which is a fruit?", ["apple", "stone", "car", "cloud"], 0),
    ("What melts in the sun?", ["rock", "ice", "iron", "glass"], 1),
    ("Where do fish live?", ["trees", "sand", "water", "fire"], 2),
]


def rows(name: str) -> list[dict]:
    if name == "hellaswag":
        return [
            {
                "ind": i,
                "activity_label": "Cooking",
                "ctx_a": question,
                "ctx_b": "the answer is",
                "ctx": f"{question} the answer is",
                "endings": choices,
                "source_id": f"mirror~{i}",
                "split": "val",
                "split_type": "indomain",
                "label": str(answer),
            }
            for i, (question, choices, answer) in enumerate(QUESTIONS)
        ]
    if name in ("arc_easy", "arc_challenge"):
        return [
            {
                "id": f"Mirror_{i}",
                "question": question,
                "choices": {"text": choices, "label": list(LETTERS[: len(choices)])},
                "answerKey": LETTERS[answer],
            }
            for i, (question, choices, answer) in enumerate(QUESTIONS)
        ]
    if name == "piqa":
        return [{"goal": q, "sol1": c[0], "sol2": c[1], "label": int(a == 1)} for q, c, a in QUESTIONS]
    if name == "mmlu":
        return [{"question": q, "subject": "biology", "choices": c, "answer": a} for q, c, a in QUESTIONS]
    if name == "commonsense_qa":
        return [
            {
                "id": f"mirror{i}",
                "question": question,
                "question_concept": "thing",
                "choices": {"label": list(LETTERS), "text": [*choices, "nothing"]},
                "answerKey": LETTERS[answer],
            }
            for i, (question, choices, answer) in enumerate(QUESTIONS)
        ]
    if name == "openbookqa":
        return [
            {
                "id": f"mirror-{i}",
                "question_stem": question,
                "choices": {"text": choices, "label": list(LETTERS[:4])},
                "answerKey": LETTERS[answer],
            }
            for i, (question, choices, answer) in enumerate(QUESTIONS)
        ]
    if name == "winogrande":
        return [
            {
                "sentence": "The cup fell off the table because _ was slippery.",
                "option1": "the cup",
                "option2": "the table",
                "answer": "2",
            },
            {
                "sentence": "Ann gave Bea a book because _ had finished it.",
                "option1": "Ann",
                "option2": "Bea",
                "answer": "1",
            },
            {
                "sentence": "The ice melted in the sun because _ was warm.",
                "option1": "the ice",
                "option2": "the sun",
                "answer": "2",
            },
        ]
    if name == "gsm8k":
        return [
            {
                "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
                "answer": f"{a} + {b} = <<{a}+{b}={a + b}>>{a + b}\n#### {a + b}",
            }
            for a, b in [(2, 3), (4, 4), (5, 1), (3, 6), (7, 2), (1, 1), (6, 3)]
        ]
    if name == "ifeval":
        return [
            {
                "key": 1,
                "prompt": "Describe a river without using any commas.",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
            },
            {
                "key": 2,
                "prompt": "Write about rain in lowercase letters only.",
                "instruction_id_list": ["change_case:english_lowercase"],
                "kwargs": [{}],
            },
            {
                "key": 3,
                "prompt": "Name a fruit, in lowercase and without commas.",
                "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
                "kwargs": [{}, {}],
            },
        ]
    if name == "humaneval":
        return [
            {
                "task_id": f"Mirror/{i}",
                "prompt": f'def {entry}(a, b):\n    """{doc}"""\n',
                "canonical_solution": f"    return {body}\n",
                "test": f"def check(candidate):\n    assert candidate(2, 3) == {expected}\n",
                "entry_point": entry,
            }
            for i, (entry, doc, body, expected) in enumerate(
                [("add", "Sum of a and b.", "a + b", 5), ("mul", "Product of a and b.", "a * b", 6)]
            )
        ]
    raise KeyError(name)


def write_benchmarks(folder: Path, names) -> dict:
    """Each benchmark's rows in `folder/NAME.jsonl`; returns name -> {"data": path}, as a recipe's `benchmarks`."""
    folder.mkdir(parents=True, exist_ok=True)
    benchmarks = {}
    for name in names:
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows(name)))
        benchmarks[name] = {"data": str(path)}
    return benchmarks
