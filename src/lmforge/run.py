"""`lmforge run recipes/NAME`: every stage of a recipe folder, in pipeline order, each in its own process.

    lmforge run recipes/demo                    # all stages; finished ones are skipped
    lmforge run recipes/demo --from sft         # re-run sft and everything after it
    lmforge run recipes/demo --only reward      # re-run one stage

A stage runs when the folder has its recipe, `<stage>.yaml`; variants such as `sft_lora.yaml` are run
by hand. Each stage reads the previous one's output through its recipe's paths. When a stage exits
successfully, a marker `<run_dir>/.done/<stage>.json` (wall time, recipe hash) is written atomically,
after the stage's own artifact; a rerun skips marked stages, and a killed stage, having no marker,
runs again and resumes from its own checkpoints.

With `--push_to_hub --hub_namespace ME`, each stage's artifact (its recipe's `output_dir`) is pushed to
its own repo with a card linking the repos and revisions it came from (see lmforge.hub).
"""

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from lmforge.files import read_json, write_json
from lmforge.hub import lineage_path, push_stage

# Pipeline order. Commands that are not steps of a run (generate, chat, merge, the ranking page) are absent.
PIPELINE = ("data", "tokenizer", "pack", "pretrain", "sft", "rollouts", "label", "reward", "ppo", "grpo", "dpo",
            "eval", "report")


def stages_to_run(recipe_dir: Path, start: str | None, only: str | None) -> list[str]:
    present = [stage for stage in PIPELINE if (recipe_dir / f"{stage}.yaml").is_file()]
    for name, value in (("--from", start), ("--only", only)):
        if value and value not in present:
            sys.exit(f"lmforge run: {name} {value}: {recipe_dir} has no {value}.yaml (stages: {', '.join(present)})")
    if only:
        return [only]
    return present[present.index(start):] if start else present


def run_stage(stage: str, recipe: Path) -> float:
    """Run one stage in a fresh process (memory is given back, a crash stays contained); return its wall time."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lmforge.cli", stage, "--config", str(recipe)])
    if result.returncode != 0:
        sys.exit(f"lmforge run: stage {stage} failed (exit {result.returncode}); fix it and rerun: "
                 "finished stages are skipped")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lmforge run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe_dir", type=Path, help="a folder of stage recipes, e.g. recipes/demo")
    parser.add_argument("--from", dest="start", help="re-run this stage and the ones after it")
    parser.add_argument("--only", help="re-run this stage alone")
    parser.add_argument("--run_dir", type=Path, help="where completion markers go (default: runs/<folder name>)")
    parser.add_argument("--push_to_hub", action="store_true", help="push each stage's artifact to the Hub")
    parser.add_argument("--hub_namespace", help="user or organisation that owns the pushed repos")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_namespace:
        parser.error("--push_to_hub needs --hub_namespace")
    run_dir = args.run_dir or Path("runs") / args.recipe_dir.name
    stages = stages_to_run(args.recipe_dir, args.start, args.only)
    forced = set(stages) if (args.start or args.only) else set()

    bar = tqdm(stages, desc="pipeline", unit="stage")
    for stage in bar:
        recipe = args.recipe_dir / f"{stage}.yaml"
        marker = run_dir / ".done" / f"{stage}.json"
        if marker.is_file() and stage not in forced:
            bar.write(f"[{stage}] done in an earlier run ({read_json(marker)['seconds']:.0f} s), skipped")
        else:
            bar.set_postfix_str(stage)
            bar.write(f"[{stage}] lmforge {stage} --config {recipe}")
            seconds = run_stage(stage, recipe)
            write_json(marker, {"stage": stage, "recipe": str(recipe), "seconds": round(seconds, 1),
                                "recipe_sha256": hashlib.sha256(recipe.read_bytes()).hexdigest(),
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if args.push_to_hub and (stage in forced or not pushed(run_dir, stage)):
            output_dir = Path(yaml.safe_load(recipe.read_text())["output_dir"])
            pushed_to = push_stage(stage, output_dir, args.hub_namespace, run_dir)
            if pushed_to:
                bar.write(f"[{stage}] pushed to {pushed_to['url']} at {pushed_to['revision'][:10]}")
    bar.close()


def pushed(run_dir: Path, stage: str) -> bool:
    return lineage_path(run_dir).is_file() and stage in read_json(lineage_path(run_dir))


def cli(argv: list[str] | None = None) -> None:
    main(argv)


if __name__ == "__main__":
    cli()
