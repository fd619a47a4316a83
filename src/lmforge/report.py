"""Stage 7, report: a run's report card, `report.md` with PNG plots, that reads as a file and as a model card section.

    lmforge report --config recipes/demo/report.yaml

Every input is optional: the section of a stage that has not run says "Not run." What is read, from where:
    data       <data>/funnel.json: steps (step, in, kept, dropped, reasons) and documents_out
    tokenizer  <tokenizer>/compression.json: vocab_size, heldout_fraction, heldout.overall and heldout.per_language
               (documents, bytes, tokens, bytes_per_token)
    training   for each stage of `training`, trainer_state.json in its output directory, else in its last
               checkpoint-N: global_step and log_history's loss (PPO: loss/policy_avg) and eval_loss; for RL, reward
               (GRPO), objective/rlhf_reward (PPO) or rewards/margins (DPO), and kl (GRPO) or objective/kl (PPO)
    cost       <output_dir>/.done/<stage>.json (`lmforge run`): seconds; from the trainer logs: tokens seen
               (num_input_tokens_seen, or TRL's num_tokens), tokens_per_second and mfu (pretrain), train_runtime
    eval       <eval>/results.json (`lmforge eval`): metrics and sample replies per model (a base model's
               "few-shot chat" replies are set beside the assistants' replies to the same questions), skipped models
Writes `<output_dir>/report.md` and its plots in `<output_dir>/report/*.png`, linked relatively, so that the two
can be copied next to a model card's README.md.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

# The object-oriented API, not pyplot: no global figure state, and PNGs render with Agg, no display needed.
from matplotlib.figure import Figure
from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import get_last_checkpoint


os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # experimental is where PPO lives in the pinned TRL 1.12
from trl.experimental.ppo.ppo_trainer import OnlineTrainerState  # noqa: E402

from lmforge.lib.configs import from_json, parse  # noqa: E402
from lmforge.lib.files import read_json, write_text  # noqa: E402
from lmforge.lib.stages import PIPELINE, TRAINING  # noqa: E402
from lmforge.lib.tables import FEW_SHOT, cell, eval_table, markdown_table, number, percent  # noqa: E402
from lmforge.lib.trl_logs import KL, REWARD, TOKENS, TRAIN_LOSS  # noqa: E402


NOT_RUN = "Not run."
REASON_COLOURS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"]


@dataclass
class ReportConfig:
    output_dir: str = field(
        default="runs/demo",
        metadata={
            "help": "The run folder: report.md and report/*.png are written here, and "
            "`lmforge run`'s stage times are read from its .done/."
        },
    )
    data: str = field(default="runs/demo/data", metadata={"help": "The data stage's output_dir (funnel.json)."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "The tokenizer (compression.json)."})
    training: dict | str | None = field(
        default=None,
        metadata={
            "help": "Training stage -> its output_dir (trainer_state.json); default: the "
            "demo's pretrain, sft, reward, ppo, grpo and dpo under runs/demo."
        },
    )
    eval: str = field(default="runs/demo/eval", metadata={"help": "`lmforge eval`'s output_dir (results.json)."})
    samples: int = field(default=1, metadata={"help": "Sample replies shown per task and model."})
    targets: dict | str | None = field(
        default=None,
        metadata={
            "help": "What each stage should show: name -> {stage, target (words), value (where "
            "the figure is: eval.MODEL.METRIC or STAGE.KEY.KEY... in the stage's "
            "<stage>_results.json), and at_least, above, at_most or within: [other "
            "value, points]}; the report says of each whether it was met."
        },
    )

    def __post_init__(self):
        self.training = from_json(self.training, "training")
        self.targets = from_json(self.targets, "targets")
        if self.training is None:
            self.training = {stage: f"runs/demo/{stage}" for stage in TRAINING}


CONFIGS = (ReportConfig,)  # what `--config recipes/*/report*.yaml` is parsed into


def read_optional(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def trainer_state(output_dir: str) -> TrainerState | None:
    """The trainer state saved at the end of training, else the last checkpoint's (SFT saves none at the end).

    OnlineTrainerState is TrainerState plus PPO's `episode` count, which TrainerState.load_from_json refuses; the
    other trainers' states load into it as they are. A last checkpoint cut short by a kill (no trainer_state.json
    yet) counts as no state: the stage's rerun deletes it (lmforge.lib.models.last_checkpoint)."""
    path = Path(output_dir) / TRAINER_STATE_NAME
    if not path.is_file() and Path(output_dir).is_dir() and (checkpoint := get_last_checkpoint(output_dir)):
        path = Path(checkpoint) / TRAINER_STATE_NAME
    return OnlineTrainerState.load_from_json(str(path)) if path.is_file() else None


def series(history: list[dict], keys: tuple) -> tuple[str | None, list, list]:
    """The first of `keys` that the log has, with the steps and values where it was logged."""
    for key in keys:
        points = [(entry.get("step", i), entry[key]) for i, entry in enumerate(history) if key in entry]
        if points:
            return key, [step for step, _ in points], [value for _, value in points]
    return None, [], []


def mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def save(figure: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return f"{path.parent.name}/{path.name}"  # relative to report.md, which sits beside the folder


def plot_funnel(steps: list[dict], path: Path) -> str:
    """Documents reaching each step: kept, and dropped by reason (one colour per reason)."""
    figure = Figure(figsize=(9, 1.5 + 0.45 * len(steps)))
    axes = figure.subplots()
    y = list(range(len(steps)))
    left = [step["kept"] for step in steps]
    axes.barh(y, left, color="0.75", label="kept")  # grey, and no reason gets matplotlib's grey (C7)
    reasons = list(dict.fromkeys(reason for step in steps for reason in step["reasons"]))
    for index, reason in enumerate(reasons):
        widths = [step["reasons"].get(reason, 0) for step in steps]
        # Nine colours, then the same hatched, so that every reason stays distinct in the legend.
        axes.barh(
            y, widths, left=left, label=reason, color=REASON_COLOURS[index % 9], hatch="//" if index >= 9 else None
        )
        left = [a + b for a, b in zip(left, widths)]
    axes.set_yticks(y, [step["step"] for step in steps])
    axes.invert_yaxis()  # the first step on top, as in the table
    axes.set_xlabel("documents")
    axes.set_title("Documents in at each step: kept, and dropped by reason")
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return save(figure, path)


def data_section(config: ReportConfig, images: Path) -> tuple[list[str], str | None]:
    funnel = read_optional(Path(config.data) / "funnel.json")
    if funnel is None:
        return [NOT_RUN], None
    steps = funnel["steps"]
    rows = [
        [
            step["step"],
            number(step["in"]),
            number(step["kept"]),
            number(step["dropped"]),
            ", ".join(f"{reason} {n}" for reason, n in step["reasons"].items()) or "–",
        ]
        for step in steps
    ]
    read = steps[0]["in"] if steps else None
    lines = [
        f"{number(funnel['documents_out'])} documents written of {number(read)} read "
        f"({number(funnel.get('bad_files', 0))} unreadable input files).",
        "",
    ]
    if steps:
        lines += [f"![Data funnel]({plot_funnel(steps, images / 'funnel.png')})", ""]
    lines += markdown_table(["step", "in", "kept", "dropped", "dropped by reason"], rows, text_columns=(0, 4))
    return lines, f"{number(funnel['documents_out'])} of {number(read)} documents kept"


def tokenizer_section(config: ReportConfig, images: Path) -> tuple[list[str], str | None]:
    report = read_optional(Path(config.tokenizer) / "compression.json")
    if report is None:
        return [NOT_RUN], None
    overall, languages = report["heldout"]["overall"], report["heldout"]["per_language"]
    groups = languages if len(languages) == 1 else {"all": overall, **languages}
    figure = Figure(figsize=(max(4.0, 1.5 + 0.8 * len(groups)), 3.5))
    axes = figure.subplots()
    axes.bar(list(groups), [counts["bytes_per_token"] for counts in groups.values()], width=0.6, color="tab:blue")
    axes.set_ylabel("UTF-8 bytes per token")
    axes.set_title("Compression, held-out documents")
    image = save(figure, images / "compression.png")
    rows = [
        [name, number(c["documents"]), number(c["bytes"]), number(c["tokens"]), number(c["bytes_per_token"])]
        for name, c in groups.items()
    ]
    lines = [
        f"Byte-level BPE, {number(report['vocab_size'])} tokens; compression measured on the "
        f"{number(report['heldout_fraction'], 2)} of documents held out of its training.",
        "",
        f"![Tokenizer compression]({image})",
        "",
    ]
    lines += markdown_table(["language", "documents", "bytes", "tokens", "bytes per token"], rows)
    return lines, f"{number(report['vocab_size'])}-token tokenizer at {overall['bytes_per_token']} bytes/token"


def plot_training(stage: str, history: list[dict], path: Path) -> str:
    """Loss, and for RL stages reward and KL, against the optimizer step."""
    panels = [("loss", [series(history, TRAIN_LOSS), series(history, ("eval_loss",))])]
    if series(history, REWARD)[0] or series(history, KL)[0]:
        panels += [("reward", [series(history, REWARD)]), ("KL to the reference", [series(history, KL)])]
    figure = Figure(figsize=(4.2 * len(panels), 3.3))
    for axes, (title, lines) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, steps, values in lines:
            if key:
                axes.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
        if any(key for key, _, _ in lines):
            axes.legend(fontsize="small")
        else:
            axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(f"{stage}: {title}")
        axes.set_xlabel("step")
    return save(figure, path)


def training_section(states: dict, images: Path) -> tuple[list[str], str | None]:
    trained = {stage: state for stage, state in states.items() if state is not None}
    if not trained:
        return [NOT_RUN], None
    rows, figures = [], []
    for stage, state in states.items():
        if state is None:
            rows.append([stage, "not run", "–", "–", "–", "–"])
            continue
        history = state.log_history
        loss, evals = series(history, TRAIN_LOSS)[2], series(history, ("eval_loss",))[2]
        reward, kl = series(history, REWARD), series(history, KL)
        rows.append(
            [
                stage,
                number(state.global_step),
                f"{number(loss[0])} → {number(loss[-1])}" if loss else "–",
                number(evals[-1] if evals else None),
                f"{number(reward[2][0])} → {number(reward[2][-1])} ({reward[0]})" if reward[0] else "–",
                f"{number(kl[2][-1])} ({kl[0]})" if kl[0] else "–",
            ]
        )
        figures += [
            f"![{stage} training curves]({plot_training(stage, history, images / f'training_{stage}.png')})",
            "",
        ]
    lines = markdown_table(
        ["stage", "steps", "train loss, first → last", "last eval loss", "reward, first → last", "last KL"], rows
    )
    return lines + [""] + figures[:-1], "trained " + ", ".join(trained)


def eval_section(results: dict | None, samples: int) -> tuple[list[str], list[str], str | None]:
    """The evaluation table, the sample replies, and a summary of each model's headline figure."""
    if results is None:
        return [NOT_RUN], [NOT_RUN], None
    headline = {
        "base": ("bits_per_byte", "bits/byte"),
        "assistant": ("compliance", "compliance"),
        "reward": ("pairwise_accuracy", "pairwise accuracy"),
    }
    summary = []
    for name, model in results["models"].items():
        key, label = headline[model["kind"]]
        if model["metrics"].get(key) is not None:
            summary.append(f"{name} {label} {number(model['metrics'][key])}")
        if "ifeval" in model.get("benchmarks", {}):  # the one figure of the demo anyone can compare
            summary.append(f"{name} IFEval {percent(model['benchmarks']['ifeval'])} %")
    conversations = []
    for name, model in results["models"].items():
        shown = {}
        for sample in model.get("samples", []):
            if sample["task"] != FEW_SHOT and shown.setdefault(sample["task"], 0) < samples:
                shown[sample["task"]] += 1
                fence = "````" if "```" in sample["reply"] else "```"
                conversations += [
                    f"**{name}**, {sample['task']}:",
                    "",
                    *[f"> {line}" for line in sample["prompt"].splitlines()],
                    "",
                    f"{fence}text",
                    sample["reply"],
                    fence,
                    "",
                ]
    conversations = conversations[:-1] or ["No sample was saved."]
    return eval_table(results).splitlines(), conversations, "eval: " + ", ".join(summary) if summary else None


def figure_at(path: str, results: dict | None, training: dict) -> float | None:
    """The figure a target names: eval.MODEL.METRIC from `lmforge eval`'s results, or STAGE.KEY... from the stage's
    own `<stage>_results.json` (a key may be a list index); None where it is missing."""
    head, *keys = path.split(".")
    if head == "eval":
        value = (results or {}).get("models", {})
        keys = [keys[0], "metrics", *keys[1:]]
    else:
        value = read_optional(Path(training.get(head, f"runs/demo/{head}")) / f"{head}_results.json")
    for key in keys:
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value if isinstance(value, (int, float)) else None


def target_met(target: dict, value: float, results: dict | None, training: dict) -> tuple[str, bool | None]:
    """The target's bound in words, and whether `value` meets it (None where the bound's own figure is missing)."""
    if "within" in target:
        other, points = target["within"]
        reference = figure_at(other, results, training)
        if reference is None:
            return f"within {points} of {other}", None
        return f"within {points} of {number(reference)} ({other})", abs(value - reference) <= points
    bounds, met = [], True
    if "at_least" in target:
        bounds.append(f"≥ {target['at_least']}")
        met = met and value >= target["at_least"]
    if "above" in target:
        bounds.append(f"> {target['above']}")
        met = met and value > target["above"]
    if "at_most" in target:
        bounds.append(f"≤ {target['at_most']}")
        met = met and value <= target["at_most"]
    return " and ".join(bounds), met


def targets_section(config: ReportConfig, results: dict | None) -> list[str]:
    """One row per target of the recipe: stage, what it should show, the figure measured, the bound, met or not."""
    if not config.targets:
        return ["No targets were set (report recipe `targets:`)."]
    rows, met_count = [], 0
    for target in config.targets.values():
        value = figure_at(target["value"], results, config.training)
        if value is None:
            rows.append([target["stage"], target["target"], "–", "", "not measured"])
            continue
        bound, met = target_met(target, value, results, config.training)
        met_count += bool(met)
        rows.append(
            [
                target["stage"],
                target["target"],
                number(value),
                bound,
                "**met**" if met else "not met" if met is not None else "not measured",
            ]
        )
    lines = [
        f"What each stage should show on held-out data, the figure measured, and whether it was met: "
        f"{met_count} of {len(config.targets)} targets met.",
        "",
    ]
    return lines + markdown_table(["stage", "target", "measured", "bound", "met"], rows, text_columns=(0, 1, 3, 4))


def beside_section(results: dict | None) -> list[str]:
    """Each question a base model answered few-shot: its reply beside every assistant's reply to the question."""
    models = (results or {}).get("models", {})
    few_shot = {
        f"{name} (few-shot)": {s["prompt"]: s["reply"] for s in model.get("samples", []) if s["task"] == FEW_SHOT}
        for name, model in models.items()
        if model["kind"] == "base"
    }
    questions = list(dict.fromkeys(question for replies in few_shot.values() for question in replies))
    if not questions:
        return [NOT_RUN]
    assistants = {
        name: {s["prompt"]: s["reply"] for s in model.get("samples", [])}
        for name, model in models.items()
        if model["kind"] == "assistant"
    }
    columns = few_shot | assistants
    rows = [
        [cell(question)] + [cell(replies[question]) if question in replies else "–" for replies in columns.values()]
        for question in questions
    ]
    lines = [
        "Greedy replies to the same questions: a base model's through a few-shot prompt (`lmforge.lib.fewshot`), "
        "each assistant's through its chat template; one line each, shortened.",
        "",
    ]
    return lines + markdown_table(["question", *columns], rows, text_columns=tuple(range(len(columns) + 1)))


def tokens_seen(state: TrainerState) -> float | None:
    for entry in reversed(state.log_history):
        for key in TOKENS:
            if entry.get(key):
                return entry[key]
    return state.num_input_tokens_seen or None


def cost_section(config: ReportConfig, states: dict) -> tuple[list[str], str | None]:
    done = Path(config.output_dir) / ".done"
    seconds = {
        stage: read_json(done / f"{stage}.json")["seconds"] for stage in PIPELINE if (done / f"{stage}.json").is_file()
    }
    stages = [stage for stage in PIPELINE if stage in seconds or states.get(stage)]
    stages += [stage for stage in states if states[stage] and stage not in stages]
    if not stages:
        return [NOT_RUN], None
    rows = []
    for stage in stages:
        state = states.get(stage)
        history = state.log_history if state else []
        tokens = tokens_seen(state) if state else None
        runtime = next((entry["train_runtime"] for entry in reversed(history) if "train_runtime" in entry), None)
        # Pretraining logs its own rate, timed over the steps alone; otherwise tokens over the training run's time.
        rate = mean(series(history, ("tokens_per_second",))[2]) or (tokens / runtime if tokens and runtime else None)
        mfu = mean(series(history, ("mfu",))[2])
        rows.append(
            [
                stage,
                duration(seconds.get(stage)),
                number(state.global_step if state else None),
                number(tokens),
                number(rate, 0),
                f"{mfu:.1%}" if mfu is not None else "–",
            ]
        )
    total = sum(seconds.values())
    rows.append(["**total**", f"**{duration(total)}**" if seconds else "–", "", "", "", ""])
    lines = [
        "Wall time per stage as `lmforge run` measured it; tokens and throughput from the trainers' logs "
        "(MFU only on GPUs whose peak is known).",
        "",
    ]
    lines += markdown_table(["stage", "wall time", "steps", "tokens seen", "tokens/s", "MFU"], rows)
    return lines, f"{duration(total)} of stage wall time" if seconds else None


def render(config: ReportConfig) -> str:
    images = Path(config.output_dir) / "report"
    states = {stage: trainer_state(path) for stage, path in config.training.items()}
    data, data_summary = data_section(config, images)
    tokenizer, tokenizer_summary = tokenizer_section(config, images)
    training, training_summary = training_section(states, images)
    results = read_optional(Path(config.eval) / "results.json")
    table, conversations, eval_summary = eval_section(results, config.samples)
    cost, cost_summary = cost_section(config, states)
    targets = targets_section(config, results)
    summary = [s for s in (data_summary, tokenizer_summary, training_summary, eval_summary, cost_summary) if s]
    name = Path(config.output_dir).resolve().name
    sections = [
        (f"## lmforge run `{name}`", ["; ".join(summary) + "." if summary else "Nothing has run yet."]),
        ("### Targets", targets),
        ("### Data", data),
        ("### Tokenizer", tokenizer),
        ("### Training", training),
        ("### Evaluation", table),
        ("### Sample conversations", conversations),
        ("### Base model (few-shot) beside the assistants", beside_section(results)),
        ("### Cost", cost),
    ]
    return "\n\n".join(f"{title}\n\n" + "\n".join(lines) for title, lines in sections) + "\n"


def main(config: ReportConfig) -> Path:
    path = Path(config.output_dir) / "report.md"
    write_text(path, render(config))  # a killed run leaves the previous report whole
    print(f"report: {path}")
    return path


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
