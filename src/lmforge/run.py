"""`lmforge run recipes/NAME`: every stage of a recipe folder, in pipeline order, each in its own process.

    lmforge run recipes/demo                    # every stage that is stale, in order; up-to-date ones are skipped
    lmforge run recipes/demo --from sft         # redo sft and every stage after it
    lmforge run recipes/demo --only tokenizer   # redo one stage; the stages that read it are then stale

A stage runs when the folder has its recipe, `<stage>.yaml`; variants such as `sft_lora.yaml` are run
by hand. Each stage reads earlier stages' outputs through its recipe's paths; which stages each one
reads is declared in lmforge.lib.stages. The runner decides as a build system does, and prints why for every stage:
    no marker              it never ran in this run folder: it runs
    unfinished, resuming   it started with this recipe and did not finish: it runs and resumes from its checkpoints
    recipe changed         the recipe's bytes differ from the sha256 its marker recorded: it is redone
    upstream X reran       a stage it reads finished after this one started, or reran just now: it is redone
    up to date             skipped
`--from X` redoes X and the stages after it; `--only X` redoes X alone and names the stages that read it,
directly or not: they are now stale, and the next `lmforge run` redoes them.

A stage is redone from an empty output_dir, because stages keep what their output_dir holds (the
tokenizer and pack skip when it exists, trainers resume from its checkpoints): the runner first moves the
old output aside to `<output_dir>.stale`, replacing an older one (delete it to reclaim the space). eval
and report need no such step: eval re-measures a model whose files or settings changed, report rewrites.

Markers: `<run_dir>/.started/<stage>.json` (recipe hash, start time) when a stage starts; when it exits
successfully, `<run_dir>/.done/<stage>.json` (wall time, recipe hash, start and finish times), written
atomically after the stage's own artifact. A failed or killed stage has no done marker.

One runner per run folder: it holds a lock on `<run_dir>/.lock` (flock, released by the kernel however the
runner ends), and a second runner stops at once naming the holder's pid. The stage process runs in its own
process group and dies with the runner: a runner stopped by Ctrl-C or SIGTERM kills the group, and a runner
killed outright takes the stage with it through the parent-death signal (Linux).

With `--push_to_hub --hub_namespace ME`, each stage's artifact (its recipe's `output_dir`) is pushed to
its own repo with a card linking the repos and revisions it came from (see lmforge.lib.hub).
"""

import argparse
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from lmforge.cli import STAGE_GROUP
from lmforge.lib.files import read_json, write_json
from lmforge.lib.hub import lineage_path, push_stage
from lmforge.lib.stages import PIPELINE, STAGES


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def stages_to_run(recipe_dir: Path, start: str | None, only: str | None) -> tuple[list[str], list[str]]:
    """The stages whose recipe is in the folder, and those of them this invocation may run."""
    present = [stage for stage in PIPELINE if (recipe_dir / f"{stage}.yaml").is_file()]
    for name, value in (("--from", start), ("--only", only)):
        if value and value not in present:
            sys.exit(f"lmforge run: {name} {value}: {recipe_dir} has no {value}.yaml (stages: {', '.join(present)})")
    if only:
        return present, [only]
    return present, present[present.index(start) :] if start else present


def read_marker(run_dir: Path, kind: str, stage: str) -> dict | None:
    path = run_dir / kind / f"{stage}.json"
    return read_json(path) if path.is_file() else None


def recipe_sha256(recipe: Path) -> str:
    return hashlib.sha256(recipe.read_bytes()).hexdigest()


def decide(stage: str, recipe: Path, run_dir: Path, reran: set[str], stale: set[str]) -> tuple[str, str]:
    """What to do with a stage ("skip", "run" or "redo": run from an empty output_dir) and why. `reran`: the stages
    that ran in this invocation; `stale`: those found stale but left for a later one (with --from or --only)."""
    done = read_marker(run_dir, ".done", stage)
    record = done or read_marker(run_dir, ".started", stage)
    if record is None:
        return "run", "no marker"
    if record["recipe_sha256"] != recipe_sha256(recipe):
        return "redo", "recipe changed"
    since = datetime.fromisoformat(record.get("started") or record["finished"])  # markers of old runners: finished
    for parent in STAGES[stage].reads:
        if parent in stale:
            return "redo", f"upstream {parent} is stale"
        parent_done = read_marker(run_dir, ".done", parent)
        if parent in reran or (parent_done and datetime.fromisoformat(parent_done["finished"]) > since):
            return "redo", f"upstream {parent} reran"
    return ("skip", "up to date") if done else ("run", "unfinished, resuming")


def output_dir_of(recipe: Path) -> Path:
    values = yaml.safe_load(recipe.read_text())
    output_dir = values.get("output_dir") if isinstance(values, dict) else None
    if not output_dir:
        sys.exit(f"lmforge run: {recipe}: no output_dir (the runner moves a stale output aside and pushes from it)")
    return Path(output_dir)


def set_aside(output_dir: Path, run_dir: Path) -> Path | None:
    """Move a stale output to `<output_dir>.stale`, replacing an older one, so that its stage starts afresh."""
    if not output_dir.exists():
        return None
    if run_dir.resolve().is_relative_to(output_dir.resolve()):
        sys.exit(f"lmforge run: output_dir {output_dir} holds the run folder {run_dir}; give the stage its own")
    aside = output_dir.with_name(f"{output_dir.name}.stale")
    shutil.rmtree(aside, ignore_errors=True)
    output_dir.rename(aside)
    return aside


def die_with(parent: int):
    """A preexec_fn for the stage process: the kernel sends it SIGTERM when the runner dies, even by SIGKILL (Linux),
    and the stage then kills its process group, the workers it started included (cli.stop_group_on_sigterm)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, before the fork

    def set_parent_death_signal():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died before the signal was set
            os._exit(1)

    return set_parent_death_signal


def run_stage(stage: str, recipe: Path) -> float:
    """Run one stage in a fresh process (memory is given back, a crash stays contained); return its wall time."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "lmforge.cli", STAGES[stage].command or stage, "--config", str(recipe)]
    preexec_fn = die_with(os.getpid()) if sys.platform == "linux" else None
    child = subprocess.Popen(command, process_group=0, preexec_fn=preexec_fn, env={**os.environ, STAGE_GROUP: "1"})
    try:
        returncode = child.wait()
    finally:
        if child.poll() is None:  # the runner is stopping: the stage and the workers it started stop with it
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if returncode != 0:
        sys.exit(
            f"lmforge run: stage {stage} failed (exit {returncode}); fix it and rerun: up-to-date stages are skipped"
        )
    return time.perf_counter() - start


@contextmanager
def locked(run_dir: Path):
    """Hold `<run_dir>/.lock` for the whole run; a second runner on the folder stops at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            sys.exit(
                f"lmforge run: {run_dir} is in use by another lmforge run (pid {lock.read().strip() or '?'}); "
                "wait for it or stop it"
            )
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def stop(signum, frame):
    sys.exit(f"lmforge run: stopped by {signal.Signals(signum).name}")  # run_stage's `finally` stops the stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lmforge run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe_dir", type=Path, help="a folder of stage recipes, e.g. recipes/demo")
    parser.add_argument("--from", dest="start", help="redo this stage and the ones after it")
    parser.add_argument("--only", help="redo this stage alone (the stages that read it become stale)")
    parser.add_argument("--run_dir", type=Path, help="where markers and the lock go (default: runs/<folder name>)")
    parser.add_argument("--push_to_hub", action="store_true", help="push each stage's artifact to the Hub")
    parser.add_argument("--hub_namespace", help="user or organisation that owns the pushed repos")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_namespace:
        parser.error("--push_to_hub needs --hub_namespace")
    run_dir = args.run_dir or Path("runs") / args.recipe_dir.name
    present, selected = stages_to_run(args.recipe_dir, args.start, args.only)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, stop)
    with locked(run_dir):
        run_stages(args, run_dir, present, selected)


def run_stages(args: argparse.Namespace, run_dir: Path, present: list[str], selected: list[str]) -> None:
    """Decide, in pipeline order, for every stage of the folder; run the selected ones that need it."""
    forced = f"--only {args.only}" if args.only else f"--from {args.start}" if args.start else None
    reran, stale = set(), set()
    bar = tqdm(present, desc="pipeline", unit="stage")
    for stage in bar:
        recipe = args.recipe_dir / f"{stage}.yaml"
        if forced and stage in selected:
            action, reason = "redo", f"asked for by {forced}"
        else:
            action, reason = decide(stage, recipe, run_dir, reran, stale)
        if action == "skip":
            seconds = read_marker(run_dir, ".done", stage)["seconds"]
            bar.write(f"[{stage}] done in an earlier run ({seconds:.0f} s) and {reason}: skipped")
        elif stage not in selected:
            stale.add(stage)
            bar.write(f"[{stage}] {reason}: not run with {forced}; the next `lmforge run {args.recipe_dir}` runs it")
        else:
            bar.set_postfix_str(stage)
            bar.write(f"[{stage}] {reason}: {'redone from scratch' if action == 'redo' else 'runs'}")
            aside = action == "redo" and STAGES[stage].keeps_output and set_aside(output_dir_of(recipe), run_dir)
            if aside:
                bar.write(f"[{stage}] its old output is now {aside}")
            run_recorded(stage, recipe, run_dir, bar)
            reran.add(stage)
        if args.push_to_hub and stage in selected and (stage in reran or not pushed(run_dir, stage)):
            pushed_to = push_stage(stage, output_dir_of(recipe), args.hub_namespace, run_dir)
            if pushed_to:
                bar.write(f"[{stage}] pushed to {pushed_to['url']} at {pushed_to['revision'][:10]}")
    bar.close()


def run_recorded(stage: str, recipe: Path, run_dir: Path, bar: tqdm) -> None:
    """Run a stage between its start record and its done marker (the done marker only if it succeeded)."""
    started = {
        "stage": stage,
        "recipe": str(recipe),
        "recipe_sha256": recipe_sha256(recipe),
        "started": datetime.now(UTC).isoformat(),
    }
    (run_dir / ".done" / f"{stage}.json").unlink(missing_ok=True)  # its output is about to change
    write_json(run_dir / ".started" / f"{stage}.json", started)
    bar.write(f"[{stage}] lmforge {stage} --config {recipe}")
    seconds = run_stage(stage, recipe)
    write_json(
        run_dir / ".done" / f"{stage}.json",
        started | {"seconds": round(seconds, 1), "finished": datetime.now(UTC).isoformat()},
    )
    (run_dir / ".started" / f"{stage}.json").unlink()


def pushed(run_dir: Path, stage: str) -> bool:
    return lineage_path(run_dir).is_file() and stage in read_json(lineage_path(run_dir))


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    cli()
