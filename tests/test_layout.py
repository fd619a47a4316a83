"""The layout's rules, checked: a stage never imports another stage, the library never imports a stage, the
import-linter contracts that `make lint` runs name exactly the stages of the registry, and the stages that train
nothing start without transformers' trainer."""

import ast
import configparser
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.lib.stages import STAGES


ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "lmforge"
STAGE_MODULES = sorted({stage.module for stage in STAGES.values()})  # a second pass of a stage shares its module


def imported_modules(path: Path) -> set[str]:
    """Every lmforge module `path` imports, `from lmforge import x` counted as lmforge.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("lmforge.")}


def stages_imported(path: Path) -> set[str]:
    return {name for name in imported_modules(path) if ".".join(name.split(".")[:2]) in STAGE_MODULES}


def test_every_registered_stage_is_a_module_with_a_cli():
    for name in STAGE_MODULES:
        assert callable(importlib.import_module(name).cli), name


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_a_stage_imports_no_other_stage(module):
    path = PACKAGE / f"{module.split('.')[1]}.py"
    assert stages_imported(path) <= {module}, f"{module} imports {stages_imported(path) - {module}}"


def test_the_library_imports_no_stage():
    offenders = {str(path.relative_to(PACKAGE)): stages_imported(path) for path in (PACKAGE / "lib").rglob("*.py")}
    assert not {path: stages for path, stages in offenders.items() if stages}


def test_the_import_linter_contracts_name_exactly_the_registered_stages():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    independent = config["importlinter:contract:stages"]["modules"].split()
    forbidden = config["importlinter:contract:library"]["forbidden_modules"].split()
    assert sorted(independent) == sorted(forbidden) == STAGE_MODULES


# What a fresh `lmforge STAGE` process has imported once the stage's module is loaded: the runner and the stages that
# train nothing leave out transformers' trainer stack (about 4 s of every such start, bench/startup.py) and torch
# (1.8 s); the runner and the data stage leave out transformers too.
TRAINER_STACK = (
    "torch",
    "transformers",
    "transformers.training_args",
    "peft",
    "accelerate",
    "trl.trainer",
    "deepspeed",
)
LIGHT_STAGES = {"run": [], "data": [], "tokenizer": ["transformers"], "pack": ["transformers"]}


@pytest.mark.parametrize("stage", LIGHT_STAGES)
def test_the_runner_and_stages_that_train_nothing_start_without_the_trainer(stage):
    code = f"import sys, json, lmforge.{stage}; print(json.dumps(sorted(set({TRAINER_STACK!r}) & set(sys.modules))))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == LIGHT_STAGES[stage]
