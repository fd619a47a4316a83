"""Hub lineage through the real huggingface_hub client, against a Hub-compatible server on loopback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_server import HubServer
from lmforge.lib.conversations import GENERATORS
from test_data import HANDBOOK, demo_pages, write_warc
from tiny import one_step_sft_args, save_tiny_model


ROOT = Path(__file__).parents[1]
TOKEN = "hf_lmforgeTestToken0123456789"


@pytest.mark.slow
def test_run_pushes_every_stage_with_a_card_linking_its_parent(tmp_path):
    pages = demo_pages()
    urls = [
        HANDBOOK.format(lang, page)
        for lang in ("en-US", "fr-FR")
        for page in ("apt.html", "preface.html", "foreword.html", "installation.html")
    ]
    warc = write_warc(tmp_path / "crawl.warc.gz", {url: pages[url] for url in urls})
    recipes, out = tmp_path / "tiny", tmp_path / "out"
    recipes.mkdir()
    (recipes / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "warc_paths": [str(warc)],
                "output_dir": str(out / "data"),
                "minhash": False,
                "tasks": 1,
                "workers": 1,
                "step_options": {"gopher_quality": {"min_doc_words": 30}},
            }
        )
    )
    (recipes / "tokenizer.yaml").write_text(
        yaml.safe_dump(
            {
                "documents": [str(out / "data/documents/*.parquet")],
                "output_dir": str(out / "tokenizer"),
                "vocab_size": 300,
                "heldout_fraction": 0.3,
            }
        )
    )

    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}
        command = [
            sys.executable,
            "-m",
            "lmforge.cli",
            "run",
            str(recipes),
            "--run_dir",
            str(tmp_path / "runs/tiny"),
            "--push_to_hub",
            "--hub_namespace",
            "tester",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        repos = hub.repos
        tokens = hub.tokens

    data = repos[("dataset", "tester/tiny-data")]
    assert any(path.startswith("documents/") and path.endswith(".parquet") for path in data["files"])
    assert not any(path.startswith(("logs/", "removed/", "work/")) for path in data["files"])
    tokenizer = repos[("model", "tester/tiny-tokenizer")]
    assert {"tokenizer.json", "tokenizer_config.json", "README.md"} <= set(tokenizer["files"])
    card = tokenizer["files"]["README.md"].decode()
    data_revision = data["commits"][-1]
    assert f"[tester/tiny-data]({hub.url}/datasets/tester/tiny-data) at revision `{data_revision}`" in card
    assert "tester/tiny-data" in card.split("---")[1]  # in the card's metadata (datasets:) too

    # the token was used, and is nowhere in what the run printed or wrote
    assert tokens == {TOKEN}
    assert TOKEN not in result.stdout + result.stderr
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    # a rerun skips finished stages and pushes nothing again
    with HubServer() as hub:
        env["HF_ENDPOINT"] = hub.url
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0 and hub.repos == {}
    assert "[data] done in an earlier run" in rerun.stdout + rerun.stderr


def test_a_trained_models_card_names_its_base_datasets_licence_and_repo(tmp_path):
    """TRL's card as the trainers write it, then lmforge's: each dataset its own entry (linked only when a Hub id),
    the base model's licence instead of `licence: license`, and a quick start that loads the pushed repo."""
    from huggingface_hub import ModelCard
    from trl.trainer.utils import generate_model_card

    from lmforge.lib.cards import training_card

    base = tmp_path / "base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: apache-2.0\ntags: [mine]\n---\n\nA base model.\n")
    datasets = {"identity": None, "smoltalk": "HuggingFaceTB/smol-smoltalk"}
    card = generate_model_card(
        base_model=None,
        model_name="sft",
        hub_model_id=None,
        dataset_name=", ".join(datasets),
        tags=["lmforge"],
        wandb_url=None,
        comet_url=None,
        trackio_url=None,
        trainer_name="SFT",
    )
    card.save(tmp_path / "README.md")
    assert 'model="None"' in card.text and "licence: license" in str(card)  # what TRL writes
    training_card(tmp_path / "README.md", str(base), datasets, "tester/tiny-sft")
    text = (tmp_path / "README.md").read_text()
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.license == "apache-2.0" and data.datasets == ["HuggingFaceTB/smol-smoltalk"] and "licence" not in text
    assert f"Fine-tuned from the local model `{base}` on `identity`, " in text
    assert "[HuggingFaceTB/smol-smoltalk](https://huggingface.co/datasets/HuggingFaceTB/smol-smoltalk)" in text
    assert 'pipeline("text-generation", model="tester/tiny-sft"' in text and "identity, smoltalk" not in text


def test_a_pushed_sft_models_card_loads_the_pushed_repo_with_the_bases_licence(tmp_path):
    """`lmforge sft --push_to_hub` to the loopback Hub: the card pushed with the model names the repo it was pushed
    to in its quick start (TRL wrote model="None" for a model never pushed), the base's licence, each dataset apart."""
    texts = [f"the cat sat on mat number {i} and the dog sat on log number {i}." * 4 for i in range(60)]
    base = save_tiny_model(tmp_path / "base", texts, vocab_size=300)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n\nA base model.\n")
    argv = one_step_sft_args(base, tmp_path / "sft")
    argv += ["--push_to_hub", "true", "--hub_model_id", "tester/tiny-sft"]
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}
        result = subprocess.run(
            [sys.executable, "-m", "lmforge.sft", *argv], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        pushed = hub.repos[("model", "tester/tiny-sft")]["files"]
    card = pushed["README.md"].decode()
    assert 'pipeline("text-generation", model="tester/tiny-sft"' in card and "license: apache-2.0" in card
    assert "licence" not in card and "huggingface.co/datasets/identity" not in card and "`identity`" in card
    assert "model.safetensors" in pushed


@pytest.mark.slow
def test_pushed_models_cards_load_the_pushed_repo_with_the_bases_licence(tmp_path):
    """SFT pushes with Trainer.push_to_hub, the RL stages with lib.rl_eval.push: both cards quick-start from the
    pushed repo, carry the base model's licence (SFT's through the SFT card, for DPO) and link no local data."""
    texts = [m["content"] for c in GENERATORS["identity"](seed=0) for m in c]
    base = save_tiny_model(tmp_path / "base", texts, vocab_size=300)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n\nA base model.\n")
    pairs = [{"prompt": f"{n} + 1?", "chosen": str(n + 1), "rejected": "No."} for n in range(8)]
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs/train.jsonl").write_text("\n".join(json.dumps(pair) for pair in pairs))
    quick = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_length", "96", "--report_to", "none"]
    sft = ["sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", str(base), "--eval_fraction", "0"]
    sft += ["--datasets", json.dumps({"identity": {"generator": "identity", "size": 16}})]
    dpo = ["dpo", "--config", "recipes/demo/dpo.yaml", "--model_name_or_path", str(tmp_path / "sft")]
    dpo += ["--preferences", str(tmp_path / "pairs"), "--heldout_reward_model", "", "--watch_every", "100"]
    dpo += ["--heldout_tasks", json.dumps({"arithmetic": 2}), "--heldout_max_new_tokens", "4", "--watch_prompts", "2"]
    with HubServer() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}
        for stage, *argv in (sft, dpo):
            command = [
                sys.executable,
                "-m",
                "lmforge.cli",
                stage,
                *argv,
                *quick,
                "--output_dir",
                str(tmp_path / stage),
            ]
            command += ["--push_to_hub", "true", "--hub_model_id", f"tester/tiny-{stage}"]
            result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
        repos = hub.repos
    for stage, data in (("sft", "`identity`"), ("dpo", f"`{tmp_path / 'pairs'}`")):
        card = repos[("model", f"tester/tiny-{stage}")]["files"]["README.md"].decode()
        assert f'pipeline("text-generation", model="tester/tiny-{stage}"' in card, card
        assert "license: apache-2.0" in card and "licence" not in card and "huggingface.co/None" not in card
        assert f"on {data}." in card and "huggingface.co/datasets" not in card  # local data is named, not linked
    assert "Fine-tuned from the local model" in card
