"""`lmforge run recipes/NAME`: every stage of a recipe folder, in pipeline order, each in its own process.

    lmforge run recipes/demo                    # every stage that is stale, in order; up-to-date ones are skipped
    lmforge run recipes/demo --from sft         # redo sft and every stage after it
    lmforge run recipes/demo --only tokenizer   # redo one stage; the stages that read it are then stale

Which recipes of the folder run, by file name (a recipe's stage is its name up to the first underscore):
    <stage>.yaml           a pipeline stage's recipe runs (`sft_refusals.yaml` is a stage of its own);
    <stage>_<variant>.yaml runs in that stage's place when the folder has no <stage>.yaml (recipes/smollm2-360m-instruct:
                           sft_full and sft_lora); beside a <stage>.yaml it is run by hand (recipes/demo: sft_lora,
                           ppo_hacking, grpo_tools, label_page);
    any other recipe       runs when a recipe that runs reads its output_dir (merge.yaml, between sft_lora and dpo).
They run in the registry's order (lmforge.lib.stages). Each stage reads earlier stages' outputs through its recipe's
paths; which stages each one reads is declared in the registry, and a recipe outside it reads those whose output_dir
its values name. The runner decides as a build system does, and prints why for every stage:
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

Each stage gets the run folder's absolute path in LMFORGE_RUN_DIR (lmforge.lib.stages.RUN_DIR): where it keeps a
cache its recipe names no place for (the search tool's index).

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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from lmforge.cli import STAGE_GROUP
from lmforge.lib.configs import check_output_dir, read_recipe
from lmforge.lib.files import read_json, write_json
from lmforge.lib.hub import lineage_path, push_stage
from lmforge.lib.stages import PIPELINE, RUN_DIR, STAGES, Stage


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class Step:
    """One recipe of the folder that the runner runs: its markers and log are named after the recipe's file name."""

    name: str  # the recipe's file name without .yaml
    stage: str  # the registered stage whose command runs it
    recipe: Path
    reads: tuple[str, ...]  # the steps whose output it reads: when one of them reruns, this one is stale


def stage_of(name: str) -> str:
    return name if name in STAGES else name.split("_", 1)[0]


def recipe_values(recipe: Path) -> dict:
    values = read_recipe(recipe)
    return values if isinstance(values, dict) else {}


def strings_of(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for item in value for text in strings_of(item)] if isinstance(value, list) else []


def plan(recipe_dir: Path) -> list[Step]:
    """The folder's recipes that run, in pipeline order (see the module docstring for which ones)."""
    if recipe_dir.is_file():
        stage = STAGES.get(stage_of(recipe_dir.stem))
        by_hand = (
            f"; run this one stage with lmforge {stage.command or stage.name} --config {recipe_dir}" if stage else ""
        )
        sys.exit(f"lmforge run: {recipe_dir} is a file: give its folder ({recipe_dir.parent}){by_hand}")
    if not recipe_dir.is_dir():
        sys.exit(f"lmforge run: {recipe_dir}: no such folder (a folder of stage recipes, e.g. recipes/demo)")
    files = {path.stem: path for path in sorted(recipe_dir.glob("*.yaml")) if stage_of(path.stem) in STAGES}
    values = {name: recipe_values(path) for name, path in files.items()}
    outputs = {name: Path(v["output_dir"]) for name, v in values.items() if isinstance(v.get("output_dir"), str)}

    # A folder that another recipe also writes, or one that holds other outputs (report's run folder), names no one
    # recipe's output: reading a path in it is no dependency.
    own = {
        name: folder
        for name, folder in outputs.items()
        if not any(folder == other or folder in other.parents for key, other in outputs.items() if key != name)
    }

    def reads_output_of(reader: str, name: str) -> bool:
        texts = strings_of(values[reader])
        return name != reader and name in own and any(own[name] in (Path(t), *Path(t).parents) for t in texts)

    chosen = {
        name
        for name in files
        if stage_of(name) in PIPELINE and (name == stage_of(name) or stage_of(name) not in files)
    }
    needed = True
    while needed:  # a recipe outside the pipeline runs when one that runs reads its output (merge before dpo)
        needed = {name for name in files if name not in chosen and any(reads_output_of(r, name) for r in chosen)}
        chosen |= needed
    if not chosen:
        stages = ", ".join(f"{stage}.yaml" for stage in PIPELINE)
        sys.exit(f"lmforge run: {recipe_dir} has no stage recipe to run (recipes named after a stage: {stages})")
    order = list(STAGES)
    names = sorted(chosen, key=lambda name: (order.index(stage_of(name)), name))
    return [
        Step(
            name,
            stage_of(name),
            files[name],
            tuple(
                other
                for other in names
                if other != name and (stage_of(other) in STAGES[stage_of(name)].reads or reads_output_of(name, other))
            ),
        )
        for name in names
    ]


def steps_to_run(steps: list[Step], recipe_dir: Path, start: str | None, only: str | None) -> list[str]:
    """The names of the steps this invocation may run."""
    present = [step.name for step in steps]
    for name, value in (("--from", start), ("--only", only)):
        if value and value not in present:
            sys.exit(
                f"lmforge run: {name} {value}: {recipe_dir} has no {value}.yaml to run (runs: {', '.join(present)})"
            )
    if only:
        return [only]
    return present[present.index(start) :] if start else present


def read_marker(run_dir: Path, kind: str, stage: str) -> dict | None:
    path = run_dir / kind / f"{stage}.json"
    return read_json(path) if path.is_file() else None


def recipe_sha256(recipe: Path) -> str:
    return hashlib.sha256(recipe.read_bytes()).hexdigest()


def decide(step: Step, run_dir: Path, reran: set[str], stale: set[str]) -> tuple[str, str]:
    """What to do with a step ("skip", "run" or "redo": run from an empty output_dir) and why. `reran`: the steps
    that ran in this invocation; `stale`: those found stale but left for a later one (with --from or --only)."""
    done = read_marker(run_dir, ".done", step.name)
    record = done or read_marker(run_dir, ".started", step.name)
    if record is None:
        return "run", "no marker"
    if record["recipe_sha256"] != recipe_sha256(step.recipe):
        return "redo", "recipe changed"
    since = datetime.fromisoformat(record.get("started") or record["finished"])  # markers of old runners: finished
    for parent in step.reads:
        if parent in stale:
            return "redo", f"upstream {parent} is stale"
        parent_done = read_marker(run_dir, ".done", parent)
        if parent in reran or (parent_done and datetime.fromisoformat(parent_done["finished"]) > since):
            return "redo", f"upstream {parent} reran"
    return ("skip", "up to date") if done else ("run", "unfinished, resuming")


def output_dir_of(recipe: Path) -> Path:
    output_dir = recipe_values(recipe).get("output_dir")
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


def run_stage(step: Step, log: Path | None, run_dir: Path) -> float:
    """Run one step in a fresh process (memory is given back, a crash stays contained); return its wall time. Its
    output goes to `log` (None: to the terminal, as with --verbose)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "lmforge.cli", STAGES[step.stage].command or step.stage]
    preexec_fn = die_with(os.getpid()) if sys.platform == "linux" else None
    env = {**os.environ, STAGE_GROUP: "1", RUN_DIR: str(run_dir.resolve())}
    with open(log, "a") if log else nullcontext() as out:  # after the command line run_recorded wrote
        child = subprocess.Popen(
            [*command, "--config", str(step.recipe)],
            process_group=0,
            preexec_fn=preexec_fn,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        try:
            returncode = child.wait()
        finally:
            if child.poll() is None:  # the runner is stopping: the stage and the workers it started stop with it
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    if returncode != 0:
        tail = f"\n{log}, its last lines:\n" + "\n".join(last_lines(log, 15)) + "\n" if log else ""
        sys.exit(
            f"{tail}lmforge run: stage {step.name} failed (exit {returncode}); fix it and rerun: up-to-date stages are "
            "skipped"
        )
    return time.perf_counter() - start


def last_lines(log: Path, count: int) -> list[str]:
    """The last lines of a log, progress bars' carriage-return redraws reduced to their final state."""
    lines = log.read_text(errors="replace").splitlines()
    return [line.rsplit("\r", 1)[-1] for line in lines if line.strip()][-count:]


@contextmanager
def locked(run_dir: Path):
    """Hold `<run_dir>/.lock` for the whole run; a second runner on the folder stops at once."""
    check_output_dir(str(run_dir), "run_dir")
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
    redo = parser.add_mutually_exclusive_group()
    redo.add_argument("--from", dest="start", help="redo this stage and the ones after it")
    redo.add_argument("--only", help="redo this stage alone (the stages that read it become stale)")
    parser.add_argument("--run_dir", type=Path, help="where markers and the lock go (default: runs/<folder name>)")
    parser.add_argument("--push_to_hub", action="store_true", help="push each stage's artifact to the Hub")
    parser.add_argument("--hub_namespace", help="user or organisation that owns the pushed repos")
    parser.add_argument(
        "--verbose", action="store_true", help="stream each stage's output here (default: <run_dir>/logs/STAGE.log)"
    )
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_namespace:
        parser.error("--push_to_hub needs --hub_namespace")
    run_dir = args.run_dir or Path("runs") / args.recipe_dir.name
    steps = plan(args.recipe_dir)
    selected = steps_to_run(steps, args.recipe_dir, args.start, args.only)
    # Until the run ends: a caller that runs it from Python (a notebook, a test) keeps its own handlers afterwards,
    # and the processes it forks later do not end as a stopped runner.
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        with locked(run_dir):
            run_steps(args, run_dir, steps, selected)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_steps(args: argparse.Namespace, run_dir: Path, steps: list[Step], selected: list[str]) -> None:
    """Decide, in pipeline order, for every step of the folder; run the selected ones that need it."""
    forced = f"--only {args.only}" if args.only else f"--from {args.start}" if args.start else None
    reran, stale = set(), set()
    bar = tqdm(steps, desc="pipeline", unit="stage")
    for step in bar:
        name = step.name
        if forced and name in selected:
            action, reason = "redo", f"asked for by {forced}"
        else:
            action, reason = decide(step, run_dir, reran, stale)
        if action == "skip":
            seconds = read_marker(run_dir, ".done", name)["seconds"]
            bar.write(f"[{name}] done in an earlier run ({seconds:.0f} s) and {reason}: skipped")
        elif name not in selected:
            stale.add(name)
            bar.write(f"[{name}] {reason}: not run with {forced}; the next `lmforge run {args.recipe_dir}` runs it")
        else:
            bar.set_postfix_str(name)
            aside = (
                action == "redo" and STAGES[step.stage].keeps_output and set_aside(output_dir_of(step.recipe), run_dir)
            )
            moved = f" (its old output is now {aside})" if aside else ""
            seconds = run_recorded(step, run_dir, bar, verbose=args.verbose)
            bar.write(
                f"[{name}] {reason}: {'redone from scratch' if action == 'redo' else 'runs'}{moved}, "
                f"done in {seconds:.0f} s: {made_by(step)}"
            )
            reran.add(name)
        if args.push_to_hub and name in selected and (name in reran or not pushed(run_dir, name)):
            pushed_to = push_stage(name, output_dir_of(step.recipe), args.hub_namespace, run_dir)
            if pushed_to:
                bar.write(f"[{name}] pushed to {pushed_to['url']} at {pushed_to['revision'][:10]}")
    bar.close()


def run_recorded(step: Step, run_dir: Path, bar: tqdm, verbose: bool) -> float:
    """Run a step between its start record and its done marker (the done marker only if it succeeded); return its
    wall time."""
    started = {
        "stage": step.name,
        "recipe": str(step.recipe),
        "recipe_sha256": recipe_sha256(step.recipe),
        "started": datetime.now(UTC).isoformat(),
    }
    (run_dir / ".done" / f"{step.name}.json").unlink(missing_ok=True)  # its output is about to change
    write_json(run_dir / ".started" / f"{step.name}.json", started)
    command = f"lmforge {STAGES[step.stage].command or step.stage} --config {step.recipe}"
    log = None if verbose else run_dir / "logs" / f"{step.name}.log"
    if log:
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"{command}\n")
    else:
        bar.write(f"[{step.name}] {command}")
    seconds = run_stage(step, log, run_dir)
    write_json(
        run_dir / ".done" / f"{step.name}.json",
        started | {"seconds": round(seconds, 1), "finished": datetime.now(UTC).isoformat()},
    )
    (run_dir / ".started" / f"{step.name}.json").unlink()
    return seconds


def made_by(step: Step) -> str:
    """What a finished step made: its output_dir, with the size of what it holds, and its key figures."""
    output = output_dir_of(step.recipe)
    files = [path for path in output.rglob("*") if path.is_file()] if output.is_dir() else []
    made = f"{output} ({len(files)} files, {sum(path.stat().st_size for path in files) / 1e6:,.1f} MB)"
    figures = [f"{label} {value}" for label, value in key_figures(STAGES[step.stage], output)]
    return "; ".join([made, *figures])


def key_figures(stage: Stage, output: Path) -> list[tuple[str, str]]:
    """The stage's key figures (lmforge.lib.stages) that its output holds, formatted; those missing are left out."""
    found = []
    for label, where in stage.figures:
        file, keys = where.split(":")
        value = read_json(output / file) if (output / file).is_file() else None
        for key in keys.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = len(value)
        if isinstance(value, float):
            found.append((label, f"{value:.3f}"))
        elif isinstance(value, int):
            found.append((label, f"{value:,}"))
    return found


def pushed(run_dir: Path, stage: str) -> bool:
    return lineage_path(run_dir).is_file() and stage in read_json(lineage_path(run_dir))


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    cli()
