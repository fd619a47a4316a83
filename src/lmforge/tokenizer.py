"""Stage 2, tokenizer: clean text -> a byte-level BPE tokenizer with the chat protocol's special tokens.

    lmforge tokenizer --config recipes/demo/tokenizer.yaml
    lmforge tokenizer --config recipes/demo/tokenizer.yaml --vocab_size 8192 --output_dir runs/demo/tokenizer8k

Trained with the `tokenizers` library on the data stage's Parquet documents (streamed) plus optional
plain-text files, leaving out the held-out documents (see `lmforge.lib.documents.is_heldout`), on which it
then measures compression: UTF-8 bytes per token, overall and per language.

Outputs under `output_dir`: the tokenizer as `PreTrainedTokenizerFast.save_pretrained` writes it, so
`AutoTokenizer.from_pretrained(output_dir)` loads it with its chat template, and `compression.json`.
The directory is written under a temporary name and renamed when complete: if it exists, the stage
is done and is skipped.

Special tokens are never produced by encoding plain text with `encode_text` (split_special_tokens);
chats built from untrusted text go through `apply_chat_template(..., sanitize_control_tokens=True)`.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmforge import LmforgeError
from lmforge.lib.chat_format import BOS, CHAT_TOKENS, EOS, PAD, SPECIAL_TOKENS
from lmforge.lib.configs import parse
from lmforge.lib.documents import DOCUMENTS_HELP, is_heldout, iter_documents
from lmforge.lib.encoding import encode_text
from lmforge.lib.files import staged_dir, write_json


# GPT-4's pre-tokenization split (cl100k_base), except numbers split into runs of at most 2 digits, not 3:
# with a vocabulary of a few thousand tokens, 1,100 number tokens would be a large share spent on digits.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)


@dataclass
class TokenizerConfig:
    output_dir: str = field(default="runs/demo/tokenizer", metadata={"help": "Where the tokenizer is saved."})
    documents: list[str] = field(
        default_factory=lambda: ["runs/demo/data/documents/*.parquet"],
        metadata={"help": DOCUMENTS_HELP},
    )
    text_files: list[str] = field(default_factory=list, metadata={"help": "Plain-text files (.txt, .txt.gz)."})
    text_language: str = field(default="en", metadata={"help": "Language recorded for the text files."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    heldout_fraction: float = field(default=0.05, metadata={"help": "Share of documents held out of training."})


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` with lmforge's special tokens and chat template."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise LmforgeError(f"vocab_size: {vocab_size} is too small (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            # The split is done above: ByteLevel only maps bytes to printable symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # All 256 bytes from the start, so no text is ever unknown, whatever the training corpus lacked.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=CHAT_TOKENS,
        chat_template=resources.files("lmforge.lib").joinpath("chat_template.jinja").read_text(),
        clean_up_tokenization_spaces=False,  # decode(encode(x)) must give x back exactly
    )


def compression(tokenizer: PreTrainedTokenizerFast, documents: Iterable[dict]) -> dict:
    """UTF-8 bytes per token of `documents`, overall and per language."""
    totals = defaultdict(lambda: {"documents": 0, "bytes": 0, "tokens": 0})
    for document in documents:
        tokens = len(encode_text(tokenizer, [document["text"]])[0])
        for key in ("all", document["language"]):
            totals[key]["documents"] += 1
            totals[key]["bytes"] += len(document["text"].encode())
            totals[key]["tokens"] += tokens
    for counts in totals.values():
        counts["bytes_per_token"] = round(counts["bytes"] / max(counts["tokens"], 1), 3)
    overall = totals.pop("all", None)
    return {"overall": overall, "per_language": dict(sorted(totals.items()))}


def main(config: TokenizerConfig) -> None:
    output_dir = Path(config.output_dir)
    if output_dir.exists():
        print(f"tokenizer: {output_dir} exists, skipping (delete it to retrain)")
        return

    def documents(heldout: bool):
        for document in iter_documents(config.documents, config.text_files, config.text_language):
            if is_heldout(document["id"], config.heldout_fraction) == heldout:
                yield document

    tokenizer = train_tokenizer((document["text"] for document in documents(heldout=False)), config.vocab_size)
    report = {"vocab_size": len(tokenizer), "heldout_fraction": config.heldout_fraction}
    report["heldout"] = compression(tokenizer, documents(heldout=True))
    if report["heldout"]["overall"] is None:
        raise LmforgeError(f"heldout_fraction: {config.heldout_fraction} holds out no document; raise it")

    with staged_dir(output_dir) as staging:
        tokenizer.save_pretrained(staging)
        write_json(staging / "compression.json", report)
    overall = report["heldout"]["overall"]
    print(f"tokenizer: {len(tokenizer)} tokens, held-out {overall['bytes_per_token']} bytes/token -> {output_dir}")
    for language, counts in report["heldout"]["per_language"].items():
        print(f"  {language}: {counts['bytes_per_token']} bytes/token over {counts['documents']} documents")


CONFIGS = (TokenizerConfig,)  # what `--config recipes/*/tokenizer*.yaml` is parsed into


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
