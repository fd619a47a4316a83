"""Bits per byte: a language model's loss in a unit that does not depend on its tokenizer.

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = lmforge.lib.metrics.load_metric("bits_per_byte")   # evaluate.load of this file
    metric.compute(losses=[[2.1, 0.3]], target_bytes=[[4, 1]])

`losses` are the per-token cross-entropies in nats, `target_bytes` the UTF-8 length of each predicted
token; special tokens have length 0 and are left out of both sums, since they stand for no text. An entry may also
be the sums over a span of tokens (lmforge.lib.encoding.bits_per_byte passes one per row, summed as tensors).
"""

import math

import datasets
import evaluate
import numpy as np


class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Summed cross-entropy in bits over the UTF-8 bytes of the predicted text.",
            citation="",
            inputs_description="losses: per-token losses in nats; target_bytes: UTF-8 bytes of each target token.",
            features=datasets.Features(
                {
                    "losses": datasets.Sequence(datasets.Value("float32")),
                    "target_bytes": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, losses, target_bytes):
        losses, sizes = (
            np.concatenate([*map(np.asarray, losses), []]),
            np.concatenate([*map(np.asarray, target_bytes), []]),
        )
        nats = losses[sizes > 0].sum(dtype=np.float64)
        total_bytes = sizes.sum()
        if total_bytes == 0:
            raise ValueError("bits_per_byte: no target token stands for any text")
        return {"bits_per_byte": nats / (math.log(2) * total_bytes)}
