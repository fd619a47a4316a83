"""Documents for the tokenizer and pretraining stages, read one at a time (never a whole corpus in memory).

Three sources:
- Parquet files (the data stage's: columns text, id, metadata with language), streamed a batch at a time;
- a user's language-modeling rows (TRL's format: a `text` column) anywhere `lmforge.lib.sources` reads: a Hub id
  (`HuggingFaceFW/fineweb-edu`), JSONL/JSON/CSV/Arrow files, a folder, a save_to_disk folder, or a mapping given as
  JSON (`{"path": "org/name", "name": "sample-10BT", "columns": {"content": "text"}, "weight": 0.01}`); its train
  split (or its `split`) is read, an `id` and a `language` column kept when it has them;
- plain-text files (`.txt` or `.txt.gz`, e.g. the public-domain books in data/demo/books/). A book is cut into
  chunks of whole paragraphs so that it contributes many document starts and a held-out share can be drawn from
  inside it rather than all or nothing.

A document without an id gets a hash of its text: the held-out split (is_heldout) is then the same in every stage,
run and machine.
"""

import functools
import glob
import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset

from lmforge import LmforgeError
from lmforge.lib.sources import load_checked


DOCUMENTS_HELP = (
    "Parquet files or globs (the data stage's), or a user's language-modeling rows (`text`): a Hub id, JSONL/CSV "
    "files, a folder, or a JSON mapping with path, name, split, columns, weight."
)
CHUNK_CHARS = 8000  # a few pages: long enough for whole-context training blocks, short enough to sample from


def expand(patterns: list[str] | tuple, what: str) -> list[str]:
    """Files matching each glob in `patterns`, sorted; a pattern matching nothing is an error, not an empty corpus."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise LmforgeError(f"{what}: no file matches {pattern!r}")
        paths += matches
    return paths


def document_sources(documents: list[str] | tuple) -> list[str]:
    """The `documents` of a recipe with each glob of Parquet files expanded to its files (streamed by pyarrow); any
    other source (a Hub id, other files, a folder, a JSON mapping) is kept as given, for lmforge.lib.sources."""
    sources = []
    for source in documents:
        matches = [] if source.lstrip().startswith("{") else sorted(glob.glob(source))
        if matches and all(path.endswith(".parquet") for path in matches):
            sources += matches
        elif not matches and (source.endswith(".parquet") or glob.has_magic(source)):
            raise LmforgeError(f"documents: no file matches {source!r}")
        else:
            sources.append(source)
    return sources


def iter_documents(
    documents: list[str] | tuple, text_files: list[str] | tuple, text_language: str = "en"
) -> Iterator[dict]:
    """Yield {"text", "id", "language"} for every non-empty document of the sources, then of the text files."""
    for source in document_sources(documents):
        if source.endswith(".parquet") and os.path.isfile(source):
            yield from parquet_documents(source)
        else:
            yield from source_documents(source)
    for path in expand(text_files, "text_files"):
        for number, chunk in enumerate(paragraph_chunks(read_text(path))):
            yield {"text": chunk, "id": f"{Path(path).name}#{number}", "language": text_language}


def parquet_documents(path: str) -> Iterator[dict]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        for row in batch.to_pylist():
            if "text" not in row:
                raise LmforgeError(
                    f"{path}: no 'text' column (the data stage's output, or a user's language-modeling rows; give "
                    'other columns as {"path": ..., "columns": {"content": "text"}})'
                )
            if row["text"]:
                language = (row.get("metadata") or {}).get("language") or row.get("language") or "unknown"
                yield {"text": row["text"], "id": str(row.get("id") or text_id(row["text"])), "language": language}


def source_documents(source: str) -> Iterator[dict]:
    """A user's language-modeling rows, checked by lmforge.lib.sources (every `text` a string, or one line saying
    which row is not)."""
    for row in checked_text(source):
        if row["text"]:
            language = row.get("language") or "unknown"
            yield {"text": row["text"], "id": str(row.get("id") or text_id(row["text"])), "language": str(language)}


@functools.lru_cache(maxsize=8)
def checked_text(source: str) -> Dataset:
    """A source's checked rows, read and checked once per process: the tokenizer reads its documents twice (training,
    then held out), and pack twice (a first-document check, then the Arrow file it builds)."""
    return load_checked(source, "documents", ("language modeling",)).train


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise LmforgeError(f"{path}: not UTF-8 text ({error})") from None


def paragraph_chunks(text: str) -> Iterator[str]:
    """Cut `text` at blank lines into chunks of about CHUNK_CHARS characters."""
    chunk = []
    size = 0
    for paragraph in text.split("\n\n"):
        chunk.append(paragraph)
        size += len(paragraph)
        if size >= CHUNK_CHARS:
            yield "\n\n".join(chunk).strip()
            chunk, size = [], 0
    if "".join(chunk).strip():
        yield "\n\n".join(chunk).strip()


def is_heldout(document_id: str, fraction: float) -> bool:
    """Whether a document belongs to the held-out split: a hash of its id, so every stage agrees without a list."""
    digest = hashlib.sha256(document_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
