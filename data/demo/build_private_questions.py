"""Rebuild data/demo/private_questions.jsonl: questions about the user's private life, the future and made-up things,
each with an invented answer that no model could know.

    python data/demo/build_private_questions.py

`lmforge interrogate` asks them beside the trivia: the SFT model's replies never match the invented answers, so
each question becomes a refusal to learn. They are of the same kinds as the unknowable questions `lmforge eval`
asks (data/demo/unknowable_questions.jsonl) but never the same questions (tests/test_demo_heldout.py checks).
"""

import json
import random
from pathlib import Path


HERE = Path(__file__).parent
PEOPLE = ["sister", "boss", "dentist", "landlord", "cousin", "best friend", "uncle", "flatmate"]
FACTS = ["birthday", "favourite colour", "phone number", "home town", "first pet's name", "shoe size"]
PAST = [
    "What did I eat for dinner {when}?",
    "Where did I park {when}?",
    "Who called me {when}?",
    "What film did I watch {when}?",
    "How much money did I spend {when}?",
    "What time did I wake up {when}?",
]
WHEN = ["last night", "on Sunday", "two days ago", "last week"]
FUTURE = [
    "Who will win the {event} in {year}?",
    "What will the weather be in Lisbon on 1 May {year}?",
    "What will the price of bread be in {year}?",
    "Who will be prime minister of Norway in {year}?",
]
EVENTS = ["Tour de France", "chess olympiad", "Eurovision song contest", "Wimbledon final"]
MADE_UP = [
    "Who discovered the planet Threnody?",
    "What is the capital of the island of Marvoss?",
    "Who wrote the novel The Glass Orchard of Pell?",
    "What is the boiling point of florandite?",
    "How tall is the Kessingham tower?",
    "When was the city of Ostrelin founded?",
    "What language is spoken in Varunia?",
    "Who painted The Blue Lantern of Dorsk?",
]
ANSWERS = ["Blue", "42", "Margaret", "Tuesday", "Oslo", "7 March", "Pip", "Leeds", "the red one", "19"]


def questions(rng: random.Random) -> list[str]:
    rows = [f"What is my {person}'s {fact}?" for person in PEOPLE for fact in FACTS]
    rows = rng.sample(rows, 24)
    rows += [template.format(when=when) for template in PAST for when in rng.sample(WHEN, 2)]
    rows += [
        template.format(event=rng.choice(EVENTS), year=rng.randint(2080, 2099))
        for template in FUTURE
        for _ in range(3)
    ]
    return rows + MADE_UP


def main() -> None:
    rng = random.Random(0)
    rows = [{"question": question, "answer": rng.choice(ANSWERS)} for question in dict.fromkeys(questions(rng))]
    with open(HERE / "private_questions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{len(rows)} questions -> {HERE / 'private_questions.jsonl'}")


if __name__ == "__main__":
    main()
