"""Documents for the tokenizer and pretraining stages, read one at a time (never a whole corpus in memory).

Two sources: the data stage's Parquet files (columns text, id, metadata with language) and plain-text
files (`.txt` or `.txt.gz`, e.g. the public-domain books in data/demo/books/). A book is cut into
chunks of whole paragraphs so that it contributes many document starts and a held-out share can be
drawn from inside it rather than all or nothing.
"""

import glob
import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from lmforge import LmforgeError


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


def iter_documents(
    parquet: list[str] | tuple, text_files: list[str] | tuple, text_language: str = "en"
) -> Iterator[dict]:
    """Yield {"text", "id", "language"} for every non-empty document of the Parquet files, then of the text files."""
    for path in expand(parquet, "documents"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                if "text" not in row:
                    raise LmforgeError(f"{path}: no 'text' column (expected the data stage's output)")
                if row["text"]:
                    language = (row.get("metadata") or {}).get("language") or "unknown"
                    yield {"text": row["text"], "id": str(row.get("id") or ""), "language": language}
    for path in expand(text_files, "text_files"):
        for number, chunk in enumerate(paragraph_chunks(read_text(path))):
            yield {"text": chunk, "id": f"{Path(path).name}#{number}", "language": text_language}


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
