"""Markdown tables of results: `lmforge eval` prints its table with them, and the report card embeds the same one."""

# Rows of the evaluation table, in order: metric key of `lmforge eval` -> what it means.
EVAL_ROWS = {
    "bits_per_byte": "bits per byte, held-out web text (lower is better)",
    "compliance": "chat-format compliance",
    "ended_turn": "ends its turn with the model's end-of-turn token",
    "role_leakage": "role leakage (lower is better)",
    "arithmetic_accuracy": "arithmetic accuracy, unseen problems",
    "identity_accuracy": "says its name, held-out identity phrasings",
    "sums_1_accuracy": "sums level 1 (single digits), held-out questions",
    "sums_2_accuracy": "sums level 2 (two-digit + one-digit), held-out questions",
    "sums_3_accuracy": "sums level 3 (two two-digit numbers), held-out questions",
    "known_answer_rate": "answer rate, what SFT taught (identity, sums level 1)",
    "tool_accuracy_off": "accuracy with tools off, held-out arithmetic and counting",
    "tool_accuracy_on": "accuracy with tools on, held-out arithmetic and counting",
    "tool_calls_per_reply": "tool calls per reply, tools on",
    "answer_rate_known": "answer rate, known questions",
    "refusal_rate_known": "refusal rate, known questions (lower is better)",
    "refusal_rate_unknowable": "refusal rate, unknowable questions",
    "reward_model_score": "reward-model score",
    "pairwise_accuracy": "pairwise accuracy, held-out preference pairs",
    "mean_margin": "mean reward margin, chosen - rejected",
    "pairs": "preference pairs scored",
}
FEW_SHOT = "few-shot chat"  # the task of a base model's few-shot replies in `lmforge eval`'s samples


def number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]], text_columns: tuple = (0,)) -> list[str]:
    """A pipe table: the `text_columns` left-aligned, the others (numbers) right-aligned."""
    rule = "|" + "".join("---|" if i in text_columns else "---:|" for i in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", rule]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def cell(text: str, width: int = 120) -> str:
    """`text` as a table cell: one line, shortened to `width` characters, pipes escaped (a pipe splits a cell)."""
    text = " ".join(text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", r"\|") or "(empty)"


def eval_table(results: dict) -> str:
    """`lmforge eval`'s results as a Markdown table, one row per metric and one column per model; notes below."""
    models = results.get("models", {})
    rows = [
        [label] + [number(model["metrics"].get(key)) for model in models.values()]
        for key, label in EVAL_ROWS.items()
        if any(model["metrics"].get(key) is not None for model in models.values())
    ]
    header = ["metric"] + [f"{name} ({model['kind']})" for name, model in models.items()]
    lines = markdown_table(header, rows) if models else ["No model was evaluated."]
    notes = [f"{name}: {model['note']}" for name, model in models.items() if model.get("note")]
    notes += [f"{name}: not evaluated, {reason}" for name, reason in results.get("skipped", {}).items()]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)
