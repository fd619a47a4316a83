"""Questions about a local document collection, answered after a `search` tool call.

A question names a few rare words of a sentence from the collection; the assistant searches for them,
reads the result (the real output of lmforge.lib.tools' search tool over the same collection, embedded in
the turn and kept out of the loss by the chat template) and answers by quoting the best passage with its
source. What it learns is the habit: search, then answer from what was found.

The default collection is the shipped demo books, present in every checkout; pass `documents` (e.g.
runs/demo/data/documents/*.parquet after `lmforge data`) to ask about the crawl as well.
"""

import random
import re
import sqlite3
from collections import Counter

from lmforge.lib.tools.protocol import format_call, format_result
from lmforge.lib.tools.search import SearchTool


QUESTIONS = [
    "What do the documents say about {words}?",
    "Search the library for {words}.",
    "Is there anything about {words} in the documents?",
    "Find the passage that mentions {words}.",
]
ANSWERS = [
    'The best match is in {source}: "{passage}"',
    'According to {source}: "{passage}"',
    'I found this in {source}: "{passage}"',
]
WORD = re.compile(r"[A-Za-z]{4,}")


def conversations(
    size: int = 200,
    seed: int = 0,
    documents: list | None = None,
    text_files: list | None = None,
    index_dir: str | None = None,  # None: the search tool's default (lmforge.lib.tools.search)
) -> list:
    tool = SearchTool(
        documents=list(documents or []),
        text_files=list(text_files or ["data/demo/books/*.txt.gz"]),
        index_dir=index_dir,
    )
    with sqlite3.connect(tool.index) as db:
        texts = [text for (text,) in db.execute("SELECT text FROM passages ORDER BY rowid")]
    frequency = Counter(word.lower() for text in texts for word in WORD.findall(text))
    rng, rows = random.Random(seed), []
    while len(rows) < size:
        words = sorted(set(WORD.findall(rng.choice(texts))), key=lambda word: (frequency[word.lower()], word))
        query = words[: rng.randint(2, 3)]
        if len(query) < 2:
            continue
        hits = tool.search(" ".join(query))
        words_text = ", ".join(query[:-1]) + " and " + query[-1]
        source, passage = hits[0]
        answer = rng.choice(ANSWERS).format(source=source, passage=passage)
        call = format_call("search", {"query": " ".join(query)}) + format_result(tool.run({"query": " ".join(query)}))
        rows.append(
            [
                {"role": "user", "content": rng.choice(QUESTIONS).format(words=words_text)},
                {"role": "assistant", "content": call + answer},
            ]
        )
    return rows
