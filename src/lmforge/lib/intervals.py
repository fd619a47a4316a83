"""Bootstrap confidence intervals for before/after comparisons on the same held-out problems."""

import numpy as np


def paired_bootstrap(before: list[float], after: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """The change in mean score from `before` to `after` (scores of the same problems, in the same order) and its
    95% percentile interval, from resampling the problems with replacement: an interval that excludes 0 says the
    change is larger than the luck of which problems were drawn."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_bootstrap: needs two equal non-empty lists, got {len(before)} and {len(after)}")
    gaps = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(gaps), size=(resamples, len(gaps)))
    means = gaps[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"change": float(gaps.mean()), "low": float(low), "high": float(high), "problems": len(gaps)}


def describe(interval: dict) -> str:
    return (
        f"{interval['change']:+.3f} (95% bootstrap interval {interval['low']:+.3f} to {interval['high']:+.3f}, "
        f"{interval['problems']} problems)"
    )
