"""Arithmetic and letter counting answered with a `python` tool call, the result embedded in the turn.

The same problems as lmforge.lib.conversations.arithmetic and .spelling, but the assistant writes code
instead of computing in its head: a model adds badly, and counts letters through its tokens worse.
A reply is one assistant message (see lmforge.lib.tools for the protocol):

    Let me compute it with Python.<|tool_call|>{"name": "python", "arguments": {"code": "x1 = 7 * 12\\n..."}}
    <|/tool_call|><|tool_result|>79<|/tool_result|>The result is 79.\\nFinal answer: 79

The result is the answer known by construction, the number the code prints (tests run the code in the
sandbox to check that); the chat template keeps it out of the loss.
"""

import random
import re

from lmforge.lib.conversations import arithmetic, spelling
from lmforge.lib.tools.protocol import format_call, format_result


# "Step 2: 84 - 5 = 79 apples." -> 84, "-", 5, 79
STEP = re.compile(r"Step \d+: (\d+)\D*?([-+*/]) (\d+)\D*?= (\d+)")
LEADS = ["Let me compute it with Python.", "I'll work it out in Python.", "Python can do the arithmetic.", ""]
COUNT_LEADS = ["Let me count with Python.", "Counting letters is easier in code.", "I'll check with Python.", ""]


def arithmetic_code(solution: str) -> str:
    """The solution's steps as Python, each step's result in a variable the next step uses."""
    lines, previous = [], None
    for number, (left, operator, right, result) in enumerate(STEP.findall(solution), start=1):
        operands = [left, right]
        if previous is not None and previous[1] in operands:
            operands[operands.index(previous[1])] = previous[0]
        lines.append(f"x{number} = {operands[0]} {'//' if operator == '/' else operator} {operands[1]}")
        previous = (f"x{number}", result)
    return "\n".join(lines + [f"print({previous[0]})"])


def reply(rng: random.Random, leads: list[str], code: str, answer: int) -> str:
    call = format_call("python", {"code": code}) + format_result(str(answer))
    return f"{rng.choice(leads)}{call}The result is {answer}.\nFinal answer: {answer}"


def arithmetic_conversations(size: int = 500, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [
        [
            {"role": "user", "content": p["question"]},
            {"role": "assistant", "content": reply(rng, LEADS, arithmetic_code(p["solution"]), p["answer"])},
        ]
        for p in arithmetic.problems(size, seed)
    ]


def counting_conversations(size: int = 300, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [
        [
            {"role": "user", "content": p["question"]},
            {
                "role": "assistant",
                "content": reply(rng, COUNT_LEADS, f"print({p['word']!r}.count({p['letter']!r}))", p["answer"]),
            },
        ]
        for p in spelling.problems(size, seed)
    ]
