"""The rollouts stage on a tiny chat model: the same seed gives the same samples, and a run killed
mid-way resumes without sampling a prompt twice, ending with what an uninterrupted run writes."""

import json
import signal
import subprocess
import sys
import time

import pytest
from datasets import Dataset, load_from_disk

from lmforge import LmforgeError, rollouts
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS
from lmforge.lib.files import recover_dir
from tiny import save_tiny_model


PROMPTS = {
    "arithmetic": {"generator": "arithmetic", "size": 6, "seed": 7},
    "identity": {"generator": "identity", "size": 3, "seed": 8},
}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A random 2-layer Llama with the lmforge tokenizer and chat template, stopping at <|im_end|>."""
    path = tmp_path_factory.mktemp("chat_model")
    texts = [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0) for m in c]
    return save_tiny_model(path, texts, vocab_size=400, hidden_size=32, end_of_turn=True)


def argv(model, output_dir, *extra):
    return [
        "--config",
        "recipes/demo/rollouts.yaml",
        "--model",
        str(model),
        "--output_dir",
        str(output_dir),
        "--prompts",
        json.dumps(PROMPTS),
        "--num_responses",
        "3",
        "--max_new_tokens",
        "12",
        *extra,
    ]


def run(model, output_dir, *extra):
    return load_from_disk(str(rollouts.main(*parse(rollouts.CONFIGS, argv(model, output_dir, *extra)))))


@pytest.mark.slow
def test_rollouts_are_reproducible_and_resume_after_a_kill(chat_model, tmp_path):
    whole = run(chat_model, tmp_path / "whole")
    assert whole.column_names == ["prompt_id", "prompt", "task", "reference", "responses", "finished", "seed", "model"]
    assert whole["prompt_id"] == list(range(len(whole))) and len(whole) >= 7
    assert all(len(r) == 3 for r in whole["responses"]) and len({json.dumps(p) for p in whole["prompt"]}) == len(whole)
    assert whole[0]["task"] == "arithmetic" and whole[0]["reference"].startswith("Step 1:")
    assert all(p[-1]["role"] == "user" for p in whole["prompt"])
    assert json.loads((tmp_path / "whole" / "settings.json").read_text())["num_responses"] == 3

    # Kill a run once it has written 2 prompts, cut its last line as a kill mid-write would, then resume.
    killed = tmp_path / "killed"
    progress = killed / "rollouts.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge.rollouts", *argv(chat_model, killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while time.time() < deadline and (not progress.exists() or progress.read_text().count("\n") < 2):
        time.sleep(0.05)
    process.kill()
    process.wait()
    lines = progress.read_text().splitlines()
    assert 2 <= len(lines) < len(whole), "the run should have been killed part-way"
    with progress.open("a") as f:
        f.write(lines[-1][: len(lines[-1]) // 2])
    resumed = run(chat_model, killed)
    ids = [json.loads(line)["prompt_id"] for line in progress.read_text().splitlines()]
    assert sorted(ids) == list(range(len(whole))), "every prompt sampled exactly once"
    assert resumed.to_list() == whole.to_list()

    other_seed = run(chat_model, tmp_path / "other", "--seed", "1")
    assert other_seed["responses"] != whole["responses"]


def test_batched_prompts_resume_a_batch_cut_short_to_the_same_responses(chat_model, tmp_path):
    """Four prompts' responses sampled together; a kill after two of a batch's four rows were written leaves a
    restart that samples the batch again (same prompts, same seed) and writes the other two, as they were."""
    whole = run(chat_model, tmp_path / "whole", "--prompts_per_batch", "4")
    assert whole["seed"] == [0] * 4 + [4] * 4 + [8] * (len(whole) - 8)  # seed + the batch's first prompt id
    progress = tmp_path / "whole" / "rollouts.jsonl"
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "settings.json").write_text((tmp_path / "whole" / "settings.json").read_text())
    (cut / "rollouts.jsonl").write_text("".join(progress.read_text().splitlines(keepends=True)[:6]))
    assert run(chat_model, cut, "--prompts_per_batch", "4").to_list() == whole.to_list()


def test_a_restart_with_other_settings_is_refused(chat_model, tmp_path):
    run(chat_model, tmp_path)
    with pytest.raises(LmforgeError, match="other settings"):
        run(chat_model, tmp_path, "--temperature", "0.5")


def test_prompts_from_local_files(tmp_path):
    texts = tmp_path / "prompts.jsonl"
    texts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hello?", "Who are you?", "Hello?"]))
    prompts = rollouts.load_prompts({"mine": {"path": "json", "data_files": str(texts)}})
    assert [p["prompt"] for p in prompts] == [
        [{"role": "user", "content": "Hello?"}],
        [{"role": "user", "content": "Who are you?"}],
    ]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        json.dumps({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}) + "\n"
    )
    (prompt,) = rollouts.load_prompts({"chats": {"path": "json", "data_files": str(chats)}})
    assert prompt == {"prompt": [{"role": "user", "content": "2+2?"}], "task": "chats", "reference": "4"}
    chats.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        )
        + "\n"
    )
    with pytest.raises(LmforgeError, match="'chats' row 0: message 1 is 'user' where 'assistant' was expected"):
        rollouts.load_prompts({"chats": {"path": "json", "data_files": str(chats)}})


# Runs rollouts.write_dataset in a child that SIGKILLs itself at the n-th audit event of a kind, just before it acts.
KILL_AT = """
import os, signal, sys
from pathlib import Path
from lmforge import rollouts

path, kind, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
seen = []

def kill_at(event, args):
    if event == kind and not (event == "shutil.rmtree" and Path(args[0]).name == ".dataset.tmp"):  # its clean-up
        seen.append(args)
        if len(seen) == n:
            os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(kill_at)
rollouts.write_dataset([{"version": "new"}], path)
"""


@pytest.mark.parametrize(
    "kind, n, left", [("os.rename", 1, "old"), ("os.rename", 2, "old"), ("shutil.rmtree", 1, "new")]
)
def test_a_kill_while_the_dataset_is_swapped_in_leaves_the_old_or_the_new(tmp_path, kind, n, left):
    """Killed before the old dataset is renamed aside, between the two renames, or before the old one is removed:
    after the start-up recovery that rollouts and label run, the old or the new dataset loads, whole."""
    path = tmp_path / "dataset"
    Dataset.from_list([{"version": "old"}]).save_to_disk(path)
    run = subprocess.run([sys.executable, "-c", KILL_AT, str(path), kind, str(n)], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    recover_dir(path)
    assert load_from_disk(str(path))["version"] == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) in (["dataset"], [".dataset.tmp", "dataset"])
    rollouts.write_dataset([{"version": "newer"}], path)  # the next run swaps its dataset in as usual
    assert load_from_disk(str(path))["version"] == ["newer"] and [p.name for p in tmp_path.iterdir()] == ["dataset"]
