"""Questions and answers of the Python FAQ (PSF licence), shipped in data/demo/python_faq.jsonl.

Each row has `question`, `answer` (the first sentence of the FAQ's answer: short enough to check a
model's reply against) and `detail` (the rest of the answer's first paragraph). The file is built from
Python's documentation sources by data/demo/build_python_faq.py. The same rows serve `lmforge
interrogate` as known-answer questions.
"""

import json
import random
from pathlib import Path

from lmforge import LmforgeError


def read_pairs(path: str) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{path}: question file not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if not row.get("question") or not row.get("answer"):
                raise LmforgeError(f"{path} line {number}: needs non-empty 'question' and 'answer'")
            rows.append(row)
    return rows


def conversations(size: int | None = None, seed: int = 0, path: str = "data/demo/python_faq.jsonl") -> list:
    rows = read_pairs(path)
    if size is not None:
        rows = random.Random(seed).sample(rows, min(size, len(rows)))
    return [
        [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": " ".join(filter(None, [row["answer"], row.get("detail")]))},
        ]
        for row in rows
    ]
