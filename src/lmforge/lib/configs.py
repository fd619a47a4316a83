"""Recipes: YAML files parsed into dataclasses by TRL's `TrlParser`, with command-line overrides.

`lmforge STAGE --config recipes/demo/STAGE.yaml --output_dir runs/x` reads the recipe, then lets any
key be overridden on the command line. TRL rejects unknown keys but names neither the file nor what
was probably meant, and it passes a recipe's values to the dataclasses unchecked (`max_steps: abc`
fails deep inside argparse or a trainer), so keys and values are checked here first, each bad one
reported in one line naming the recipe, the key, the value and the type expected.
"""

import atexit
import difflib
import json
import logging
import os
import sys
import typing
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from types import TracebackType

import yaml
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError
from trl import TrlParser

from lmforge import LmforgeError
from lmforge.lib.loading import check_model_folder


if typing.TYPE_CHECKING:
    from transformers import TrainingArguments


# This module imports neither torch nor transformers' trainer: the runner and the stages that train nothing (data,
# tokenizer, pack) parse their recipes through it, and those imports cost about 4 s of every such process's start.
# A training stage has imported them with its config classes; what here needs them finds them in sys.modules.


# What to install for each `report_to` logger the README names, when it is missing.
REPORTERS = {
    "tensorboard": "'lmforge[tensorboard]' (in a checkout: pip install -e '.[tensorboard]')",
    "trackio": "trackio",
    "wandb": "wandb",
}


class StageParser(TrlParser):
    """TrlParser whose argparse errors (`--max_steps abc`, an option without its value) raise LmforgeError
    instead of printing the whole usage: argparse documents `error` as the method to override.

    `emptied`: list options the command line set to `[]`. argparse cannot take an option with no values, so they
    become defaults, set after TRL has set the recipe's, so that they win over the recipe as any override does."""

    emptied: tuple[str, ...] = ()

    def error(self, message):
        raise LmforgeError(f"command line: {message}")

    def parse_args_into_dataclasses(self, *args, **kwargs):
        self.set_defaults(**{name: [] for name in self.emptied})
        return super().parse_args_into_dataclasses(*args, **kwargs)


def json_lists(parser: StageParser, argv: list[str]) -> list[str]:
    """`argv` with each list option given as JSON (`--tools '["python"]'`, `--text_files '[]'`) as argparse takes a
    list (`--tools python`); the emptied ones are left out and named in `parser.emptied`. A value that is not a JSON
    list stays as it is: a glob such as `[ab]*.txt` is not JSON."""
    lists = {
        option: action.dest for action in parser._actions if action.nargs == "+" for option in action.option_strings
    }
    result, emptied, words = [], [], iter(argv)
    for word in words:
        option, equals, value = word.partition("=")
        if option not in lists or (not equals and (value := next(words, None)) is None):
            result.append(word)  # not a list option, or one without its value, which argparse reports
            continue
        items = json_list(value)
        if items is None:
            result += [option, value]
        elif any(isinstance(item, (dict, list)) for item in items):
            raise LmforgeError(f"command line: {option}: {value!r} must be a list of plain values")
        elif items:
            result += [option, *(item if isinstance(item, str) else json.dumps(item) for item in items)]
        else:
            emptied.append(lists[option])
    parser.emptied = tuple(emptied)
    return result


def json_list(value: str) -> list | None:
    try:
        items = json.loads(value) if value.lstrip().startswith("[") else None
    except json.JSONDecodeError:
        return None
    return items if isinstance(items, list) else None


def parse(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse `--config FILE` plus overrides in `argv` into one instance of each dataclass type."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.excepthook = print_bad_input  # this process is a stage: its bad input ends in one line
    atexit.unregister(end_process_group)  # once, however often a process parses
    atexit.register(end_process_group)
    parser = StageParser(dataclass_types)
    argv = json_lists(parser, argv)
    source = "command line"
    if "--config" in argv:
        if argv.index("--config") + 1 == len(argv):
            raise LmforgeError("command line: --config needs a recipe file")
        path = Path(argv[argv.index("--config") + 1])
        check_recipe(parser, dataclass_types, path)
        source = f"recipe {path} or the command line"
    configs, unknown = parse_checked(parser, argv, source)
    # The precision is decided once the recipe is read; a change is parsed as a command-line override, so that what
    # TrainingArguments and TRL's configs derive from bf16 and fp16 (mixed_precision, DeepSpeed's plugin) follows.
    overrides = [option for c in training_arguments(configs) for option in precision_options(c)]
    if overrides:
        configs, unknown = parse_checked(parser, argv + overrides, source)
    if unknown:
        options = [option for action in parser._actions for option in action.option_strings]
        close = difflib.get_close_matches(unknown[0], options, n=1)
        raise LmforgeError(
            f"command line: unknown option {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    for config in configs:
        check_reporters(getattr(config, "report_to", None))
        check_output_dir(getattr(config, "output_dir", None))
        check_counts(config)
        if isinstance(getattr(config, "model_name_or_path", None), str):
            check_model_folder(config.model_name_or_path)
        # Every trainable parameter of a stage's model takes part in each step: DDP's search for unused ones
        # (transformers' default without activation checkpointing) walks the autograd graph every step for nothing.
        if getattr(config, "ddp_find_unused_parameters", False) is None:
            config.ddp_find_unused_parameters = False
    return tuple(configs)


# Counts a training stage needs at least one of: 0 stops deep in torch's DataLoader, in the step arithmetic or, for
# the LoRA rank, in PEFT once the trainer wraps the model.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "lora_r")


def check_counts(config: typing.Any) -> None:
    for name in POSITIVE:
        value = getattr(config, name, None)
        if isinstance(value, int) and value < 1:
            raise LmforgeError(f"{name}: {value} is not a positive count")


def check_output_dir(output_dir: str | None, what: str = "output_dir") -> None:
    """A stage's outputs go in a folder: an existing file there would stop it deep in a library (NotADirectoryError),
    and so would a file among the folders above it."""
    if not isinstance(output_dir, str):
        return
    for folder in (Path(output_dir), *Path(output_dir).parents):
        if folder.exists() and not folder.is_dir():
            raise LmforgeError(f"{what}: {folder} is a file, not a folder; give a folder for the outputs")


def training_arguments(configs: list) -> list:
    """The configs that are transformers' TrainingArguments (TRL's configs derive from it). Their class's module is
    loaded before any of them exists, so a stage that trains nothing never loads it."""
    module = sys.modules.get("transformers.training_args")
    return [config for config in configs if module and isinstance(config, module.TrainingArguments)]


def launched() -> bool:
    """Whether this process belongs to a launch's process group; a process that never imported torch has none."""
    torch = sys.modules.get("torch")
    return bool(torch and torch.distributed.is_available() and torch.distributed.is_initialized())


def end_process_group() -> None:
    """At a stage's exit, the process group of a launch (torch.distributed) is taken down before the interpreter's
    own teardown, as torch asks."""
    if launched():
        sys.modules["torch"].distributed.destroy_process_group()


def exit_launched() -> None:
    """The end of a training stage's process in a multi-process launch, its work done and written: every exit
    handler runs (atexit's, end_process_group among them), then the process ends without the interpreter's own
    teardown. In that teardown a rank now and then aborted after finishing its work ("terminate called without an
    active exception": a C++ thread destroyed while still joinable; faulthandler shows no Python frame left), which
    failed the launch and `lmforge run` with it: 1 launch in 54 of two-process DDP SFT on a loaded 2-core machine,
    also seen under ZeRO-3. Elsewhere (one process, a test calling a stage's cli) it does nothing."""
    if not launched():
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def parse_checked(parser: StageParser, argv: list[str], source: str) -> tuple[list, list[str]]:
    try:
        *configs, unknown = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as error:  # a dataclass's own check of its values, e.g. TrainingArguments'
        raise LmforgeError(f"{source}: {' '.join(str(error).split())}") from None
    return configs, unknown


def training_precision(recipe: str, launcher: str | None, bf16_gpu: bool) -> tuple[str, str]:
    """The precision a training stage computes in ("bf16", "fp16" or "fp32") and why, from the recipe's (`recipe`),
    the launcher's (`accelerate launch`'s mixed_precision, None without it) and whether this process trains on a GPU
    that computes in bf16.

    The launcher decides when it names one: DeepSpeed takes it into its engine config, and transformers stops when
    TrainingArguments disagree ("ds bf16.enabled=True vs hf bf16=False"). Otherwise a bf16 GPU trains in bf16 however
    the stage was started (fp32 weights, bf16 autocast), and on a CPU the recipe decides (fp32, or bf16 autocast)."""
    if launcher in ("bf16", "fp16"):
        return launcher, f"accelerate launch --mixed_precision {launcher}"
    if bf16_gpu:
        return "bf16", "the GPU computes in bf16"
    return (
        recipe,
        "the recipe, on CPU" if launcher is None else "the recipe; accelerate launch said no mixed precision",
    )


def precision_options(args: "TrainingArguments") -> list[str]:
    """The command-line options that apply `training_precision` to `args` (none when the recipe's stands), after a
    line on stderr saying which precision the stage trains in, and why."""
    import torch  # loaded already: `args` is TrainingArguments

    recipe = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    bf16_gpu = not args.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    precision, why = training_precision(recipe, os.environ.get("ACCELERATE_MIXED_PRECISION"), bf16_gpu)
    print(f"precision: {precision} ({why})", file=sys.stderr)
    if precision == recipe:
        return []
    return ["--bf16", str(precision == "bf16"), "--fp16", str(precision == "fp16")]


def from_json(value: typing.Any, name: str) -> typing.Any:
    """A mapping or list field's value: recipes give it as YAML (a dict or list), the command line as a JSON string
    (`--tasks '{"arithmetic": 64}'`), which is parsed here."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise LmforgeError(f"{name}: {value!r} is not JSON ({error})") from None


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one silently, so a key
    added to a recipe that already sets it further up would override it (or be overridden) unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (also on line {lines[key]})",
                    key_node.start_mark,
                )
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_recipe(path: Path) -> typing.Any:
    """A recipe file's YAML; one line naming its line and column when it is not valid YAML or gives a key twice."""
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as error:  # one line: where, and what the parser found there
        mark = error.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        found = " ".join(filter(None, [error.context, error.problem]))
        raise LmforgeError(f"recipe {path}{where} is not valid YAML: {found}") from None
    except yaml.YAMLError as error:
        raise LmforgeError(f"recipe {path} is not valid YAML: {' '.join(str(error).split())}") from None


def check_recipe(parser: TrlParser, dataclass_types: tuple, path: Path) -> None:
    """Fail with the file and key named when a recipe is missing, malformed, has an unknown key or a value
    of the wrong type."""
    if not path.is_file():
        raise LmforgeError(f"recipe {path} not found")
    recipe = read_recipe(path)
    if not isinstance(recipe, dict):
        raise LmforgeError(f"recipe {path} must be a mapping of keys to values")
    known = {action.dest for action in parser._actions} | {"env"}  # `env` sets environment variables (TRL)
    problems = []
    for key in recipe:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if len(problems) > 3:  # most likely another stage's recipe: the first few keys say enough
        raise LmforgeError(
            f"recipe {path}: {len(problems)} of its {len(recipe)} keys are unknown here ({'; '.join(problems[:3])}; "
            "...): is it the recipe of another stage?"
        )
    if problems:
        raise LmforgeError(f"recipe {path}: " + "; ".join(problems))
    types = field_types(dataclass_types)
    choices = {action.dest: action.choices for action in parser._actions if action.choices}
    for key, value in recipe.items():
        if key in types and (problem := check_value(value, types[key], choices.get(key))):
            raise LmforgeError(f"recipe {path}: {key}: {value!r} {problem}")


def field_types(dataclass_types: tuple) -> dict:
    """Key -> the type its dataclass field declares (the first dataclass that has the key wins, as in TrlParser)."""
    types = {}
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        for dataclass_field in fields(dataclass_type):
            if dataclass_field.init:
                types.setdefault(dataclass_field.name, hints[dataclass_field.name])
    return types


def check_value(value: object, expected: object, choices: Iterable | None) -> str | None:
    """What is wrong with a recipe value for a field of type `expected`, or None. Strings that argparse
    would convert ("3" for an int, "true" for a bool) pass, as they do on the command line."""
    if choices and value is not None and str(value) not in {str(choice) for choice in choices}:
        return f"is not one of {[str(choice) for choice in choices]}"
    try:
        TypeAdapter(expected).validate_python(value)
    except ValidationError:
        return f"is not {type_name(expected)}"
    except PydanticSchemaGenerationError:  # a type pydantic cannot check: the dataclass will
        pass
    return None


def type_name(expected: object) -> str:
    return expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")


def check_reporters(report_to: str | list[str] | None) -> None:
    """A `report_to` logger that is not installed fails now with what to install, not as a traceback when
    the trainer starts."""
    names = [report_to] if isinstance(report_to, str) else report_to or []
    if not names:  # a stage that trains nothing has no report_to
        return
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    available = get_available_reporting_integrations()
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK and name not in ("all", "none"):
            raise LmforgeError(f"report_to: {name!r} is not one of {['none', 'all', *INTEGRATION_TO_CALLBACK]}")
        if name in REPORTERS and name not in available:
            raise LmforgeError(f"report_to: {name} is not installed: pip install {REPORTERS[name]}")


def print_bad_input(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """sys.excepthook of a stage run as `python -m lmforge.STAGE` or `accelerate launch -m lmforge.STAGE`: bad
    input prints one line, as `lmforge STAGE` prints it; any other exception keeps its traceback."""
    if issubclass(kind, LmforgeError):
        print(f"lmforge {Path(sys.argv[0]).stem}: error: {error}", file=sys.stderr)
    elif issubclass(kind, KeyboardInterrupt):
        print(f"\nlmforge {Path(sys.argv[0]).stem}: stopped by Ctrl-C", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, traceback)
