"""Recipes: YAML files parsed into dataclasses by TRL's `TrlParser`, with command-line overrides.

`lmforge STAGE --config recipes/demo/STAGE.yaml --output_dir runs/x` reads the recipe, then lets any
key be overridden on the command line. TRL rejects unknown keys but names neither the file nor what
was probably meant, so the keys are checked here first.
"""

import difflib
import sys
from pathlib import Path

import yaml
from trl import TrlParser

from lmforge import LmforgeError


def parse(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse `--config FILE` plus overrides in `argv` into one instance of each dataclass type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(dataclass_types)
    if "--config" in argv:
        check_recipe(parser, Path(argv[argv.index("--config") + 1]))
    return parser.parse_args_and_config(argv)


def check_recipe(parser: TrlParser, path: Path) -> None:
    """Fail with the file and key named when a recipe is missing, malformed or has an unknown key."""
    if not path.is_file():
        raise LmforgeError(f"recipe {path} not found")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise LmforgeError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise LmforgeError(f"recipe {path} must be a mapping of keys to values")
    known = {action.dest for action in parser._actions} | {"env"}  # `env` sets environment variables (TRL)
    problems = []
    for key in recipe:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if problems:
        raise LmforgeError(f"recipe {path}: " + "; ".join(problems))
