"""Metric modules for `evaluate`, one file each, loaded by path: the Hub's metric scripts are out of reach offline,
and these measure what the stages mean (bits per byte, chat compliance, refusals, ...)."""

from pathlib import Path

import evaluate


def load_metric(name: str) -> evaluate.EvaluationModule:
    """The metric module `name`.py of this folder, e.g. load_metric("bits_per_byte")."""
    return evaluate.load(str(Path(__file__).parent / f"{name}.py"))
