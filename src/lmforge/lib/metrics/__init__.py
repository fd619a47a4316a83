"""Metric modules for `evaluate`, one file each, loaded by path: the Hub's metric scripts are out of reach offline,
and these measure what the stages mean (bits per byte, chat compliance, refusals, ...)."""

import functools
from pathlib import Path

import evaluate


@functools.cache  # a module is loaded once per process, however many models it measures
def load_metric(name: str) -> evaluate.EvaluationModule:
    """The metric module `name`.py of this folder, e.g. load_metric("bits_per_byte")."""
    return evaluate.load(str(Path(__file__).parent / f"{name}.py"))
