"""A skill ladder of sums, written as `a + b = c.` and closed by `Final answer: c`.

    level 1   two single digits            (3 + 5)
    level 2   a two-digit and a one-digit  (47 + 8)
    level 3   two two-digit numbers        (47 + 38)

Each sum is asked in one of several phrasings. Every question belongs to the training side or to the held-out side
of a fixed split (a hash of the question text, `is_heldout`), whatever the seed: `problems(..., heldout=True)` gives
questions no training set ever contains, so a model is measured on phrasings of sums it was never shown. At level 1
the hundred facts themselves are shared by both sides (there are no others): what is held out is the question.
"""

import hashlib
import random

from lmforge import LmforgeError


PHRASINGS = [
    "What is {a} + {b}?",
    "What is {a} plus {b}?",
    "Add {a} and {b}.",
    "{a} + {b} = ?",
    "Compute {a} + {b}.",
    "How much is {a} plus {b}?",
    "Calculate {a}+{b}.",
    "What's the sum of {a} and {b}?",
    "{a} plus {b}?",
    "Please add {a} and {b}.",
]
LEVELS = {1: (range(0, 10), range(0, 10)), 2: (range(10, 100), range(0, 10)), 3: (range(10, 100), range(10, 100))}
HELDOUT_SHARE = 64  # of 256: a quarter of all questions is held out


def is_heldout(question: str) -> bool:
    """Whether a question is on the held-out side of the split: the same answer on every machine and run."""
    return hashlib.sha256(question.encode()).digest()[0] < HELDOUT_SHARE


def problem(a: int, b: int, phrasing: str) -> dict:
    question = phrasing.format(a=a, b=b)
    return {"question": question, "solution": f"{a} + {b} = {a + b}.\nFinal answer: {a + b}", "answer": a + b}


def all_questions(level: int, heldout: bool) -> list[tuple[int, int, str]]:
    """Every (a, b, phrasing) of a level on one side of the split (only level 1 is small enough to list)."""
    left, right = LEVELS[level]
    return [(a, b, p) for a in left for b in right for p in PHRASINGS if is_heldout(p.format(a=a, b=b)) == heldout]


def problems(size: int = 300, seed: int = 0, level: int = 1, heldout: bool = False) -> list[dict]:
    """`size` problems of one level, the same for the same seed: question, solution, answer. Level 1 is drawn
    without replacement while its side of the split lasts (then the questions repeat); levels 2-3 at random."""
    if level not in LEVELS:
        raise LmforgeError(f"sums: level {level} is not one of {sorted(LEVELS)}")
    rng = random.Random(seed)
    if level == 1:
        pool = all_questions(level, heldout)
        drawn = []
        while len(drawn) < size:
            drawn += rng.sample(pool, min(len(pool), size - len(drawn)))
        return [problem(a, b, p) for a, b, p in drawn]
    left, right = LEVELS[level]
    rows = []
    while len(rows) < size:
        a, b, phrasing = rng.choice(left), rng.choice(right), rng.choice(PHRASINGS)
        if is_heldout(phrasing.format(a=a, b=b)) == heldout:
            rows.append(problem(a, b, phrasing))
    return rows


def conversations(size: int = 300, seed: int = 0, level: int = 1) -> list:
    """Training conversations of one level (never a held-out question)."""
    return [
        [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["solution"]}]
        for row in problems(size, seed, level)
    ]
