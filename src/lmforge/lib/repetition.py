"""How much a text repeats itself: one measure for the RL reward, the rollout judge, the watch and the RL table."""

from collections.abc import Sequence


def repetition_rate(items: Sequence, n: int = 3) -> float:
    """Share of the n-grams of `items` (words or token ids) that repeat an earlier n-gram: 0 for varied text,
    near 1 for a loop."""
    grams = [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
