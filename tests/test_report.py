"""The report card on a run folder faked in the stages' real formats: every section, valid PNGs behind relative
links, figures read from the right files and keys, the base model's few-shot replies beside the assistants', and
"Not run." wherever a stage has left nothing."""

import json
import re

import pytest
from PIL import Image

from lmforge import report
from lmforge.lib.configs import parse
from lmforge.lib.files import write_json


FUNNEL = {  # lmforge data's funnel.json
    "steps": [
        {"step": "read_warc", "in": 20, "kept": 19, "dropped": 1, "reasons": {"not_html": 1}},
        {"step": "language_filter", "in": 19, "kept": 12, "dropped": 7, "reasons": {"language": 7}},
        {
            "step": "gopher_quality",
            "in": 12,
            "kept": 9,
            "dropped": 3,
            "reasons": {"gopher_short_doc": 2, "gopher_below_alpha_threshold": 1},
        },
    ],
    "documents_out": 9,
    "bad_files": 0,
}
COMPRESSION = {  # lmforge tokenizer's compression.json
    "vocab_size": 4096,
    "heldout_fraction": 0.05,
    "heldout": {
        "overall": {"documents": 3, "bytes": 9000, "tokens": 3000, "bytes_per_token": 3.0},
        "per_language": {
            "de": {"documents": 1, "bytes": 2000, "tokens": 800, "bytes_per_token": 2.5},
            "en": {"documents": 2, "bytes": 7000, "tokens": 2200, "bytes_per_token": 3.182},
        },
    },
}
PRETRAIN_LOG = [  # transformers Trainer with lmforge pretrain's Throughput callback
    {
        "epoch": 0.1,
        "grad_norm": 0.8,
        "learning_rate": 0.001,
        "loss": 8.0,
        "step": 10,
        "tokens_per_second": 1000,
        "mfu": 0.30,
    },
    {"epoch": 0.2, "eval_bits_per_byte": 3.1, "eval_loss": 7.0, "step": 20},
    {
        "epoch": 0.2,
        "grad_norm": 0.5,
        "learning_rate": 0.002,
        "loss": 6.5,
        "step": 20,
        "tokens_per_second": 3000,
        "mfu": 0.40,
    },
    {"epoch": 0.2, "step": 20, "total_flos": 1e12, "train_loss": 7.2, "train_runtime": 30.0},
]
SFT_LOG = [  # TRL SFTTrainer
    {"loss": 3.0, "num_tokens": 5000.0, "mean_token_accuracy": 0.2, "step": 10},
    {"loss": 1.5, "num_tokens": 10000.0, "mean_token_accuracy": 0.6, "step": 20},
]
GRPO_LOG = [  # TRL GRPOTrainer
    {"loss": 0.01, "reward": 0.1, "kl": 0.0, "num_tokens": 2000.0, "completions/mean_length": 30.0, "step": 5},
    {"loss": 0.02, "reward": 0.5, "kl": 0.04, "num_tokens": 4000.0, "completions/mean_length": 25.0, "step": 10},
    {"step": 10, "train_loss": 0.015, "train_runtime": 80.0},
]
RESULTS = {  # lmforge eval's results.json
    "models": {
        "base": {
            "path": "runs/x/pretrain",
            "kind": "base",
            "metrics": {"bits_per_byte": 2.75},
            "note": None,
            "samples": [
                {"task": "continuation", "prompt": "The river", "reply": " ran past the mill"},
                {"task": "few-shot chat", "prompt": "Ana buys 3 packs.\nHow many?", "reply": "Nine."},
                {"task": "few-shot chat", "prompt": "What did I eat?", "reply": "Rice | beans,\nthen tea."},
                {"task": "few-shot chat", "prompt": "Who are you?", "reply": "I am " + "very " * 40},
            ],
        },
        "sft": {
            "path": "runs/x/sft",
            "kind": "assistant",
            "note": None,
            "metrics": {
                "bits_per_byte": 2.9,
                "compliance": 0.75,
                "ended_turn": 0.8,
                "role_leakage": 0.05,
                "arithmetic_accuracy": 0.25,
                "answer_rate_known": 0.5,
                "refusal_rate_known": 0.0,
                "refusal_rate_unknowable": 0.1,
                "tool_accuracy_off": 0.25,
                "tool_accuracy_on": 0.5,
                "tool_calls_per_reply": 1.25,
            },
            "samples": [
                {"task": "arithmetic", "prompt": "Ana buys 3 packs.\nHow many?", "reply": "Final answer: 9<|im_end|>"},
                {"task": "arithmetic", "prompt": "second", "reply": "not shown"},
                {"task": "unknowable", "prompt": "What did I eat?", "reply": "I don't know.<|im_end|>"},
            ],
        },
        "reward": {
            "path": "runs/x/reward",
            "kind": "reward",
            "metrics": {},
            "samples": [],
            "note": "no preference pairs at runs/x/labels/preferences (run `lmforge label`)",
        },
    },
    "skipped": {"dpo": "runs/x/dpo does not exist (stage not run)"},
}
DONE = {"data": 60.0, "tokenizer": 5.0, "pretrain": 300.0, "sft": 120.0, "grpo": 200.0, "eval": 40.0}


def state(log, global_step):
    return {"global_step": global_step, "log_history": log, "num_input_tokens_seen": 0, "max_steps": global_step}


@pytest.fixture
def run(tmp_path):
    """A run folder as the stages and `lmforge run` leave it, with no reward, ppo or dpo stage run."""
    write_json(tmp_path / "data" / "funnel.json", FUNNEL)
    write_json(tmp_path / "tokenizer" / "compression.json", COMPRESSION)
    write_json(tmp_path / "pretrain" / "trainer_state.json", state(PRETRAIN_LOG, 20))
    # SFT saves no trainer state at the end: its last checkpoint's is read, not an earlier one's.
    write_json(tmp_path / "sft" / "checkpoint-10" / "trainer_state.json", state(SFT_LOG[:1], 10))
    write_json(tmp_path / "sft" / "checkpoint-20" / "trainer_state.json", state(SFT_LOG, 20))
    write_json(tmp_path / "grpo" / "trainer_state.json", state(GRPO_LOG, 10))
    write_json(tmp_path / "eval" / "results.json", RESULTS)
    for stage, seconds in DONE.items():
        marker = {
            "stage": stage,
            "recipe": f"recipes/x/{stage}.yaml",
            "seconds": seconds,
            "recipe_sha256": "0" * 64,
            "finished": "2026-11-23T12:00:00+0000",
        }  # as `lmforge run` writes it
        write_json(tmp_path / ".done" / f"{stage}.json", marker)
    return tmp_path


def make_report(run, *extra):
    training = {stage: str(run / stage) for stage in ("pretrain", "sft", "reward", "ppo", "grpo", "dpo")}
    argv = [
        "--config",
        "recipes/demo/report.yaml",
        "--output_dir",
        str(run),
        "--data",
        str(run / "data"),
        "--tokenizer",
        str(run / "tokenizer"),
        "--eval",
        str(run / "eval"),
        "--training",
        json.dumps(training),
        *extra,
    ]
    path = report.main(*parse(report.CONFIGS, argv))
    return path, path.read_text()


def section(text, title):
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0].strip()


def table_row(text, first_cell):
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |")).split(" | ")


def test_every_section_with_valid_images_behind_relative_links(run):
    path, text = make_report(run)
    assert path == run / "report.md"
    titles = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    assert titles == [
        f"lmforge run `{run.name}`",
        "Targets",
        "Data",
        "Tokenizer",
        "Training",
        "Evaluation",
        "Sample conversations",
        "Base model (few-shot) beside the assistants",
        "Cost",
    ]
    summary = text.splitlines()[2]
    assert summary == (
        "9 of 20 documents kept; 4,096-token tokenizer at 3.0 bytes/token; trained pretrain, sft, "
        "grpo; eval: base bits/byte 2.750, sft compliance 0.750; 12.1 min of stage wall time."
    )
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == [
        "report/funnel.png",
        "report/compression.png",
        "report/training_pretrain.png",
        "report/training_sft.png",
        "report/training_grpo.png",
    ]
    for link in links:
        with Image.open(run / link) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200
            image.verify()


def test_figures_come_from_the_right_files_and_keys(run):
    _, text = make_report(run)
    reasons = "gopher_short_doc 2, gopher_below_alpha_threshold 1 |"
    assert table_row(section(text, "Data"), "gopher_quality")[1:] == ["12", "9", "3", reasons]
    assert table_row(section(text, "Tokenizer"), "de")[-1] == "2.500 |"
    training = section(text, "Training")
    assert table_row(training, "pretrain")[1:4] == ["20", "8.000 → 6.500", "7.000"]
    assert table_row(training, "sft")[1:3] == ["20", "3.000 → 1.500"]  # from checkpoint-20
    assert table_row(training, "grpo")[4:] == ["0.100 → 0.500 (reward)", "0.040 (kl) |"]
    assert table_row(training, "dpo")[1] == "not run"
    cost = section(text, "Cost")
    # pretrain: its logged rate and MFU, averaged; sft: no runtime logged; grpo: TRL's num_tokens / train_runtime.
    assert table_row(cost, "pretrain")[1:] == ["5.0 min", "20", "–", "2,000", "35.0% |"]
    assert table_row(cost, "sft")[1:] == ["2.0 min", "20", "10,000", "–", "– |"]
    assert table_row(cost, "grpo")[1:] == ["3.3 min", "10", "4,000", "50", "– |"]
    assert table_row(cost, "data")[1:3] == ["60 s", "–"]
    assert table_row(cost, "**total**")[1] == "**12.1 min**"


def test_evaluation_table_has_a_column_per_model_and_the_samples(run):
    _, text = make_report(run)
    evaluation = section(text, "Evaluation")
    assert evaluation.splitlines()[0] == "| metric | base (base) | sft (assistant) | reward (reward) |"
    assert table_row(evaluation, "bits per byte, held-out web text (lower is better)")[1:] == ["2.750", "2.900", "– |"]
    assert "- reward: no preference pairs at runs/x/labels/preferences" in evaluation
    assert "- dpo: not evaluated, runs/x/dpo does not exist (stage not run)" in evaluation
    tools_off = table_row(evaluation, "accuracy with tools off, held-out arithmetic and counting")
    assert tools_off[1:] == ["–", "0.250", "– |"]
    assert table_row(evaluation, "accuracy with tools on, held-out arithmetic and counting")[2] == "0.500"
    assert table_row(evaluation, "tool calls per reply, tools on")[2] == "1.250"
    samples = section(text, "Sample conversations")
    assert "> Ana buys 3 packs.\n> How many?\n\n```text\nFinal answer: 9<|im_end|>\n```" in samples
    assert "not shown" not in samples  # one sample per task and model
    assert "**sft**, unknowable:" in samples and "**base**, continuation:" in samples
    assert "few-shot chat" not in samples  # those are set beside the assistants' replies instead
    _, more = make_report(run, "--samples", "2")
    assert "not shown" in section(more, "Sample conversations")


def test_base_few_shot_replies_beside_the_assistants_replies_to_the_same_question(run):
    _, text = make_report(run)
    beside = section(text, "Base model (few-shot) beside the assistants")
    assert "| question | base (few-shot) | sft |" in beside.splitlines()
    # One line per cell, pipes escaped; a question the assistant kept no reply to shows a dash.
    assert table_row(beside, "Ana buys 3 packs. How many?")[1:] == ["Nine.", r"Final answer: 9<\|im_end\|> |"]
    assert table_row(beside, "What did I eat?")[1:] == [r"Rice \| beans, then tea.", r"I don't know.<\|im_end\|> |"]
    shortened, missing = table_row(beside, "Who are you?")[1:]
    assert shortened.startswith("I am very") and shortened.endswith("…") and len(shortened) == 120
    assert missing == "– |"
    # No few-shot replies (an older eval, or no base model): nothing to set beside.
    assert report.beside_section({**RESULTS, "models": {"sft": RESULTS["models"]["sft"]}}) == ["Not run."]


def test_a_run_with_nothing_yet_says_not_run_everywhere(tmp_path):
    _, text = make_report(tmp_path)
    assert text.splitlines()[2] == "Nothing has run yet."
    for title in (
        "Data",
        "Tokenizer",
        "Training",
        "Evaluation",
        "Sample conversations",
        "Base model (few-shot) beside the assistants",
        "Cost",
    ):
        assert section(text, title).strip() == "Not run."
    assert not (tmp_path / "report").exists()


def test_missing_rl_keys_are_tolerated(run):
    # An RL stage that logged a reward but no KL (DPO logs rewards/margins only) still gets its plot.
    write_json(
        run / "dpo" / "trainer_state.json",
        state(
            [{"loss": 0.69, "rewards/margins": 0.0, "step": 1}, {"loss": 0.5, "rewards/margins": 0.3, "step": 2}], 2
        ),
    )
    _, text = make_report(run)
    assert table_row(section(text, "Training"), "dpo")[4:] == ["0.000 → 0.300 (rewards/margins)", "– |"]
    with Image.open(run / "report" / "training_dpo.png") as image:
        image.verify()


def test_ppo_state_with_its_episode_count_is_read_from_the_numerically_last_checkpoint(tmp_path):
    # PPO's trainer_state.json carries `episode`, which transformers' TrainerState refuses; checkpoint-12 sorts
    # before checkpoint-4 as text.
    for step in (4, 12):
        write_json(
            tmp_path / f"checkpoint-{step}" / "trainer_state.json",
            {**state([{"loss/policy_avg": 1 / step, "step": step}], step), "episode": 8 * step},
        )
    loaded = report.trainer_state(str(tmp_path))
    assert loaded.global_step == 12 and loaded.episode == 96 and loaded.log_history[0]["step"] == 12
    assert report.trainer_state(str(tmp_path / "absent")) is None


def test_targets_say_what_was_measured_and_whether_it_was_met(run):
    write_json(run / "grpo" / "grpo_results.json", {"eval": {"accuracy_change": {"change": 0.12, "low": 0.05}}})
    targets = {
        "compliance": {
            "stage": "sft",
            "target": "chat-format compliance",
            "value": "eval.sft.compliance",
            "at_least": 0.95,
        },
        "band": {
            "stage": "sft",
            "target": "arithmetic in a band",
            "value": "eval.sft.arithmetic_accuracy",
            "at_least": 0.2,
            "at_most": 0.6,
        },
        "gain": {"stage": "grpo", "target": "accuracy gain", "value": "grpo.eval.accuracy_change.low", "above": 0.0},
        "kept": {
            "stage": "sft",
            "target": "answers kept",
            "value": "eval.sft.answer_rate_known",
            "within": ["eval.sft.arithmetic_accuracy", 0.05],
        },
        "absent": {"stage": "ppo", "target": "not run", "value": "ppo.eval.reward_model_change_sd", "at_least": 1},
    }
    _, text = make_report(run, "--targets", json.dumps(targets))
    rows = {
        row.split(" | ")[1]: row.split(" | ")
        for row in section(text, "Targets").splitlines()
        if row.startswith("| ") and " | " in row and not row.startswith("| stage")
    }
    assert rows["chat-format compliance"][2:] == ["0.750", "≥ 0.95", "not met |"]
    assert rows["arithmetic in a band"][2:] == ["0.250", "≥ 0.2 and ≤ 0.6", "**met** |"]
    assert rows["accuracy gain"][2:] == ["0.050", "> 0.0", "**met** |"]
    assert rows["answers kept"][2:] == ["0.500", "within 0.05 of 0.250 (eval.sft.arithmetic_accuracy)", "not met |"]
    assert rows["not run"][2:] == ["–", "", "not measured |"]
    assert "2 of 5 targets met" in text
