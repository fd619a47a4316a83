"""`lmforge run` decides like a build system, holds its run folder, and takes its stage with it when it dies.

The runs are real: the runner as a process on a folder of two cheap stages (tokenizer and pack on one book,
about 10 s together), or on a tokenizer whose text file is a FIFO, a stage that blocks until the test lets it go.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk
from transformers import AutoTokenizer

from lmforge.lib.hub import PARENTS
from lmforge.lib.stages import PIPELINE, STAGES
from lmforge.run import plan


BOOK = str(Path(__file__).parent.parent / "data/demo/books/macbeth.txt.gz")


def write_recipes(folder: Path, vocab_size: int) -> None:
    """tokenizer and pack recipes with paths relative to `folder` (the runner's working directory)."""
    source = {"documents": [], "text_files": [BOOK], "heldout_fraction": 0.2}
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    (folder / "recipes/tokenizer.yaml").write_text(
        yaml.safe_dump({**source, "vocab_size": vocab_size, "output_dir": "out/tokenizer"})
    )
    (folder / "recipes/pack.yaml").write_text(
        yaml.safe_dump(
            {**source, "tokenizer": "out/tokenizer", "seq_len": 64, "num_proc": 1, "output_dir": "out/pack"}
        )
    )


def lmforge_run(folder: Path, *flags: str, timeout: int = 300) -> str:
    command = [sys.executable, "-m", "lmforge.cli", "run", "recipes", "--run_dir", "run", *flags]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def vocab_sizes(folder: Path) -> tuple[int, int, int]:
    """The tokenizer's size, the one pack.json recorded, and the largest id in the packed blocks."""
    pack = json.loads((folder / "out/pack/pack.json").read_text())
    largest = max(max(row) for row in load_from_disk(folder / "out/pack")["train"]["input_ids"])
    return len(AutoTokenizer.from_pretrained(folder / "out/tokenizer")), pack["vocab_size"], largest


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A folder where both stages ran once, with a 300-token vocabulary, and what the runner printed."""
    folder = tmp_path_factory.mktemp("finished")
    write_recipes(folder, vocab_size=300)
    return folder, lmforge_run(folder)


@pytest.fixture
def run_folder(finished, tmp_path):
    """A copy of the finished folder for one test to change."""
    folder = tmp_path / "run"
    shutil.copytree(finished[0], folder)
    return folder


def test_the_registry_is_the_one_stage_list():
    assert PIPELINE == (
        "data",
        "tokenizer",
        "pack",
        "pretrain",
        "sft",
        "interrogate",
        "sft_refusals",
        "rollouts",
        "label",
        "reward",
        "ppo",
        "grpo",
        "dpo",
        "eval",
        "report",
    )
    for name in PIPELINE:  # every stage reads only stages before it, so pipeline order is a valid build order
        assert all(PIPELINE.index(parent) < PIPELINE.index(name) for parent in STAGES[name].reads), name
    assert PARENTS["pretrain"] == ["data", "tokenizer"] and PARENTS["label"] == ["sft"]  # through pack, rollouts
    assert {name for name, stage in STAGES.items() if stage.repo_type == "dataset"} == {"data", "label"}


@pytest.mark.slow
def test_unchanged_folder_skips_every_stage_and_says_why(finished, run_folder):
    assert "[tokenizer] no marker: runs" in finished[1] and "[pack] no marker: runs" in finished[1]
    before = (run_folder / "run/.done/pack.json").read_text()
    output = lmforge_run(run_folder)
    assert re.search(r"\[tokenizer\] done in an earlier run \(\d+ s\) and up to date: skipped", output)
    assert re.search(r"\[pack\] done in an earlier run \(\d+ s\) and up to date: skipped", output)
    assert "lmforge tokenizer --config" not in output and "lmforge pack --config" not in output
    assert (run_folder / "run/.done/pack.json").read_text() == before  # no marker is written for a skipped stage


@pytest.mark.slow
def test_changed_recipe_redoes_the_stage_and_what_reads_it(run_folder):
    assert vocab_sizes(run_folder)[:2] == (300, 300)
    write_recipes(run_folder, vocab_size=600)
    output = lmforge_run(run_folder)
    assert "[tokenizer] recipe changed: redone from scratch" in output
    assert "[pack] upstream tokenizer reran: redone from scratch" in output
    assert "exists, skipping" not in output  # the stale outputs were moved aside, not kept
    tokens, packed, largest = vocab_sizes(run_folder)
    assert (tokens, packed) == (600, 600) and largest >= 300  # ids only the new vocabulary has
    assert json.loads((run_folder / "out/tokenizer.stale/compression.json").read_text())["vocab_size"] == 300
    assert lmforge_run(run_folder).count("up to date: skipped") == 2


def test_from_and_only_together_are_refused(tmp_path):
    """Before, --only won silently over --from."""
    write_recipes(tmp_path, vocab_size=300)
    command = [sys.executable, "-m", "lmforge.cli", "run", "recipes", "--from", "tokenizer", "--only", "pack"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "argument --only: not allowed with argument --from" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_only_redoes_one_stage_and_leaves_its_readers_stale(run_folder):
    write_recipes(run_folder, vocab_size=600)
    output = lmforge_run(run_folder, "--only", "tokenizer")
    assert "[tokenizer] asked for by --only tokenizer: redone from scratch" in output
    assert "[pack] upstream tokenizer reran: not run with --only tokenizer" in output
    assert vocab_sizes(run_folder)[:2] == (600, 300)  # pack still holds the old vocabulary ...
    output = lmforge_run(run_folder)
    assert "[tokenizer] done in an earlier run" in output and "[pack] upstream tokenizer reran" in output
    assert vocab_sizes(run_folder)[:2] == (600, 600)  # ... until the next run redoes it


# A stage that blocks: the tokenizer opening a FIFO waits for a writer, in the stage process, until the test
# lets it go. ---------------------------------------------------------------------------------------------


@pytest.fixture
def blocked_runner(tmp_path):
    """A runner whose stage process is blocked; yields (runner, stage pid)."""
    fifo = tmp_path / "book.txt"
    os.mkfifo(fifo)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/tokenizer.yaml").write_text(
        yaml.safe_dump({"documents": [], "text_files": [str(fifo)], "output_dir": "out/tokenizer"})
    )
    command = [sys.executable, "-m", "lmforge.cli", "run", "recipes", "--run_dir", "run"]
    runner = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage = wait_for(lambda: next(iter(children(runner.pid)), None), "the stage process")
    try:
        yield runner, stage
    finally:
        for pid in working_in(tmp_path):  # this test's runners and stages, orphans included (where a test failed)
            os.kill(pid, signal.SIGKILL)
        runner.wait()


def working_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "cwd") == str(folder):
                found.append(int(entry.name))
        except OSError:  # ended, or a zombie
            continue
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process has just ended
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the parent's pid, after the name in parentheses
            found.append(int(entry.name))
    return found


def signal_handled(pid: int, signum: int) -> bool:
    """Whether the process has installed a handler for `signum` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, waiting to be reaped by whoever inherited it) is not alive."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(probe, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {seconds} s")


def test_second_runner_on_the_same_folder_stops_naming_the_holder(blocked_runner, tmp_path):
    runner, stage = blocked_runner
    second = subprocess.run(
        [sys.executable, "-m", "lmforge.cli", "run", "recipes", "--run_dir", "run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert second.stderr.strip().splitlines() == [
        f"lmforge run: run is in use by another lmforge run (pid {runner.pid}); wait for it or stop it"
    ]
    assert alive(stage)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=lambda signum: signum.name)
def test_the_stage_dies_with_its_runner(blocked_runner, tmp_path, signum):
    runner, stage = blocked_runner
    # A worker in the stage's process group, as datatrove's are: it must not outlive the stage either.
    worker = subprocess.Popen(["sleep", "600"], process_group=stage)
    deadline = time.monotonic() + 20  # the stage is past its start-up once it handles SIGTERM (or blocked by then)
    while not signal_handled(stage, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(runner.pid, signum)
    runner.wait(timeout=30)
    wait_for(lambda: not alive(stage), "end of the stage process", seconds=10)
    wait_for(lambda: worker.poll() is not None, "end of the stage's worker", seconds=10)
    with open(tmp_path / "run/.lock", "a") as lock:  # the kernel released the dead runner's lock
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (tmp_path / "run/.done/tokenizer.json").exists()  # a killed stage has no done marker, and the
    assert (tmp_path / "run/.started/tokenizer.json").exists()  # record of its start makes the next run resume it


def test_the_terminal_shows_a_line_per_stage_and_the_log_keeps_its_output(finished):
    """One line per stage: why it ran, its time, what it made and its key figures (lmforge.lib.stages)."""
    folder, output = finished
    made = r"no marker: runs, done in \d+ s: out/{} \(\d+ files, [\d.,]+ MB\)"
    lines = [line for line in output.splitlines() if line.startswith("[")]
    assert len(lines) == 2, output
    assert re.fullmatch(
        rf"\[tokenizer\] {made.format('tokenizer')}; tokens 300; held-out bytes/token \d\.\d+", lines[0]
    )
    assert re.fullmatch(rf"\[pack\] {made.format('pack')}; training blocks [1-9][\d,]*", lines[1]), lines
    for stage in ("tokenizer", "pack"):
        log = (folder / f"run/logs/{stage}.log").read_text()
        assert log.startswith(f"lmforge {stage} --config recipes/{stage}.yaml\n")  # to rerun it by hand
        assert log.strip() and log not in output  # the stage's own output went to its log, not the terminal


def test_a_failed_stage_names_its_log_and_shows_its_last_lines(tmp_path):
    write_recipes(tmp_path, vocab_size=300)
    (tmp_path / "recipes/pack.yaml").write_text(yaml.safe_dump({"tokenizer": "no/such/tokenizer", "output_dir": "p"}))
    command = [sys.executable, "-m", "lmforge.cli", "run", "recipes", "--run_dir", "run", "--only", "pack"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    log = tmp_path / "run/logs/pack.log"
    assert f"{log.relative_to(tmp_path)}, its last lines:" in result.stderr
    last = [line for line in log.read_text().splitlines() if line.strip()][-1]
    assert "lmforge pack: error:" in last and last in result.stderr  # the stage's one-line error, shown
    assert result.stderr.rstrip().endswith("fix it and rerun: up-to-date stages are skipped")


@pytest.mark.parametrize("folder", ["no_such_folder", "empty", "sft.yaml"])
def test_a_folder_without_recipes_is_one_line(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    (tmp_path / "sft.yaml").write_text("output_dir: out\n")  # a recipe file, given where its folder was meant
    command = [sys.executable, "-m", "lmforge.cli", "run", folder]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"lmforge run: {folder}")
    if folder == "sft.yaml":
        assert result.stderr.strip().endswith("run this one stage with lmforge sft --config sft.yaml")


def test_variants_run_in_place_of_their_stage_and_what_the_run_reads_runs_too():
    """A folder without sft.yaml runs its SFT variants; merge runs because dpo and grpo read its output; beside a
    <stage>.yaml a variant is run by hand (the demo's sft_lora, ppo_hacking, grpo_tools, label_page)."""
    root = Path(__file__).parent.parent / "recipes"
    hub = plan(root / "smollm2-360m-instruct")
    assert [step.name for step in hub][:3] == ["sft_full", "sft_lora", "merge"]
    assert {"dpo", "grpo"} <= {step.name for step in hub}
    steps = {step.name: step for step in hub}
    assert steps["merge"].stage == "merge" and steps["merge"].reads == ("sft_lora",)
    assert {"sft_lora", "merge"} <= set(steps["dpo"].reads)
    demo = [step.name for step in plan(root / "demo")]
    assert demo == [name for name in PIPELINE if (root / f"demo/{name}.yaml").is_file()]
