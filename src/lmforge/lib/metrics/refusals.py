"""Knowing what one does not know: answer rate on known questions, refusal rate on unknowable ones.

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = lmforge.lib.metrics.load_metric("refusals")   # evaluate.load of this file
    metric.compute(predictions=["Guido van Rossum.", "I don't know."], references=["Guido van Rossum", ""],
                   judge="overlap")

A reference is a question's true answer, or "" for a question nobody could answer from training (what
did I eat today?). Replies are judged as `lmforge interrogate` judges them: `judge` names one of
lmforge.lib.answers.MATCHERS for right answers, and lmforge.lib.answers.is_refusal spots refusals.
"""

import datasets
import evaluate

from lmforge.lib.answers import MATCHERS, is_refusal


def share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


class Refusals(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Answer and refusal rates on known questions; refusal rate on unknowable ones.",
            citation="",
            inputs_description="predictions: reply texts; references: the true answer, or '' when unknowable.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, judge="overlap"):
        if judge not in MATCHERS:
            raise ValueError(f"refusals: judge {judge!r} is not one of {list(MATCHERS)}")
        known = [(reply, answer) for reply, answer in zip(predictions, references) if answer]
        unknowable = [reply for reply, answer in zip(predictions, references) if not answer]
        return {
            "answer_rate_known": share([MATCHERS[judge](reply, answer) for reply, answer in known]),
            "refusal_rate_known": share([is_refusal(reply) for reply, _ in known]),
            "refusal_rate_unknowable": share([is_refusal(reply) for reply in unknowable]),
        }
