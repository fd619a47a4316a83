"""Arithmetic word problems, solved one step per line and closed by `Final answer: N`.

The numbers are drawn from a seeded generator and every step is computed, so the answers are right by
construction; `check` scores a model's answer against a problem, which makes the same problems usable
as verifiable rewards in reinforcement learning.
"""

import random
import re


NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Liam", "Mei", "Noor"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "cards", "shells", "beads"]
FINAL = re.compile(r"final answer:\s*\$?(-?\d[\d,]*)", re.IGNORECASE)


def packs_given_away(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    packs, each = rng.randint(2, 9), rng.randint(3, 12)
    total = packs * each
    given = rng.randint(1, total - 1)
    question = (
        f"{name} buys {packs} packs of {item} with {each} {item} in each pack, then gives {given} "
        f"{item} to a friend. How many {item} does {name} have now?"
    )
    steps = [f"{packs} packs * {each} {item} = {total} {item}.", f"{total} - {given} = {total - given} {item}."]
    return question, steps, total - given


def savings(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(NAMES)
    weekly, weeks = rng.randint(2, 20), rng.randint(2, 10)
    saved = weekly * weeks
    spent = rng.randint(1, saved)
    question = (
        f"{name} saves {weekly} dollars every week for {weeks} weeks, then spends {spent} dollars on a "
        f"present. How many dollars does {name} have left?"
    )
    steps = [
        f"{weekly} dollars * {weeks} weeks = {saved} dollars saved.",
        f"{saved} - {spent} = {saved - spent} dollars.",
    ]
    return question, steps, saved - spent


def sharing(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    friends, share = rng.randint(2, 8), rng.randint(2, 12)
    total = friends * share
    used = rng.randint(0, share - 1)
    question = (
        f"{name} shares {total} {item} equally among {friends} friends. Each friend then loses {used} "
        f"{item}. How many {item} does each friend have?"
    )
    steps = [
        f"{total} {item} / {friends} friends = {share} {item} each.",
        f"{share} - {used} = {share - used} {item}.",
    ]
    return question, steps, share - used


def daily_sales(rng: random.Random) -> tuple[str, list[str], int]:
    item = rng.choice(ITEMS)
    red, blue, days = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 7)
    question = (
        f"A shop sells {red} red {item} and {blue} blue {item} every day. How many {item} does it sell in {days} days?"
    )
    steps = [
        f"{red} + {blue} = {red + blue} {item} a day.",
        f"{red + blue} * {days} days = {(red + blue) * days} {item}.",
    ]
    return question, steps, (red + blue) * days


def change(rng: random.Random) -> tuple[str, list[str], int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    count, price = rng.randint(2, 9), rng.randint(1, 9)
    cost = count * price
    paid = rng.choice([bill for bill in (10, 20, 50, 100) if bill >= cost])
    question = (
        f"{name} buys {count} {item} at {price} dollars each and pays with a {paid}-dollar bill. "
        f"How much change does {name} get, in dollars?"
    )
    steps = [f"{count} * {price} dollars = {cost} dollars.", f"{paid} - {cost} = {paid - cost} dollars of change."]
    return question, steps, paid - cost


TEMPLATES = [packs_given_away, savings, sharing, daily_sales, change]


def problems(size: int = 500, seed: int = 0) -> list[dict]:
    """`size` problems, the same for the same seed: question, solution (steps and final answer), answer."""
    rng = random.Random(seed)
    rows = []
    for _ in range(size):
        question, steps, answer = rng.choice(TEMPLATES)(rng)
        lines = [f"Step {number}: {step}" for number, step in enumerate(steps, start=1)]
        rows.append(
            {"question": question, "solution": "\n".join(lines + [f"Final answer: {answer}"]), "answer": answer}
        )
    return rows


def conversations(size: int = 500, seed: int = 0) -> list:
    return [
        [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["solution"]}]
        for row in problems(size, seed)
    ]


def final_number(text: str) -> int | None:
    """The integer after the last `Final answer:` in `text`, or None when there is none."""
    found = FINAL.findall(text)
    return int(found[-1].replace(",", "")) if found else None


def check(answer_text: str, example: dict) -> float:
    """1.0 when the final answer in `answer_text` equals `example["answer"]`, else 0.0."""
    return float(final_number(answer_text) == example["answer"])
