"""Sampling settings: the recipe fields of every stage that samples replies (generate, chat and serve, rollouts,
interrogate), declared with one help text each and checked by transformers rather than by hand.

A stage declares the fields it offers with its own defaults (`temperature: float = sampling_field("temperature",
0.8)`), so recipe keys stay the same everywhere, and turns them into `generate` keyword arguments with
`sampling_options(config)`, which fails with a one-line LmforgeError on a bad value.
"""

from dataclasses import Field, field
from typing import Any

from transformers import (
    GenerationConfig,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmforge import LmforgeError


HELP = {
    "max_new_tokens": "Longest reply, in tokens.",
    "temperature": "Divides the logits before sampling: below 1 sharper, above 1 flatter.",
    "top_k": "Keep the k most likely tokens (0: all).",
    "top_p": "Keep the smallest set of tokens with this probability mass.",
    "repetition_penalty": "Above 1: tokens already in the text become less likely (1: off).",
}
SAMPLING_ONLY = ("temperature", "top_k", "top_p")  # meaningless, and refused by GenerationConfig, when greedy
# GenerationConfig.validate checks the settings together but leaves each value's range to the logits processors,
# which check it when they are built: build them here, before any model is loaded.
RANGE_CHECKS = {
    "temperature": TemperatureLogitsWarper,
    "top_k": TopKLogitsWarper,
    "top_p": TopPLogitsWarper,
    "repetition_penalty": RepetitionPenaltyLogitsProcessor,
}


def sampling_field(name: str, default: float | int, help: str | None = None) -> Field:
    """A dataclass field for the sampling setting `name` (a `generate` argument), with its shared help text."""
    return field(default=default, metadata={"help": help or HELP[name]})


def sampling_options(config: Any, do_sample: bool = True) -> dict:
    """`generate` keyword arguments from the sampling fields `config` declares (max_new_tokens is checked but left
    out: callers pass it to their own loop). Greedy, the sampling-only values are None, so that a model's saved
    generation_config cannot add its own."""
    values = {name: getattr(config, name) for name in HELP if hasattr(config, name)}
    if not do_sample:
        values.update(dict.fromkeys(SAMPLING_ONLY))
    try:
        for name, value in values.items():
            if name in RANGE_CHECKS and value is not None and not (name == "top_k" and value == 0):  # 0: all
                RANGE_CHECKS[name](float(value) if name != "top_k" else value)
        GenerationConfig(do_sample=do_sample, **values).validate(strict=True)
    except ValueError as error:
        raise LmforgeError(f"sampling settings {values}: {' '.join(str(error).split())}") from None
    values.pop("max_new_tokens", None)
    return {"do_sample": do_sample, **values}
