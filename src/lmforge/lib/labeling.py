"""What the labeling pages of `lmforge label` share: the SQLite store, the labeling instructions and the export of
preference pairs.

The store: each page keeps its prompts and answers in one SQLite database, opened per request in WAL mode (readers
never block the writer, so several labelers' pages write at once) with synchronous=FULL (a committed answer survives a
crash). Each answer is one `transaction`, committed before the next prompt is shown. `reserve` gives a labeler the
next prompt that still needs answers and holds it for them, in the same transaction, so labelers working at once get
different prompts and a restarted page carries on where it stopped.

The instructions: a Markdown file that says what a good reply is and what to flag. Every page shows it in a side
panel that stays open beside the work, and every answer records the version (a hash of the file) it was given under.
"""

import hashlib
import random
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from datasets import Dataset, DatasetDict

from lmforge import LmforgeError
from lmforge.lib.files import staged_dir


RESERVATIONS = """
CREATE TABLE IF NOT EXISTS reservations (  -- the prompt each labeler's page shows, held for them until expires_at
    labeler TEXT PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(prompt_id),
    expires_at REAL NOT NULL);  -- Unix time
"""


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode: every write is one explicit transaction."""
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; labelers write concurrently
    connection.execute("PRAGMA synchronous=FULL")  # a committed answer survives a crash or power loss
    connection.executescript(schema + RESERVATIONS)
    return connection


def add_column(connection: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    """Add a column a database written by an earlier version lacks (CREATE TABLE IF NOT EXISTS keeps the old table)."""
    if column not in {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock at once, waiting for other writers."""

    def __init__(self, connection):
        self.connection = connection

    def __enter__(self):
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, traceback):
        self.connection.execute("ROLLBACK" if kind else "COMMIT")


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def reserve(
    connection: sqlite3.Connection,
    answers: str,
    counted: str,
    labeler: str,
    wanted: int,
    hold_seconds: float = 600,
    now: float | None = None,
) -> int | None:
    """Reserve for `labeler` a prompt they have not answered that still has fewer than `wanted` answers in the table
    `answers` that satisfy `counted` (an SQL condition on its row `r`), the least-answered first, and return it (None:
    nothing left). Prompts held by other labelers count as answered until their reservation expires, so two pages never
    show the same prompt beyond `wanted`; a labeler who reloads the page keeps their prompt. Choosing and reserving are
    one transaction: two labelers cannot take the same place."""
    now = time.time() if now is None else now
    with transaction(connection):
        connection.execute("DELETE FROM reservations WHERE expires_at <= ?", (now,))
        row = connection.execute(
            "SELECT p.prompt_id, "
            f"  (SELECT COUNT(*) FROM {answers} r WHERE r.prompt_id = p.prompt_id AND {counted}) "
            "  + (SELECT COUNT(*) FROM reservations s WHERE s.prompt_id = p.prompt_id AND s.labeler != ?) AS taken, "
            "  EXISTS (SELECT 1 FROM reservations s WHERE s.prompt_id = p.prompt_id AND s.labeler = ?) AS held "
            "FROM prompts p WHERE taken < ? AND NOT EXISTS "
            f"(SELECT 1 FROM {answers} r WHERE r.prompt_id = p.prompt_id AND r.labeler = ?) "
            "ORDER BY held DESC, taken, p.prompt_id LIMIT 1",
            (labeler, labeler, wanted, labeler),
        ).fetchone()
        connection.execute("DELETE FROM reservations WHERE labeler = ?", (labeler,))
        if row is not None:
            connection.execute("INSERT INTO reservations VALUES (?, ?, ?)", (labeler, row[0], now + hold_seconds))
    return None if row is None else row[0]


def release(connection: sqlite3.Connection, labeler: str, prompt_id: int) -> None:
    """Drop a labeler's reservation of a prompt they answered (call inside the answer's transaction)."""
    connection.execute("DELETE FROM reservations WHERE labeler = ? AND prompt_id = ?", (labeler, prompt_id))


def render_prompt(messages: list) -> str:
    """A prompt's messages as the pages show them: each turn under its role."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)


# Instructions ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instructions:
    text: str
    version: str  # the first 12 hex digits of the file's SHA-256: an answer says which text its labeler was shown


def load_instructions(path: str | None) -> Instructions:
    if not path:
        raise LmforgeError("instructions: a labeling page needs a Markdown file of labeling instructions")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise LmforgeError(f"instructions: {path} cannot be read ({error.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LmforgeError(f"instructions: {path} is not UTF-8 text") from None
    if not text.strip():
        raise LmforgeError(f"instructions: {path} is empty")
    return Instructions(text, hashlib.sha256(data).hexdigest()[:12])


def instructions_panel(gr, instructions: Instructions) -> None:
    """The instructions in a side panel, open beside the work (a labeler may fold it away and back)."""
    with gr.Sidebar(label="Labeling instructions", open=True, width=380, elem_id="instructions"):
        gr.Markdown(instructions.text)
        gr.Markdown(f"*Instructions version {instructions.version}*", elem_id="instructions-version")


# Export ----------------------------------------------------------------------------------------------------------


def save_pairs(pairs: list[dict], output_dir: Path, test_fraction: float, seed: int) -> DatasetDict:
    """Preference pairs saved as a DatasetDict at `output_dir/preferences` (atomically), split into train and test
    by prompt, so that test prompts are unseen in training."""
    prompt_ids = sorted({pair["prompt_id"] for pair in pairs})
    random.Random(seed).shuffle(prompt_ids)
    test_ids = set(prompt_ids[: round(len(prompt_ids) * test_fraction)])
    dataset = Dataset.from_list(pairs)
    splits = DatasetDict(
        {
            "train": dataset.filter(lambda p: p["prompt_id"] not in test_ids),
            "test": dataset.filter(lambda p: p["prompt_id"] in test_ids),
        }
    )
    with staged_dir(output_dir / "preferences") as staging:
        splits.save_to_disk(staging)
    return splits
