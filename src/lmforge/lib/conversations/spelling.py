"""Spelling and letter counting, answered by spelling the word out first.

A model reads tokens, not letters: "strawberry" may be one token, so counting its r's in one go is a
guess. Writing the letters out first puts each letter in its own token, where counting is easy, which is
the habit these conversations teach. Answers close with `Final answer: N`, scored by `arithmetic.check`.
"""

import random


WORDS = """
strawberry banana apple orange cherry grape lemon mango papaya pineapple raspberry blueberry
computer keyboard monitor printer internet language science history mountain river ocean island
elephant giraffe kangaroo dolphin penguin butterfly crocodile squirrel rabbit turtle
mississippi committee necessary occasion accommodate embarrass millennium parallel separate
tomorrow yesterday beautiful library calendar chocolate vegetable restaurant umbrella bicycle
assistant question answer letter spelling counting sentence paragraph alphabet dictionary
programming python function variable element triangle rectangle hexagon pyramid cylinder
coffee bookkeeper balloon address success possess bubble pepper puzzle jazz
""".split()
COUNT_QUESTIONS = [
    'How many times does the letter "{letter}" appear in "{word}"?',
    "How many {letter}'s are in the word {word}?",
    'Count the letter {letter} in "{word}".',
    "how many {letter} in {word}",
]
SPELL_QUESTIONS = ["How do you spell {word}?", 'Spell "{word}" letter by letter.', "Can you spell {word} for me?"]


def count_letter(rng: random.Random) -> dict:
    word = rng.choice(WORDS)
    # Mostly letters of the word, sometimes one it lacks, so that "0" is a possible answer.
    letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    positions = [str(index) for index, char in enumerate(word, start=1) if char == letter]
    spelled = ", ".join(word)
    if positions:
        found = f"The letter {letter} is at position{'s' if len(positions) > 1 else ''} {', '.join(positions)}."
    else:
        found = f"The letter {letter} does not appear."
    question = rng.choice(COUNT_QUESTIONS).format(letter=letter, word=word)
    answer = f"Let me spell it out: {spelled}.\n{found}\nFinal answer: {len(positions)}"
    return {"question": question, "solution": answer, "answer": len(positions), "word": word, "letter": letter}


def problems(size: int = 300, seed: int = 0) -> list[dict]:
    """`size` letter-counting problems, the same for the same seed: question, solution, answer, word, letter."""
    rng = random.Random(seed)
    return [count_letter(rng) for _ in range(size)]


def conversations(size: int = 300, seed: int = 0, spell_fraction: float = 0.25) -> list:
    """Letter counting, with `spell_fraction` of plain "how do you spell" questions mixed in."""
    rng = random.Random(seed)
    rows = []
    for row in problems(size, seed):
        if rng.random() < spell_fraction:
            word = rng.choice(WORDS)
            question, solution = rng.choice(SPELL_QUESTIONS).format(word=word), f"{word} is spelled {'-'.join(word)}."
        else:
            question, solution = row["question"], row["solution"]
        rows.append([{"role": "user", "content": question}, {"role": "assistant", "content": solution}])
    return rows
