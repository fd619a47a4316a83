"""The training stages on two processes (DDP over gloo on CPU), under `accelerate launch` as on GPUs.

Checked: both ranks ran, the global batch is the recipe's `global_batch_tokens` whatever the process
count, only rank 0 wrote the outputs (every file opened for writing is logged per rank by an audit hook
in the launched interpreters), and the loss falls. Each run takes about 30-60 s on 2 cores.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import test_rl
from benchmark_mirrors import write_benchmarks
from lmforge import LmforgeError, dpo, grpo, interrogate, ppo, reward, rollouts
from lmforge import eval as lmforge_eval
from lmforge.lib import models as lib_models
from lmforge.lib import rewards, rl_eval
from lmforge.lib.batching import plan_batch
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS
from lmforge.pack import PackConfig
from lmforge.pack import main as pack
from lmforge.tokenizer import train_tokenizer
from test_rl import HELDOUT, TRAINER
from tiny import save_tiny_model


ROOT = Path(__file__).parent.parent
# The RL tests' tiny SFT model, reward model and preference pairs, as fixtures here too.
tokenizer, sft_model, reward_model, preferences = (
    test_rl.tokenizer,
    test_rl.sft_model,
    test_rl.reward_model,
    test_rl.preferences,
)
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
SENTENCES = [
    "the cat sat on the mat and the dog sat on the log.",
    "a bird sang in the tree while the sun rose over the hill.",
    "we walked to the river and watched the boats go by.",
    "she wrote a letter to her brother who lived by the sea.",
]
# Imported by every launched interpreter (PYTHONPATH): logs each file under AUDIT_ROOT opened for writing.
AUDIT_HOOK = """
import os, sys
if os.environ.get("AUDIT_ROOT"):
    _root = os.environ["AUDIT_ROOT"]
    _log = open(os.path.join(os.environ["AUDIT_LOG"], "rank" + os.environ.get("RANK", "launcher")), "a", buffering=1)
    _writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def _hook(event, args):
        if event != "open" or isinstance(args[0], int):
            return
        mode, flags = args[1], args[2] or 0
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & _writing):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(_root):
                _log.write(path + "\\n")

    sys.addaudithook(_hook)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, module: str, output_dir: Path, *args: str) -> tuple[str, dict]:
    """`accelerate launch` on cpu_ddp.yaml; returns its output and the files each rank wrote in output_dir."""
    hooks, logs = tmp_path / "hooks", tmp_path / "audit"
    hooks.mkdir()
    logs.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT_HOOK)
    python_path = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "PYTHONPATH": python_path,
        "AUDIT_ROOT": str(output_dir),
        "AUDIT_LOG": str(logs),
        "OMP_NUM_THREADS": "1",
    }
    target = [module] if module.endswith(".py") else ["-m", module]  # a script or a module
    command = [
        ACCELERATE,
        "launch",
        "--config_file",
        "accelerate_configs/cpu_ddp.yaml",
        "--main_process_port",
        str(free_port()),
        *target,
        *args,
        "--output_dir",
        str(output_dir),
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-20000:]
    written = {
        log.name: [Path(line).relative_to(output_dir) for line in log.read_text().split()] for log in logs.iterdir()
    }
    return run.stdout + run.stderr, written


def assert_only_rank0_wrote(written: dict, output_dir: Path) -> None:
    # The hook sees Python-level writes (JSON, configs, tokenizer, model card, trainer state); torch.save and
    # safetensors write from C++/Rust and are not seen. Rank 1's own file is its random-number state in each
    # checkpoint (torch.save), which shows it trained up to the checkpoint.
    assert written["rank0"] and not written.get("rank1") and not written.get("ranklauncher"), written
    assert sorted(output_dir.glob("checkpoint-*/rng_state_1.pth"))


def losses(state_file: Path) -> tuple[list[float], dict]:
    state = json.loads(state_file.read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry], state


@pytest.fixture(scope="module")
def adamw_recipe(tmp_path_factory) -> str:
    """The demo pretraining recipe with AdamW on a cosine schedule instead of Muon (which DeepSpeed cannot run):
    these tests check the launchers, not the optimizer."""
    recipe = yaml.safe_load((ROOT / "recipes/demo/pretrain.yaml").read_text())
    recipe.pop("muon_learning_rate", None)
    recipe.pop("lr_scheduler_kwargs", None)
    recipe |= {"learning_rate": 3e-3, "lr_scheduler_type": "cosine"}
    path = tmp_path_factory.mktemp("recipes") / "pretrain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    texts = [" ".join(SENTENCES[(i + j) % 4] for j in range(6)) for i in range(200)]
    rows = [{"text": text, "id": f"doc{i}", "metadata": {"language": "en"}} for i, text in enumerate(texts)]
    pq.write_table(pa.Table.from_pylist(rows), root / "docs.parquet")
    train_tokenizer(texts, vocab_size=320).save_pretrained(root / "tokenizer")
    pack(
        PackConfig(
            output_dir=str(root / "pack"),
            tokenizer=str(root / "tokenizer"),
            documents=[str(root / "docs.parquet")],
            seq_len=64,
            heldout_fraction=0.1,
            batch_size=50,
        )
    )
    return root


def test_global_batch_is_the_same_on_any_number_of_processes():
    plans = [plan_batch(2**20, 2048, world, max_micro_batch=16) for world in (1, 8, 64)]
    assert [p.tokens for p in plans] == [2**20] * 3
    assert [(p.micro_batch, p.grad_accum) for p in plans] == [(16, 32), (16, 4), (8, 1)]
    with pytest.raises(LmforgeError, match="not a whole number of 2048-token sequences"):
        plan_batch(10**6, 2048, 8, 16)
    with pytest.raises(LmforgeError, match="cannot be shared evenly by 3 processes; use a multiple of 6,144"):
        plan_batch(2**20, 2048, 3, 16)


@pytest.mark.slow
def test_pretrain_on_two_processes(packed, adamw_recipe, tmp_path):
    output_dir = tmp_path / "pretrain"
    log, written = launch(
        tmp_path,
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
        "--global_batch_tokens",
        "2048",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "30",
        "--warmup_steps",
        "3",
        "--logging_steps",
        "5",
        "--save_steps",
        "15",
        "--eval_steps",
        "15",
        "--memorization_probes",
        "4",
        "--memorization_prefix",
        "8",
        "--memorization_tokens",
        "8",
        "--include_num_input_tokens_seen",
        "true",
        "--disable_tqdm",
        "true",
    )
    assert "pretrain: process 0 of 2" in log and "pretrain: process 1 of 2" in log
    assert "2 processes x 8 sequences x 64 tokens x 2 accumulation steps = 2,048 tokens" in log
    loss, state = losses(output_dir / "trainer_state.json")
    assert loss[-1] < loss[0] - 1.0, loss
    # Counted by the trainer from the batches of both ranks (gathered): 30 steps of exactly 2,048 tokens.
    assert state["num_input_tokens_seen"] == 30 * 2048
    assert_only_rank0_wrote(written, output_dir)
    for name in ("config.json", "tokenizer_config.json", "trainer_state.json"):  # each written once
        assert written["rank0"].count(Path(name)) == 1, (name, written["rank0"])
    for name in ("model.safetensors", "memorization.json", "eval_results.json", "README.md"):
        assert (output_dir / name).exists()


@pytest.mark.slow
def test_sft_on_two_processes(tmp_path):
    base = tmp_path / "base"
    texts = [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0) for m in c]
    save_tiny_model(base, texts, vocab_size=384, layers=1, max_positions=256)
    data = {"identity": {"generator": "identity", "size": 100}, "arithmetic": {"generator": "arithmetic", "size": 200}}

    output_dir = tmp_path / "sft"
    log, written = launch(
        tmp_path,
        "lmforge.sft",
        output_dir,
        "--config",
        "recipes/demo/sft.yaml",
        "--model_name_or_path",
        str(base),
        "--datasets",
        json.dumps(data),
        "--max_length",
        "128",
        "--global_batch_tokens",
        "4096",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "20",
        "--warmup_steps",
        "2",
        "--logging_steps",
        "5",
        "--save_steps",
        "10",
        "--eval_steps",
        "1000",
        "--eval_fraction",
        "0.1",
        "--learning_rate",
        "3e-3",
        "--include_num_input_tokens_seen",
        "true",
        "--disable_tqdm",
        "true",
    )
    assert "sft: process 0 of 2" in log and "sft: process 1 of 2" in log
    assert "2 processes x 8 sequences x 128 tokens x 2 accumulation steps = 4,096 tokens" in log
    loss, state = losses(output_dir / "checkpoint-20" / "trainer_state.json")
    assert loss[-1] < loss[0] - 1.0, loss
    assert state["train_batch_size"] == 8
    # Conversations are padded to the longest in each batch, not to max_length: 4,096 per step is a ceiling.
    assert 0 < state["num_input_tokens_seen"] <= 20 * 4096
    assert_only_rank0_wrote(written, output_dir)
    results = json.loads((output_dir / "sft_results.json").read_text())
    assert results["eval_loss_after"] < results["eval_loss_before"]


FAKE_SBATCH = """#!/bin/bash
# Stands in for sbatch: keeps each submitted script and its arguments, answers like sbatch.
n=$(( $(cat "$SBATCH_LOG/count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$SBATCH_LOG/count"
cp "${@: -1}" "$SBATCH_LOG/$n.sh"
echo "${@:1:$#-1}" > "$SBATCH_LOG/$n.args"
echo "Submitted batch job $n"
"""


def fake_commands(tmp_path: Path, **scripts: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_data_stage_submits_its_stages_to_slurm_as_a_dependency_chain(tmp_path, monkeypatch):
    """The SmolLM recipe's Slurm executors, submitted through a stand-in sbatch: one job array per stage."""
    import yaml

    from lmforge import data

    recipe = yaml.safe_load((ROOT / "recipes/smollm-135m/data.yaml").read_text())
    del recipe["common_crawl_dump"], recipe["common_crawl_files"]  # the demo crawl instead: no network here
    recipe.update(warc_paths=[str(ROOT / "data/demo/web/*.warc.gz")], output_dir=str(tmp_path / "data"), tasks=2)
    recipe["executor_options"]["slurm_logs_folder"] = str(tmp_path / "slurm_logs")
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path, sbatch=FAKE_SBATCH)}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path))

    assert data.main(data.DataConfig(**recipe)) == {}  # submitted, nothing run here
    jobs = {int(p.stem): p.read_text() for p in tmp_path.glob("*.sh")}
    arguments = {int(p.stem): p.read_text() for p in tmp_path.glob("*.args")}
    stages = ["filter", "minhash_signatures", "minhash_buckets", "minhash_clusters", "minhash_filter"]
    # Each stage: its job array, then datatrove's merge-stats job; each array waits for the previous stage's.
    assert len(jobs) == 2 * len(stages)
    for i, stage in enumerate(stages):
        array, merge = 2 * i + 1, 2 * i + 2
        assert f"#SBATCH --job-name=lmforge_{stage}" in jobs[array] and "#SBATCH --partition=cpu" in jobs[array]
        assert "#SBATCH --time=04:00:00" in jobs[array] and "launch_pickled_pipeline" in jobs[array]
        assert f"--dependency=afterok:{array}" in jobs[merge] and "merge_stats" in jobs[merge]
        assert ("--dependency=afterok:" in arguments[array]) == (i > 0)
        if i:
            assert f"--dependency=afterok:{array - 2}" in arguments[array]
    assert "#SBATCH --array=0-1%256" in jobs[1] and "#SBATCH --array=0-13%256" in jobs[5]  # tasks; 14 buckets


LAUNCH_STANDINS = {
    # srun starts the script once per node, as Slurm would, with that node's SLURM_NODEID.
    "srun": "#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n"
    'for node in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$node "$@" || exit 1; done\n',
    "scontrol": '#!/bin/bash\nprintf "gpu-node-17\\ngpu-node-18\\n"\n',
    "accelerate": '#!/bin/bash\necho "node $SLURM_NODEID: accelerate $*" >> "$LAUNCH_LOG"\n',
}


def test_launch_slurm_starts_one_accelerate_launch_per_node(tmp_path):
    assert subprocess.run(["bash", "-n", "recipes/launch.slurm"], cwd=ROOT).returncode == 0
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    env = {
        **os.environ,
        "PATH": f"{fake_commands(tmp_path, **LAUNCH_STANDINS)}:{os.environ['PATH']}",
        "VENV": str(venv),
        "LAUNCH_LOG": str(tmp_path / "launch.log"),
        "SLURM_NNODES": "2",
        "SLURM_GPUS_ON_NODE": "8",
        "SLURM_JOB_NODELIST": "gpu-node-[17-18]",
    }
    run = subprocess.run(
        ["bash", "recipes/launch.slurm", "sft", "recipes/smollm-135m/sft.yaml", "--max_steps", "9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    common = (
        "--config_file accelerate_configs/multi_gpu.yaml --num_machines 2 --num_processes 16 --machine_rank {} "
        "--main_process_ip gpu-node-17 --main_process_port 29500 --rdzv_backend static -m lmforge.sft "
        "--config recipes/smollm-135m/sft.yaml --max_steps 9"
    )
    assert (tmp_path / "launch.log").read_text().splitlines() == [
        f"node {n}: accelerate launch {common.format(n)}" for n in (0, 1)
    ]


@pytest.mark.slow
def test_a_launched_process_ends_after_its_exit_handlers_without_the_interpreters_teardown(tmp_path):
    """lmforge.lib.configs.exit_launched, at the end of each training stage: in a launched process (a process group
    up) the exit handlers run, the process group is taken down, what was printed is flushed and the exit code is 0;
    the interpreter's teardown, where ranks aborted now and then, is skipped (a finalizer of it never runs)."""
    script = """
import atexit, sys
import torch.distributed as dist
from lmforge.lib.configs import exit_launched, parse
from lmforge.tokenizer import CONFIGS
atexit.register(lambda: print("; handler ran last; group up:", dist.is_initialized()))
parse(CONFIGS, ["--output_dir", sys.argv[1]])  # a stage's parse registers end_process_group
dist.init_process_group("gloo", rank=0, world_size=1)
class Teardown:
    def __del__(self):
        print("teardown ran")
kept = Teardown()
print("work done", end="")
exit_launched() if sys.argv[2] == "exit_launched" else None
"""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    runs = {
        end: subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), end], env=env, capture_output=True, text=True
        )
        for end in ("exit_launched", "interpreter")
    }
    assert all(run.returncode == 0 for run in runs.values()), runs
    assert runs["exit_launched"].stdout == "work done; handler ran last; group up: False\n"
    assert runs["interpreter"].stdout == "work done; handler ran last; group up: False\nteardown ran\n"


# ZeRO-3's GPU config runs as is in one fp32 process; FSDP2 does not: without CUDA, accelerate falls back to
# plain (or DDP) training, so fsdp2.yaml is only checked by its loader (tests/test_recipes.py).
DEEPSPEED_CONFIGS = {
    "zero2": ["accelerate_configs/cpu_zero2.yaml"],
    "zero3": ["accelerate_configs/zero3.yaml", "--num_processes", "1", "--mixed_precision", "no"],
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", DEEPSPEED_CONFIGS)
def test_pretrain_under_deepspeed_on_cpu(packed, adamw_recipe, tmp_path, stage):
    """ZeRO-2 and ZeRO-3 in one process on CPU; needs the `deepspeed` extra."""
    pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]' (DS_BUILD_OPS=0 builds in seconds)")
    output_dir = tmp_path / stage
    command = [
        ACCELERATE,
        "launch",
        "--config_file",
        *DEEPSPEED_CONFIGS[stage],
        "--main_process_port",
        str(free_port()),
        "-m",
        "lmforge.pretrain",
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
        "--global_batch_tokens",
        "1024",
        "--per_device_train_batch_size",
        "8",
        "--max_steps",
        "20",
        "--warmup_steps",
        "2",
        "--logging_steps",
        "5",
        "--save_steps",
        "20",
        "--eval_steps",
        "20",
        "--bf16",
        "false",
        "--memorization_probes",
        "0",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(output_dir),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    # DeepSpeed took the accumulation derived from the global batch, and wrote its sharded optimizer state.
    assert "1 processes x 8 sequences x 64 tokens x 2 accumulation steps = 1,024 tokens" in run.stdout
    assert (output_dir / "checkpoint-20" / "global_step20" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
    loss, _ = losses(output_dir / "trainer_state.json")
    assert loss[-1] < loss[0] - 1.0, loss
    assert (output_dir / "model.safetensors").exists()


# The RL stages, the reward model and eval on two processes -----------------------------------------------------
# Each stage's two-process run is compared with a one-process run of the same global batch (twice the per-device
# batch). The held-out table before training is measured by the main process alone, so it is the same figures; after
# a few steps, the policies differ only by what differs between the runs: the order of float sums across ranks (DPO
# reads the same batches and ends with the same table), and the random streams of sampling in PPO and GRPO, whose
# updates on a random tiny policy are mostly that noise; they learn slowly here so that the noise stays small.
RL_STAGES = {
    "ppo": (
        ppo,
        [
            "--config",
            "recipes/demo/ppo.yaml",
            "--tasks",
            json.dumps({"arithmetic": 32}),
            "--total_episodes",
            "32",
            "--local_rollout_forward_batch_size",
            "4",
            "--response_length",
            "8",
            "--num_ppo_epochs",
            "1",
            "--learning_rate",
            "1e-5",
            "--save_steps",
            "2",
            "--watch_every",
            "2",
            "--watch_max_kl",
            "1000",
        ],
    ),
    "grpo": (
        grpo,
        [
            "--config",
            "recipes/demo/grpo.yaml",
            "--tasks",
            json.dumps({"arithmetic": 32}),
            "--rewards",
            json.dumps({"length": {"max_chars": 10}}),
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--num_generations",
            "4",
            "--max_completion_length",
            "8",
            "--learning_rate",
            "1e-5",
            "--watch_every",
            "2",
            "--watch_max_kl",
            "1000",
        ],
    ),
    "dpo": (
        dpo,
        [
            "--config",
            "recipes/demo/dpo.yaml",
            "--max_steps",
            "4",
            "--save_steps",
            "2",
            "--eval_steps",
            "100",
            "--max_length",
            "128",
            "--learning_rate",
            "1e-3",
            "--warmup_steps",
            "0",
            "--watch_every",
            "2",
        ],
    ),
}


def rl_args(stage, sft_model, reward_model, preferences):
    model = (
        ["--sft_model_path", str(sft_model), "--reward_model_path", str(reward_model)]
        if stage == "ppo"
        else ["--model_name_or_path", str(sft_model)]
    )
    data = ["--preferences", str(preferences)] if stage == "dpo" else []
    return [
        *RL_STAGES[stage][1],
        *model,
        *data,
        *HELDOUT,
        *TRAINER,
        "--heldout_reward_model",
        str(reward_model),
        "--disable_tqdm",
        "true",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("stage", RL_STAGES)
def test_rl_stage_on_two_processes(stage, sft_model, reward_model, preferences, tmp_path):
    args = rl_args(stage, sft_model, reward_model, preferences)
    output_dir = tmp_path / "two"
    log, written = launch(tmp_path, f"lmforge.{stage}", output_dir, *args, "--per_device_train_batch_size", "4")
    # Both ranks trained to each checkpoint (rank 1's random state is saved there); only rank 0 wrote.
    assert sorted(output_dir.glob("checkpoint-*/rng_state_1.pth")), log[-3000:]
    assert written["rank0"] and not written.get("rank1") and not written.get("ranklauncher"), written
    for name in ("eval_before.json", "watch.json", f"{stage}_results.json", "tokenizer_config.json"):
        assert (output_dir / name).is_file(), name
    two = json.loads((output_dir / f"{stage}_results.json").read_text())
    assert log.count("held-out") == 1  # the table is printed once

    module, _ = RL_STAGES[stage]
    single = [*args, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")]
    one = module.main(*parse(module.CONFIGS, single))
    assert two["eval"]["before"] == one["eval"]["before"]
    print(stage, "two processes:", two["eval"]["after"], "one process:", one["eval"]["after"])
    # The table's figures. On 4 held-out prompts of 12 tokens, one greedy reply that differs (gradients summed in
    # another order over two processes) moves the 3-gram repetition share by up to about 0.15.
    for name in rl_eval.METRICS:
        value, tolerance = one["eval"]["after"][name], 0.15 if name == "repetition" else 0.05
        close = value is None or two["eval"]["after"][name] == pytest.approx(value, rel=0.05, abs=tolerance)
        assert close, (name, two["eval"]["after"], one["eval"]["after"])
    assert [c["step"] for c in two["watch"]["checks"]] == [c["step"] for c in one["watch"]["checks"]]


# Trains a tiny chat model on two processes with the watch; rank 0's policy is made to loop after step 3 while rank
# 1's stays healthy. Each rank prints whether its watch stopped the run, and at which step.
WATCH_SCRIPT = """
import sys
import torch
import yaml
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from lmforge.lib.conversations import GENERATORS
from lmforge.lib.rewards import verifiable_prompts
from lmforge.lib.watch import WatchCallback, WatchConfig

model_path, output_dir = sys.argv[1], sys.argv[3]
tokenizer = AutoTokenizer.from_pretrained(model_path)
texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in GENERATORS["arithmetic"](size=32)]
rows = tokenizer(texts, max_length=64, truncation=True)["input_ids"]


class LoopOnRankZero(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 3 and PartialState().is_main_process:
            bias = torch.zeros(model.config.vocab_size)
            bias[tokenizer.convert_tokens_to_ids("<|im_start|>")] = 1e4
            model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)


args = TrainingArguments(output_dir=output_dir, max_steps=8, per_device_train_batch_size=2, save_steps=2,
                         logging_steps=1, use_cpu=True, report_to="none", learning_rate=1e-3, disable_tqdm=True)
watch = WatchCallback(WatchConfig(watch_every=2, watch_prompts=4, watch_max_new_tokens=12),
                      verifiable_prompts({"arithmetic": 4}, seed=1)["prompt"], tokenizer, output_dir)
trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                  train_dataset=Dataset.from_dict({"input_ids": rows, "labels": rows}),
                  callbacks=[LoopOnRankZero(), watch])
trainer.train()
print(f"rank {PartialState().process_index}: stopped={watch.stopped} at step {trainer.state.global_step}, "
      f"last healthy {watch.last_healthy}", flush=True)
PartialState().destroy_process_group()  # leaving it to interpreter exit sometimes aborts a rank in gloo's threads
"""


@pytest.mark.slow
def test_the_watch_decides_once_for_all_ranks(sft_model, tmp_path):
    """Every rank samples, rank 0's figures decide (broadcast): rank 1, whose own policy is healthy, stops with it."""
    script = tmp_path / "watch_ddp.py"
    script.write_text(WATCH_SCRIPT)
    output_dir = tmp_path / "out"
    log, written = launch(tmp_path, str(script), output_dir, str(sft_model))
    for rank in (0, 1):
        assert f"rank {rank}: stopped=True at step 4, last healthy {output_dir}/checkpoint-2" in log, log[-3000:]
    assert sum(p.name.startswith(".watch.json.") for p in written["rank0"]) >= 2, written  # write_json's temporaries
    assert not written.get("rank1"), written
    report = json.loads((output_dir / "watch.json").read_text())
    assert [c["step"] for c in report["checks"]] == [2, 4] and {a["step"] for a in report["alarms"]} == {4}


class Loaded(Exception):
    """Raised by a stand-in for a stage's first computation, once it has seen where the models are."""


def test_stages_that_generate_put_their_models_on_the_process_device(sft_model, reward_model, tmp_path, monkeypatch):
    """Every stage that generates or scores puts its models on lmforge.lib.models.device(). On this CPU machine that is
    the CPU, where models load anyway; the device here is `meta`, so a model left where it loaded shows. Rollouts,
    eval and interrogate load through lib.models.load_for_generation, rl_eval and rewards call device() themselves."""
    meta = torch.device("meta")
    for module in (rl_eval, lib_models, rewards):
        monkeypatch.setattr(module, "device", lambda: meta)
    seen = []

    def record(*models):
        seen.append([model.device for model in models])
        raise Loaded

    monkeypatch.setattr(
        rl_eval, "evaluate_policy", lambda model, tokenizer, prompts, config, reference: record(model, reference)
    )
    monkeypatch.setattr(rollouts, "sample_responses", lambda model, *args: record(model))
    monkeypatch.setattr(lmforge_eval, "heldout_texts", lambda config: ["a held-out text"])
    monkeypatch.setattr(lmforge_eval, "bits_per_byte", lambda model, *args: record(model))
    monkeypatch.setattr(interrogate, "ask", lambda model, *args: record(model))
    runs = [
        lambda: rl_eval.evaluate_trained(str(sft_model), str(sft_model), None, None, None),
        lambda: rollouts.main(
            rollouts.RolloutsConfig(
                model=str(sft_model),
                output_dir=str(tmp_path / "r"),
                prompts={"a": {"generator": "arithmetic", "size": 1}},
            )
        ),
        lambda: lmforge_eval.evaluate_model(
            {"path": str(sft_model), "kind": "base"},
            lmforge_eval.EvalConfig(models={"m": {"path": str(sft_model), "kind": "base"}}),
            tmp_path / "samples",
        ),
        lambda: interrogate.main(
            interrogate.InterrogateConfig(model_name_or_path=str(sft_model), output_dir=str(tmp_path / "i"))
        ),
    ]
    for run in runs:
        with pytest.raises(Loaded):
            run()
    rewards.load_scorer.cache_clear()
    seen.append([rewards.load_scorer(str(reward_model))[0].device])  # the reward model of eval and the RL tables
    rewards.load_scorer.cache_clear()
    assert seen == [[meta, meta], [meta], [meta], [meta], [meta]]


@pytest.mark.slow
def test_reward_on_two_processes(sft_model, preferences, tmp_path):
    """Both ranks train the reward model, only rank 0 writes, and it ranks the held-out pairs as one process does."""
    args = [
        "--config",
        "recipes/demo/reward.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--preferences",
        str(preferences),
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--eval_steps",
        "100",
        "--max_length",
        "128",
        "--warmup_steps",
        "0",
        *TRAINER,
        "--disable_tqdm",
        "true",
    ]
    output_dir = tmp_path / "two"
    log, written = launch(tmp_path, "lmforge.reward", output_dir, *args, "--per_device_train_batch_size", "4")
    assert_only_rank0_wrote(written, output_dir)
    assert log.count('"heldout_accuracy"') == 1  # the results are printed once
    two = json.loads((output_dir / "rewards.json").read_text())
    single = [*args, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")]
    one = reward.main(*parse(reward.CONFIGS, single))
    assert two["test_pairs"] == one["test_pairs"] == 8
    assert two["heldout_accuracy_before"] == one["heldout_accuracy_before"]
    assert two["heldout_accuracy"] == pytest.approx(one["heldout_accuracy"], abs=0.13)  # one pair of 8 may flip


@pytest.mark.slow
def test_eval_on_two_processes(packed, sft_model, reward_model, preferences, tmp_path):
    """Eval measures on both processes, each scoring half of every benchmark's rows (lm-eval gathers them), and
    writes once; the other rank gets the same results, which are those of one process."""
    suite = write_benchmarks(tmp_path / "benchmarks", ["hellaswag", "ifeval"])
    suite["ifeval"]["max_new_tokens"] = 8
    models = json.dumps(
        {"sft": {"path": str(sft_model), "kind": "assistant"}, "reward": {"path": str(reward_model), "kind": "reward"}}
    )
    args = [
        "--config",
        "recipes/demo/eval.yaml",
        "--models",
        models,
        "--preferences",
        str(preferences),
        "--reward_model",
        str(reward_model),
        "--samples",
        "1",
        "--max_new_tokens",
        "8",
        "--batch_size",
        "4",
        "--arithmetic_problems",
        "4",
        "--known_limit",
        "4",
        "--tool_problems",
        "4",
        "--tools",
        "python",
        "--documents",
        str(packed / "docs.parquet"),
        "--heldout_fraction",
        "0.1",
        "--benchmarks",
        json.dumps(suite),
    ]
    output_dir = tmp_path / "two"
    log, written = launch(tmp_path, "lmforge.eval", output_dir, *args)
    assert written["rank0"] and not written.get("rank1") and not written.get("ranklauncher"), written
    two = json.loads((output_dir / "results.json").read_text())
    one = lmforge_eval.main(*parse(lmforge_eval.CONFIGS, [*args, "--output_dir", str(tmp_path / "one")]))
    assert two["models"].keys() == one["models"].keys() == {"sft", "reward"}
    for name in one["models"]:
        assert two["models"][name]["metrics"] == pytest.approx(one["models"][name]["metrics"]), name
    for benchmark in ("hellaswag", "ifeval"):
        two_scores, one_scores = (run["models"]["sft"]["benchmarks"][benchmark] for run in (two, one))
        assert two_scores["rows"] == one_scores["rows"] == 3
        assert two_scores["score"] == pytest.approx(one_scores["score"]), benchmark
