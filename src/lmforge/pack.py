"""Stage 3, pack: documents -> fixed-length blocks of token ids, tokenized once, with `datasets`.

    lmforge pack --config recipes/demo/pack.yaml
    lmforge pack --config recipes/demo/pack.yaml --seq_len 1024 --num_proc 8 --output_dir runs/demo/pack1k

Each document becomes <|bos|> text <|endoftext|> (special-token strings typed in the text stay plain
text), then documents are concatenated and cut into blocks of `seq_len` tokens (the remainder of each
map batch is dropped). A block may hold the end of one document and the start of the next: <|bos|>
tells the model where a new one begins. The held-out documents (`lmforge.lib.documents.is_heldout`, the
same hash the tokenizer stage holds out) form the `validation` split.

Output: a `DatasetDict` (train, validation; one column `input_ids`) saved with `save_to_disk` at
`output_dir`, plus `pack.json` (settings and counts). It is built under a temporary name and renamed
when complete: if `output_dir` exists the stage is done and is skipped.
"""

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from datasets.exceptions import DatasetGenerationError

from lmforge import LmforgeError
from lmforge.lib.configs import parse
from lmforge.lib.documents import DOCUMENTS_HELP, document_sources, expand, is_heldout, iter_documents
from lmforge.lib.encoding import document_ids
from lmforge.lib.files import staged_dir, write_json
from lmforge.lib.loading import load_tokenizer


@dataclass
class PackConfig:
    output_dir: str = field(default="runs/demo/pack", metadata={"help": "Where the packed dataset is saved."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory or Hub id."})
    documents: list[str] = field(
        default_factory=lambda: ["runs/demo/data/documents/*.parquet"],
        metadata={"help": DOCUMENTS_HELP},
    )
    text_files: list[str] = field(default_factory=list, metadata={"help": "Plain-text files (.txt, .txt.gz)."})
    text_language: str = field(default="en", metadata={"help": "Language recorded for the text files."})
    heldout_fraction: float = field(default=0.05, metadata={"help": "Share of documents for validation."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per block."})
    num_proc: int = field(default=1, metadata={"help": "Processes for tokenizing."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per map batch (packing window)."})


def tokenize(batch: dict, tokenizer) -> dict:
    return {"input_ids": [[*ids, tokenizer.eos_token_id] for ids in document_ids(tokenizer, batch["text"])]}


# Not `trl.pack_dataset(strategy="wrapped")`: in the pinned TRL 1.12 it pairs each map batch's 0-based offsets with
# the whole column's unsliced buffer, so every batch after the first repeats tokens from the start of the dataset
# (2,500 three-token documents at the default batch size keep 1,000 distinct ones; huggingface/trl#6669, fixed
# upstream by #6670 after 1.12). It also keeps each batch's remainder as a short block, where these blocks are all
# exactly `seq_len` long (a filter after it would fix that one).
def pack(batch: dict, seq_len: int) -> dict:
    """Concatenate a batch of token lists and cut it into blocks of exactly `seq_len` tokens."""
    stream = [token for row in batch["input_ids"] for token in row]
    return {"input_ids": [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]}


def main(config: PackConfig) -> None:
    output_dir = Path(config.output_dir)
    if output_dir.exists():
        print(f"pack: {output_dir} exists, skipping (delete it to repack)")
        return
    if config.seq_len < 2:
        raise LmforgeError(f"seq_len: {config.seq_len} is too short to predict anything")
    # <|bos|> and <|endoftext|> frame every document: a tokenizer without them would pack None ids.
    tokenizer = load_tokenizer(config.tokenizer, "bos_token", "eos_token")
    cache = output_dir.with_name(f".{output_dir.name}.cache")  # datasets' intermediate Arrow files

    # Tuples: datasets would try to shard over lists. Globs are expanded here so a missing file fails now.
    sources = {
        "documents": tuple(document_sources(config.documents)),
        "text_files": tuple(expand(config.text_files, "text_files")),
        "text_language": config.text_language,
    }
    if next(iter_documents(**sources), None) is None:
        raise LmforgeError(f"documents/text_files: no non-empty document in {config.documents + config.text_files}")
    try:
        # from_generator streams the documents into an Arrow file: the corpus is never held in memory.
        documents = Dataset.from_generator(iter_documents, gen_kwargs=sources, cache_dir=str(cache))
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, LmforgeError):  # bad input found mid-corpus, e.g. a file that is not UTF-8
            raise error.__cause__ from None
        raise
    heldout = documents.map(lambda row: {"heldout": is_heldout(row["id"], config.heldout_fraction)})
    splits = DatasetDict(
        train=heldout.filter(lambda row: not row["heldout"]),
        validation=heldout.filter(lambda row: row["heldout"]),
    )
    tokens = splits.map(
        tokenize,
        batched=True,
        batch_size=config.batch_size,
        num_proc=config.num_proc,
        remove_columns=documents.column_names + ["heldout"],
        fn_kwargs={"tokenizer": tokenizer},
        desc="tokenize",
    )
    blocks = tokens.map(
        pack,
        batched=True,
        batch_size=config.batch_size,
        num_proc=config.num_proc,
        fn_kwargs={"seq_len": config.seq_len},
        desc="pack",
    )
    for split, dataset in blocks.items():
        if len(dataset) == 0:
            raise LmforgeError(
                f"{split} split has no block of seq_len={config.seq_len} tokens "
                f"({len(splits[split])} documents): add text, lower seq_len or change heldout_fraction"
            )
    report = {
        "settings": asdict(config),
        "vocab_size": len(tokenizer),
        "splits": {split: {"documents": len(splits[split]), "blocks": len(blocks[split])} for split in blocks},
    }
    with staged_dir(output_dir) as staging:
        blocks.save_to_disk(str(staging))
        write_json(staging / "pack.json", report)
    shutil.rmtree(cache)
    print(f"pack: {json.dumps(report['splits'])} -> {output_dir}")


CONFIGS = (PackConfig,)  # what `--config recipes/*/pack*.yaml` is parsed into


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
