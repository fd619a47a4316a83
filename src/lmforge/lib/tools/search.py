"""The `search` tool: full-text search over a local document collection, with SQLite FTS5 and BM25.

Arguments: {"query": "apt pinning"}. Result: the `top_k` best passages, one line each, as
`[n] SOURCE: ...snippet...` (a source is a document's URL or a text file's name).

The collection is the demo corpus by default: the data stage's Parquet documents and the shipped books.
Documents are cut into passages of about PASSAGE_CHARS characters at sentence ends; the index is built
once into `index_dir/index-KEY.sqlite`, KEY a hash of the files' paths, sizes and times, so a changed
collection gets a new index and an unchanged one is reused. Without an `index_dir`, the index goes in the run
folder of the `lmforge run` that started the stage (`<run_dir>/search`), and in the Hugging Face cache
(`$HF_HOME/lmforge/search`) for a stage run by hand: never in whatever folder the command was typed in.

A query longer than `max_query_words` words or `max_query_chars` characters, or one that runs longer than
`query_seconds` (SQLite's progress handler interrupts it), gives an `error: ...` result: every word is an OR
term, and a 10,000-word query took 27 s on the demo collection.
"""

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow.parquet as pq
from huggingface_hub.constants import HF_HOME

from lmforge import LmforgeError
from lmforge.lib.documents import expand, read_text
from lmforge.lib.files import staged_file
from lmforge.lib.stages import RUN_DIR
from lmforge.lib.tools.protocol import ToolError


PASSAGE_CHARS = 600
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class SearchTool:
    """Search the local documents: {"query": "apt pinning"}; returns the best passages."""

    name: ClassVar[str] = "search"
    schema: ClassVar[dict] = {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the local documents and return the best passages.",
            "parameters": {
                "type": "object",
                "required": ["query"],
                "properties": {"query": {"type": "string", "description": "A few words (at most 32)."}},
            },
        },
    }
    documents: list[str] = field(default_factory=lambda: ["runs/demo/data/documents/*.parquet"])
    text_files: list[str] = field(default_factory=lambda: ["data/demo/books/*.txt.gz"])
    index_dir: str | None = None  # None: see the module docstring
    top_k: int = 2  # few, short snippets: a small model's context is a few hundred tokens
    snippet_words: int = 20
    max_query_words: int = 32
    max_query_chars: int = 1000
    query_seconds: float = 2.0

    def __post_init__(self):
        self.index = build_index(
            expand(self.documents, "documents") + expand(self.text_files, "text_files"),
            Path(self.index_dir) if self.index_dir else default_index_dir(),
        )

    def run(self, arguments: dict) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not re.search(r"\w", query):
            raise ToolError('search needs {"query": "some words"}')
        if len(query) > self.max_query_chars or len(re.findall(r"\w+", query)) > self.max_query_words:
            raise ToolError(
                f"the query is too long: at most {self.max_query_words} words and {self.max_query_chars} characters"
            )
        hits = self.search(query)
        return "\n".join(f"[{n}] {source}: {snippet}" for n, (source, snippet) in enumerate(hits, 1)) or "no match"

    def search(self, query: str) -> list[tuple[str, str]]:
        """(source, snippet) of the best passages: any query word may match, BM25 ranks them."""
        words = re.findall(r"\w+", query.lower())
        match = " OR ".join(f'"{word}"' for word in words)  # quoted: FTS5 operators in a query stay words
        deadline = time.monotonic() + self.query_seconds
        with sqlite3.connect(self.index) as db:
            db.set_progress_handler(lambda: time.monotonic() > deadline, 1000)  # true: interrupt the query
            try:
                return db.execute(
                    "SELECT source, snippet(passages, 1, '', '', '...', ?) FROM passages WHERE passages MATCH ? "
                    "ORDER BY bm25(passages) LIMIT ?",
                    (self.snippet_words, match, self.top_k),
                ).fetchall()
            except sqlite3.OperationalError as error:
                if "interrupted" not in str(error):
                    raise
                raise ToolError(f"the query took over {self.query_seconds:g} s; use fewer words") from None


def default_index_dir() -> Path:
    run_dir = os.environ.get(RUN_DIR)
    return Path(run_dir, "search") if run_dir else Path(HF_HOME, "lmforge", "search")


def build_index(paths: list[str], index_dir: Path) -> str:
    """The path of the index of `paths`, built unless an index of these exact files exists."""
    # Absolute paths: one index folder serves stages started from different folders.
    key = hashlib.sha256(str([(os.path.abspath(p), os.path.getsize(p), os.path.getmtime(p)) for p in paths]).encode())
    index = index_dir / f"index-{key.hexdigest()[:16]}.sqlite"
    if index.exists():
        return str(index)
    index_dir.mkdir(parents=True, exist_ok=True)
    with staged_file(index) as staging:
        with sqlite3.connect(staging) as db:
            try:
                # porter: "packages" finds "package"; source is shown, not searched.
                db.execute(
                    "CREATE VIRTUAL TABLE passages USING fts5(source UNINDEXED, text, tokenize='porter unicode61')"
                )
            except sqlite3.OperationalError as error:
                raise LmforgeError(f"search: this Python's sqlite3 has no FTS5 ({error})") from None
            rows = ((source, text) for source, document in read_documents(paths) for text in passages(document))
            db.executemany("INSERT INTO passages VALUES (?, ?)", rows)
        db.close()
    return str(index)


def read_documents(paths: list[str]) -> Iterator[tuple[str, str]]:
    """(source, text) of every document: Parquet rows (source: metadata url, else id) and whole text files."""
    for path in paths:
        if not path.endswith(".parquet"):
            yield Path(path).name, read_text(path)
            continue
        for row in pq.read_table(path, columns=["text", "id", "metadata"]).to_pylist():
            yield (row.get("metadata") or {}).get("url") or row["id"], row["text"]


def passages(text: str) -> list[str]:
    """`text` cut at sentence ends into passages of about PASSAGE_CHARS characters."""
    chunks, current = [], ""
    for sentence in SENTENCE_END.split(text):
        current = f"{current} {sentence}".strip()
        if len(current) >= PASSAGE_CHARS:
            chunks.append(current)
            current = ""
    return chunks + [current] if current else chunks
