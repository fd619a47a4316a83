"""The shipped sharded accelerate configs with two processes on CPU, each running a training stage for a few steps.

The GPU config files themselves are launched; the command line changes only what a CPU needs (process count, mixed
precision). Each run checks that both ranks trained and that the output loads as the next stage loads it. FSDP2
cannot run on CPU (accelerate turns the config into DDP over gloo there, see README "Scaling"): its save path is
tested without a launch instead. Each run takes about 20-40 s on 2 cores.
"""

import json
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import test_distributed
import test_rl
from lmforge import sft
from lmforge.lib.configs import parse, training_precision
from lmforge.lib.conversations import GENERATORS
from test_distributed import ACCELERATE, ROOT, free_port
from test_rl import TRAINER
from tiny import save_tiny_model


tokenizer, sft_model, reward_model, preferences = (  # the RL tests' fixtures
    test_rl.tokenizer,
    test_rl.sft_model,
    test_rl.reward_model,
    test_rl.preferences,
)
packed, adamw_recipe = test_distributed.packed, test_distributed.adamw_recipe  # the pretraining fixtures
# zero2 keeps its config's bf16 (DeepSpeed runs bf16 on CPU, and the recipe's bf16: false must give way to it);
# zero3 runs in fp32, as a CPU user would ask.
# ddp is multi_gpu.yaml in its bf16 (autocast on CPU), on CPU through the demo recipes' `use_cpu: true`: with
# `--cpu`, accelerate launch would start one process only.
SHARDED = {
    "zero2": ["accelerate_configs/zero2.yaml", "--num_processes", "2"],
    "zero3": ["accelerate_configs/zero3.yaml", "--num_processes", "2", "--mixed_precision", "no"],
}
CONFIGS = {**SHARDED, "ddp": ["accelerate_configs/multi_gpu.yaml", "--num_processes", "2"]}


def launch(config: str, module: str, output_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [ACCELERATE, "launch", "--config_file", *CONFIGS[config], "--main_process_port", str(free_port())]
    command += ["-m", module, *args, "--disable_tqdm", "true", "--output_dir", str(output_dir)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return run


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "base"
    texts = [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0) for m in c]
    save_tiny_model(path, texts, vocab_size=384, layers=1, max_positions=256)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "config"),
    [("sft", "zero2"), ("sft", "zero3"), ("sft_lora", "zero2"), ("sft_lora", "zero3"), ("sft_lora", "ddp")],
)
def test_sft_under_a_shipped_config_on_two_processes(config, recipe, base, tmp_path):
    """Before the fix, the validation loss SFT measures before training ran through a model DeepSpeed had prepared
    for inference: ZeRO-2 refused ("ZeRO inference only makes sense with ZeRO Stage 3"), ZeRO-3 then trained an
    engine without optimizer ("'NoneType' object has no attribute 'backward'"). A LoRA adapter saved under ZeRO-3
    holds its trained weights, gathered from both ranks."""
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    output_dir = tmp_path / "sft"
    data = {"identity": {"generator": "identity", "size": 60}, "arithmetic": {"generator": "arithmetic", "size": 60}}
    run = launch(
        config,
        "lmforge.sft",
        output_dir,
        "--config",
        f"recipes/demo/{recipe}.yaml",
        "--model_name_or_path",
        str(base),
        "--datasets",
        json.dumps(data),
        "--max_length",
        "128",
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "3",
        "--warmup_steps",
        "1",
        "--logging_steps",
        "1",
        "--save_steps",
        "3",
        "--eval_steps",
        "1000",
        "--eval_fraction",
        "0.1",
    )
    assert "sft: process 0 of 2" in run.stdout + run.stderr and "sft: process 1 of 2" in run.stdout + run.stderr
    results = json.loads((output_dir / "sft_results.json").read_text())
    assert results["eval_loss_after"] < results["eval_loss_before"]
    assert AutoTokenizer.from_pretrained(output_dir).chat_template
    if recipe == "sft_lora":  # what `lmforge merge` reads: the adapter, trained (LoRA's B matrices start at zero)
        adapter = load_file(output_dir / "adapter_model.safetensors")
        trained = [name for name, weight in adapter.items() if "lora_B" in name and weight.abs().sum() > 0]
        assert adapter and len(trained) == len([name for name in adapter if "lora_B" in name]), sorted(adapter)
        return
    # The output is whole (ZeRO-3 gathers its shards on save) and loads as the next stage loads it.
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    reference = AutoModelForCausalLM.from_pretrained(base)
    assert model.num_parameters() == reference.num_parameters()


def test_precision_follows_the_launcher_then_the_gpu_then_the_recipe():
    # The launcher's bf16 (every shipped GPU config) wins over a recipe's bf16: false, which DeepSpeed would refuse.
    assert training_precision("fp32", "bf16", bf16_gpu=False)[0] == "bf16"
    assert training_precision("bf16", "fp16", bf16_gpu=True)[0] == "fp16"
    # A bf16 GPU trains in bf16 whether started by `lmforge STAGE` or by a launcher that named no precision.
    assert training_precision("fp32", None, bf16_gpu=True)[0] == "bf16"
    assert training_precision("fp32", "no", bf16_gpu=True)[0] == "bf16"
    # On a CPU the recipe decides.
    assert training_precision("fp32", None, bf16_gpu=False)[0] == "fp32"
    assert training_precision("bf16", "no", bf16_gpu=False)[0] == "bf16"


def test_the_stage_trains_in_the_launchers_precision(monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    _, args = parse(sft.CONFIGS, ["--config", str(ROOT / "recipes/demo/sft.yaml"), "--output_dir", "unused"])
    # Parsed again with the precision as an override: what TrainingArguments derive from it follows.
    assert args.bf16 and not args.fp16 and args.mixed_precision == "bf16"
    assert "precision: bf16 (accelerate launch --mixed_precision bf16)" in capsys.readouterr().err
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    _, args = parse(sft.CONFIGS, ["--config", str(ROOT / "recipes/demo/sft.yaml"), "--output_dir", "unused"])
    assert not args.bf16 and args.mixed_precision == "no"


def test_fsdp2_saves_a_whole_model():
    """FSDP2 cannot run on CPU (accelerate selects FSDP for the multi-GPU types only, README "Scaling"); what differs
    at save is the state-dict type: Trainer.save_model writes weights under FSDP only for FULL_STATE_DICT."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "accelerate_configs/fsdp2.yaml"))
    assert config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.slow
@pytest.mark.parametrize("config", SHARDED)
def test_reward_under_deepspeed_on_two_processes(config, sft_model, preferences, tmp_path):
    """The held-out pairs are scored before training too, on every rank: under ZeRO-3 each rank holds a slice of
    each weight, gathered for the scoring."""
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    output_dir = tmp_path / "reward"
    launch(
        config,
        "lmforge.reward",
        output_dir,
        "--config",
        "recipes/demo/reward.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--preferences",
        str(preferences),
        "--max_steps",
        "3",
        "--save_steps",
        "3",
        "--eval_steps",
        "100",
        "--max_length",
        "128",
        "--warmup_steps",
        "0",
        "--per_device_train_batch_size",
        "4",
        *TRAINER,
    )
    results = json.loads((output_dir / "rewards.json").read_text())
    assert results["test_pairs"] == 8 and results["heldout_accuracy_before"] is not None
    assert AutoModelForSequenceClassification.from_pretrained(output_dir).score.weight.shape == (1, 64)


@pytest.mark.slow
@pytest.mark.parametrize("config", SHARDED)
def test_pretrain_under_deepspeed_on_two_processes(config, packed, adamw_recipe, tmp_path):
    """The memorization probe generates after training: under ZeRO-3 on every rank, with the weights gathered."""
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    output_dir = tmp_path / "pretrain"
    launch(
        config,
        "lmforge.pretrain",
        output_dir,
        "--config",
        adamw_recipe,
        "--dataset",
        str(packed / "pack"),
        "--tokenizer",
        str(packed / "tokenizer"),
        "--depth",
        "1",
        "--context_length",
        "64",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "3",
        "--save_steps",
        "3",
        "--eval_steps",
        "3",
        "--memorization_probes",
        "4",
    )
    assert json.loads((output_dir / "memorization.json").read_text())["probes"] == 4
    assert AutoModelForCausalLM.from_pretrained(output_dir).num_parameters() > 0
