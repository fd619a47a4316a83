"""Accuracy on lmforge's arithmetic problems, scored by the generator's own checker.

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = lmforge.lib.metrics.load_metric("arithmetic_accuracy")   # evaluate.load of this file
    metric.compute(predictions=["Step 1: ...\\nFinal answer: 12"], references=[12])   # accuracy 1.0

A prediction is right when its last `Final answer: N` equals the reference (lib.conversations.arithmetic.check).
"""

import datasets
import evaluate

from lmforge.lib.conversations import arithmetic


class ArithmeticAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of replies whose final answer equals the problem's answer.",
            citation="",
            inputs_description="predictions: reply texts; references: the integer answers.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("arithmetic_accuracy: no predictions")
        scores = [arithmetic.check(reply, {"answer": answer}) for reply, answer in zip(predictions, references)]
        return {"accuracy": sum(scores) / len(scores)}
