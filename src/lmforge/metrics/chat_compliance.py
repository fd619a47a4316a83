"""Chat-format compliance: does an assistant reply end its turn, and only its own turn?

Loaded by path (the Hub's metric scripts are out of reach offline):

    metric = evaluate.load(str(Path(lmforge.__file__).parent / "metrics" / "chat_compliance.py"))
    metric.compute(replies=["Final answer: 4<|im_end|>", "4<|im_start|>user\\nand 5?<|im_end|>"])

`replies` are the generated text decoded with special tokens kept, up to and including the token that
stopped generation. A reply complies when it ends with <|im_end|> (not cut off by the length limit, not
closed with the pretraining end of text) and leaks no other role: no <|im_start|>, no line that opens
with `user:`, `assistant:` or `system:` (a model that writes the next speaker's turn itself).
"""

import re

import datasets
import evaluate

END_OF_TURN = "<|im_end|>"
START_OF_TURN = "<|im_start|>"
ROLE_LINE = re.compile(r"^\s*(user|assistant|system)\s*:", re.IGNORECASE | re.MULTILINE)


def ends_turn(reply: str) -> bool:
    return reply.rstrip().endswith(END_OF_TURN)


def leaks_role(reply: str) -> bool:
    return START_OF_TURN in reply or bool(ROLE_LINE.search(reply))


class ChatCompliance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of replies that end with <|im_end|> and leak no other role's turn.",
            citation="",
            inputs_description="replies: generated text with special tokens kept, including the stop token.",
            features=datasets.Features({"replies": datasets.Value("string")}),
        )

    def _compute(self, replies):
        if not replies:
            raise ValueError("chat_compliance: no replies")
        ended = [ends_turn(reply) for reply in replies]
        leaked = [leaks_role(reply) for reply in replies]
        return {
            "compliance": sum(e and not leak for e, leak in zip(ended, leaked)) / len(replies),
            "ended_turn": sum(ended) / len(replies),
            "role_leakage": sum(leaked) / len(replies),
        }
