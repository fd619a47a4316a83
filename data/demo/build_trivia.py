"""Rebuild data/demo/trivia.jsonl, questions the demo assistant is never taught, from chatterbot-corpus.

    python data/demo/build_trivia.py

Each question is the first user turn of a conversation in the corpus's English trivia, history and science files
(left out of the demo's SFT chit-chat, see recipes/demo/sft.yaml) and its answer the reply that follows.
`lmforge interrogate` asks them: the SFT model cannot know them, so each becomes a refusal to learn.
The corpus is BSD-licensed (see NOTICE).
"""

import json
from pathlib import Path

from chatterbot_corpus.corpus import DATA_DIRECTORY

from lmforge.lib.conversations import chatterbot


HERE = Path(__file__).parent
FILES = ["trivia", "history", "science"]


def main() -> None:
    every = {path.stem for path in (Path(DATA_DIRECTORY) / "english").glob("*.yml")}
    rows, seen = [], set()
    for turns in chatterbot.conversations(language="english", exclude=sorted(every - set(FILES)), max_messages=2):
        question, answer = turns[0]["content"], turns[1]["content"]
        if question.endswith("?") and question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": answer})
    with open(HERE / "trivia.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(rows)} questions -> {HERE / 'trivia.jsonl'}")


if __name__ == "__main__":
    main()
