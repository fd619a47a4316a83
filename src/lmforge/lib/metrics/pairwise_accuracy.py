"""Pairwise accuracy of a reward model: how often it scores the chosen response above the rejected one.

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = lmforge.lib.metrics.load_metric("pairwise_accuracy")   # evaluate.load of this file
    metric.compute(chosen_scores=[1.2, 0.1], rejected_scores=[0.3, 0.5])   # pairwise_accuracy 0.5

A tie counts as a miss, so a model that scores everything alike gets 0, not 0.5.
"""

import datasets
import evaluate


class PairwiseAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of preference pairs whose chosen response has the higher score; mean score margin.",
            citation="",
            inputs_description="chosen_scores, rejected_scores: a reward model's scores of each pair's two responses.",
            features=datasets.Features(
                {"chosen_scores": datasets.Value("float64"), "rejected_scores": datasets.Value("float64")}
            ),
        )

    def _compute(self, chosen_scores, rejected_scores):
        if not chosen_scores:
            raise ValueError("pairwise_accuracy: no pairs")
        margins = [chosen - rejected for chosen, rejected in zip(chosen_scores, rejected_scores)]
        return {
            "pairwise_accuracy": sum(margin > 0 for margin in margins) / len(margins),
            "mean_margin": sum(margins) / len(margins),
        }
