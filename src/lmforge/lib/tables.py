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


def percent(score: dict | None) -> str:
    if score is None:
        return "–"
    stderr = f" ± {100 * score['stderr']:.1f}" if score["stderr"] is not None else ""
    return f"{100 * score['score']:.1f}{stderr}"


def benchmark_table(models: dict) -> list[str]:
    """The benchmarks of `lmforge eval` (lmforge.lib.benchmarks): one row per benchmark, one column per model, the
    score ± its standard error in percent; then a before/after row per benchmark for each model trained `from`
    another one; notes (such as a stand-in test set) below."""
    models = {name: model for name, model in models.items() if model.get("benchmarks")}
    first = {}  # each benchmark's settings, from the first model scored on it
    for model in models.values():
        for name, score in model["benchmarks"].items():
            first.setdefault(name, score)
    if not first:
        return []
    rows = [
        [name, score["metric"].removesuffix(",none"), str(score["num_fewshot"]), number(score["rows"])]
        + [percent(model["benchmarks"].get(name)) for model in models.values()]
        for name, score in first.items()
    ]
    header = ["benchmark", "metric", "n-shot", "rows"] + [
        f"{name} ({model['kind']})" for name, model in models.items()
    ]
    lines = ["", "Benchmarks (lm-eval; percent ± standard error):", "", *markdown_table(header, rows, (0, 1))]
    changes = []
    for name, model in models.items():
        before = models.get(model.get("from"), {}).get("benchmarks", {})
        for benchmark, score in model["benchmarks"].items():
            if benchmark in before:
                change = f"{100 * (score['score'] - before[benchmark]['score']):+.1f}"
                changes.append(
                    [f"{model['from']} → {name}", benchmark, percent(before[benchmark]), percent(score), change]
                )
    if changes:
        lines += ["", *markdown_table(["stage", "benchmark", "before", "after", "change"], changes, (0, 1))]
    notes = [f"- {name}: {score['note']}" for name, score in first.items() if score.get("note")]
    return lines + ([""] + notes if notes else [])


def eval_table(results: dict) -> str:
    """`lmforge eval`'s results as a Markdown table, one row per metric and one column per model, then the benchmarks
    table; notes below."""
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
    return "\n".join(lines + benchmark_table(models))
