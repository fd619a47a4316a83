"""The RL stages (DPO, GRPO with and without tools, PPO) under the shipped DeepSpeed configs with two processes on
CPU, as tests/test_matrix.py runs the others (a file of its own, so that pytest-xdist runs the two halves of the
matrix on both cores). Each run checks both ranks trained, the before/after evaluation ran and the output loads
whole."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import test_rl
from test_distributed import rl_args
from test_matrix import launch


tokenizer, sft_model, reward_model, preferences = (  # the RL tests' fixtures
    test_rl.tokenizer,
    test_rl.sft_model,
    test_rl.reward_model,
    test_rl.preferences,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "config"),
    [("dpo", "zero2"), ("dpo", "zero3"), ("grpo", "zero2"), ("grpo", "zero3"), ("ppo", "zero2"), ("ppo", "zero3")],
)
def test_rl_stage_under_deepspeed_on_two_processes(stage, config, sft_model, reward_model, preferences, tmp_path):
    """The before/after evaluation runs on the main process alone, with models it loads itself: under ZeRO-3 those
    loads used to partition the weights across ranks, a collective the other rank never joined (a hang). PPO's save
    gathers the policy's and the value model's slices on every rank (TRL 1.12's own save fails under ZeRO-3)."""
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    output_dir = tmp_path / stage
    args = rl_args(stage, sft_model, reward_model, preferences)
    launch(config, f"lmforge.{stage}", output_dir, *args, "--per_device_train_batch_size", "4")
    results = json.loads((output_dir / f"{stage}_results.json").read_text())
    assert results["eval"]["before"] and results["eval"]["after"]
    assert AutoModelForCausalLM.from_pretrained(output_dir).num_parameters() == whole(sft_model)
    if stage == "ppo":  # the critic of the last checkpoint, whole, for a resumed run
        value_models = sorted(output_dir.glob("checkpoint-*/value_model"))
        assert (
            value_models and AutoModelForSequenceClassification.from_pretrained(value_models[-1]).score.weight.numel()
        )


def whole(path: Path) -> int:
    return AutoModelForCausalLM.from_pretrained(path).num_parameters()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero3", "ddp"])
def test_grpo_with_tools_on_two_processes(config, sft_model, reward_model, tmp_path):
    """GRPO's tool loop under ZeRO-3, where each generation step waits for every process (transformers' synced_gpus):
    the loop runs with both ranks in step (lib.models.generates_together); under DDP each rank goes its own way. A
    random tiny policy seldom calls a tool, so the rounds that differ between processes are tested in test_tools
    (two processes, a scripted model)."""
    if config != "ddp":
        pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    output_dir = tmp_path / "grpo_tools"
    args = rl_args("grpo", sft_model, reward_model, None)
    args[args.index("recipes/demo/grpo.yaml")] = "recipes/demo/grpo_tools.yaml"
    args += ["--rewards", json.dumps({"accuracy": {}, "tool_cost": {"cost": 0.1}})]
    args += ["--max_completion_length", "24"]
    launch(config, "lmforge.grpo", output_dir, *args, "--per_device_train_batch_size", "4")
    results = json.loads((output_dir / "grpo_results.json").read_text())
    assert results["eval"]["before"] and results["eval"]["after"]
    assert AutoModelForCausalLM.from_pretrained(output_dir).num_parameters() == whole(sft_model)
