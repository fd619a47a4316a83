"""Automatic judges: rank rollouts without people, by verifiable answers and simple rules.

A judge takes one response (its text, whether it ended its turn) and its rollout row (prompt, task,
reference) and returns a score in [0, 1], or None when it cannot judge that prompt (the arithmetic
judge on a question about identity). The ranker sums each judge's score times its weight from the
recipe, e.g. `judges: {arithmetic: 4.0, format: 1.0, repetition: 1.0, length: 0.5}`: a verified answer
outweighs style. Responses with equal totals are tied, and a tie is no preference (see label.export).
"""

import re

from lmforge import LmforgeError
from lmforge.lib.conversations import arithmetic
from lmforge.lib.repetition import repetition_rate


SPECIAL = re.compile(r"<\|[a-z_/]+\|>")
ROLE_LINE = re.compile(r"^(system|user|assistant)\s*$", re.MULTILINE)
VERIFIED_TASKS = ("arithmetic", "sums")  # their references end in `Final answer: N`


def arithmetic_correct(text: str, finished: bool, row: dict) -> float | None:
    """1 when the final answer equals the reference's, for prompts of a task named after the arithmetic or sums
    generator (a rollouts recipe names its sources `arithmetic`, `sums`); None for any other prompt."""
    if row["task"] not in VERIFIED_TASKS or not row.get("reference"):
        return None
    return arithmetic.check(text, {"answer": arithmetic.final_number(row["reference"])})


SUM_LINE = re.compile(r"(-?\d+)\s*\+\s*(-?\d+)\s*=\s*(-?\d+)")


def sum_restated(text: str, finished: bool, row: dict) -> float | None:
    """For a sums prompt: half for each operand of the question that the reply's `a + b = c` line copies right."""
    if row["task"] != "sums":
        return None
    asked, line = re.findall(r"\d+", row["prompt"][-1]["content"]), SUM_LINE.search(text)
    if not line or len(asked) != 2:
        return 0.0
    return 0.5 * (line.group(1) == asked[0]) + 0.5 * (line.group(2) == asked[1])


def sum_consistent(text: str, finished: bool, row: dict) -> float | None:
    """For a sums prompt: 1 when the final answer repeats the reply's own `= c`, whether or not c is right."""
    if row["task"] != "sums":
        return None
    line, final = SUM_LINE.search(text), arithmetic.final_number(text)
    return float(bool(line) and final == int(line.group(3)))


def format_compliance(text: str, finished: bool, row: dict) -> float:
    """Half for ending the turn, half for not writing control tokens or another speaker's turn."""
    if not text.strip():
        return 0.0
    leaks = SPECIAL.search(text) or ROLE_LINE.search(text)
    return 0.5 * finished + 0.5 * (not leaks)


def repetition(text: str, finished: bool, row: dict) -> float:
    """Share of distinct word 3-grams: 1 for text that never repeats itself, near 0 for a loop."""
    return 1 - repetition_rate(text.split(), 3)


def length(text: str, finished: bool, row: dict, max_words: int = 80) -> float:
    """1 up to `max_words` words, then falling: rambling is worse, and an empty answer is worst."""
    words = len(text.split())
    return 0.0 if words == 0 else min(1.0, max_words / words)


JUDGES = {
    "arithmetic": arithmetic_correct,
    "restated": sum_restated,
    "consistent": sum_consistent,
    "format": format_compliance,
    "repetition": repetition,
    "length": length,
}


def check_weights(weights: dict) -> dict:
    unknown = sorted(set(weights) - set(JUDGES))
    if not weights or unknown:
        raise LmforgeError(f"judges: unknown judge(s) {unknown}; judges are {sorted(JUDGES)}")
    return {name: float(weight) for name, weight in weights.items()}


def score(row: dict, weights: dict) -> list[float]:
    """The weighted score of every response of a rollout row."""
    totals = []
    for text, finished in zip(row["responses"], row["finished"]):
        scores = {name: JUDGES[name](text, finished, row) for name in weights}
        totals.append(round(sum(weights[name] * s for name, s in scores.items() if s is not None), 6))
    return totals


def rank(row: dict, weights: dict) -> tuple[list[int], list[float]]:
    """Response indices best to worst (ties keep sampling order) and their scores."""
    scores = score(row, weights)
    return sorted(range(len(scores)), key=lambda i: -scores[i]), scores
