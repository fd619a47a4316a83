"""Text as token ids, and what each id weighs in bytes: one definition for the tokenizer, pack, pretrain and eval
stages, so that bits per byte means the same number wherever it is printed."""

from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    import evaluate
    import torch  # 1.8 s, which the tokenizer and pack stages (text to ids only) skip
    from transformers import EvalPrediction  # transformers' trainer stack: seconds, which tokenizer and pack skip


def encode_text(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of plain texts, where a special token's string typed in the text is encoded as ordinary text."""
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def document_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Each text as every pretraining document begins (pack): <|bos|>, then the text's ids (`encode_text`)."""
    return [[tokenizer.bos_token_id, *ids] for ids in encode_text(tokenizer, texts)]


def token_losses(logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
    """Per-token cross-entropy (nats) of each next-token prediction; kept instead of the logits to save memory."""
    import torch.nn.functional as F

    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="none", ignore_index=-100
    ).view(labels.shape[0], -1)


def bits_per_byte(
    eval_prediction: "EvalPrediction", metric: "evaluate.EvaluationModule", token_bytes: "torch.Tensor"
) -> dict:
    """Bits per byte of an evaluation: each row's nats and bytes summed here as tensors (tokens of no bytes, special
    and masked ones, left out), and the metric given one total per row: per-token Python lists through the metric's
    Arrow table took most of an evaluation's metric time."""
    import torch

    targets = torch.as_tensor(eval_prediction.label_ids[:, 1:])
    sizes = torch.where(targets >= 0, token_bytes[targets.clamp(min=0)], 0)
    nats = torch.where(sizes > 0, torch.as_tensor(eval_prediction.predictions, dtype=torch.float64), 0.0).sum(1)
    return metric.compute(losses=nats[:, None].tolist(), target_bytes=sizes.sum(1)[:, None].tolist())


def utf8_lengths(tokenizer: PreTrainedTokenizerBase) -> "torch.Tensor":
    """UTF-8 bytes each token id stands for: byte-level BPE maps every byte to one symbol; special tokens are 0."""
    import torch

    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([0 if i in special else len(token) for i, token in enumerate(tokens)])
