"""Human-written chit-chat from the `chatterbot-corpus` package (BSD licence), read from its YAML files.

Each file holds conversations as lists of turns alternating user, assistant; a prompt with several
answers appears once per answer. The `ai` and `botprofile` files describe another bot's persona (its
name, its origin), which would contradict the identity conversations, so they are left out by default.
"""

import random
from pathlib import Path

import yaml
from chatterbot_corpus.corpus import DATA_DIRECTORY

from lmforge import LmforgeError


def conversations(
    size: int | None = None,
    seed: int = 0,
    language: str = "english",
    exclude: list | None = None,
    max_messages: int = 8,
) -> list:
    """All conversations of `language` (or `size` of them), cut into pieces of at most `max_messages`
    user/assistant messages: a few files chain dozens of trivia questions into one list."""
    exclude = ["ai", "botprofile"] if exclude is None else exclude
    folder = Path(DATA_DIRECTORY) / language
    if not folder.is_dir():
        raise LmforgeError(f"chatterbot: no language {language!r} in {DATA_DIRECTORY}")
    rows = []
    for path in sorted(folder.glob("*.yml")):
        if path.stem in exclude:
            continue
        for turns in yaml.safe_load(path.read_text(encoding="utf-8"))["conversations"]:
            if not isinstance(turns, list):  # a few entries are a bare string, not a list of turns
                continue
            turns = [str(turn).strip() for turn in turns]
            turns = turns[: len(turns) // 2 * 2]  # a conversation ending on the user's turn has nothing to learn
            for start in range(0, len(turns), max_messages):
                piece = turns[start : start + max_messages]
                rows.append([{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(piece)])
    if size is not None:
        rows = random.Random(seed).sample(rows, min(size, len(rows)))
    return rows
