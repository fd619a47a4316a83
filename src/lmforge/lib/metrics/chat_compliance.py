"""Chat-format compliance: does an assistant reply end its turn, and only its own turn?

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = lmforge.lib.metrics.load_metric("chat_compliance")   # evaluate.load of this file
    metric.compute(replies=["Final answer: 4<|im_end|>", "4<|im_start|>user\\nand 5?<|im_end|>"])
    metric.compute(replies=["4<|eot_id|>"], end_of_turn="<|eot_id|>", turn_start="<|start_header_id|>")

`replies` are the generated text decoded with special tokens kept, up to and including the token that
stopped generation. A reply complies when it ends with the model's end of turn (`end_of_turn`, from
lmforge.lib.chat_format; ChatML's <|im_end|> by default), not cut off by the length limit nor closed with the
pretraining end of text, and leaks no other role: no `turn_start` (<|im_start|>), no line that opens
with `user:`, `assistant:` or `system:` (a model that writes the next speaker's turn itself).
"""

import re

import datasets
import evaluate


END_OF_TURN = "<|im_end|>"
START_OF_TURN = "<|im_start|>"
ROLE_LINE = re.compile(r"^\s*(user|assistant|system)\s*:", re.IGNORECASE | re.MULTILINE)


def ends_turn(reply: str, end_of_turn: str = END_OF_TURN) -> bool:
    return reply.rstrip().endswith(end_of_turn)


def leaks_role(reply: str, turn_start: str = START_OF_TURN) -> bool:
    return (bool(turn_start) and turn_start in reply) or bool(ROLE_LINE.search(reply))


class ChatCompliance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of replies that end their turn and leak no other role's turn.",
            citation="",
            inputs_description="replies: generated text with special tokens kept, including the stop token.",
            features=datasets.Features({"replies": datasets.Value("string")}),
        )

    def _compute(self, replies, end_of_turn=END_OF_TURN, turn_start=START_OF_TURN):
        if not replies:
            raise ValueError("chat_compliance: no replies")
        ended = [ends_turn(reply, end_of_turn) for reply in replies]
        leaked = [leaks_role(reply, turn_start) for reply in replies]
        return {
            "compliance": sum(e and not leak for e, leak in zip(ended, leaked)) / len(replies),
            "ended_turn": sum(ended) / len(replies),
            "role_leakage": sum(leaked) / len(replies),
        }
