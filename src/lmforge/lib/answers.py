"""Judging a free-text reply against a known answer, and spotting a refusal: shared by `lmforge interrogate`,
`lmforge eval` and the refusals metric, so that all three count a right answer and an "I don't know" alike; and
`lmforge eval`'s accuracy on what SFT taught (identity, the sums ladder).

(The judges that rank rollouts for preference pairs are another thing: lmforge.lib.judges.)
"""

import re
import string

from lmforge.lib.conversations import arithmetic


REFUSAL = re.compile(r"\b(i don't know|i do not know|i'm not sure|i am not sure|no idea|can't answer|cannot answer)\b")


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces (SQuAD's answer normalisation)."""
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def exact(reply: str, truth: str) -> bool:
    return normalise_answer(reply) == normalise_answer(truth)


def contains(reply: str, truth: str) -> bool:
    return normalise_answer(truth) in normalise_answer(reply)


def overlap(reply: str, truth: str) -> bool:
    """At least 60% of the true answer's words appear in the reply: long answers are never word for word."""
    truth_words, reply_words = set(normalise_answer(truth).split()), set(normalise_answer(reply).split())
    return bool(truth_words) and len(truth_words & reply_words) >= 0.6 * len(truth_words)


# Matcher name -> function(reply, truth) -> bool; a recipe's `judge:` picks one by name, a project adds its own.
MATCHERS = {"exact": exact, "contains": contains, "overlap": overlap}


def is_refusal(reply: str) -> bool:
    return bool(REFUSAL.search(reply.lower().replace("’", "'")))


def taught_accuracy(rows: list[dict], texts: list[str]) -> dict:
    """Accuracy on what SFT taught, asked in held-out questions: identity (the reply says the name) and each level of
    the sums ladder (the final answer is right); known_answer_rate pools identity and sums level 1."""
    flags = {}
    for row, text in zip(rows, texts):
        if row["task"] == "identity":
            flags.setdefault("identity", []).append(bool(re.search(rf"\b{re.escape(row['reference'])}\b", text)))
        elif row["task"].startswith("sums_"):
            flags.setdefault(row["task"], []).append(arithmetic.final_number(text) == int(row["reference"]))
    results = {f"{task}_accuracy": sum(ok) / len(ok) for task, ok in flags.items()}
    known = flags.get("identity", []) + flags.get("sums_1", [])
    if known:
        results["known_answer_rate"] = sum(known) / len(known)
    return results
