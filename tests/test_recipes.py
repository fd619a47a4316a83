"""Every recipe parses against the pinned libraries: a recipe that drifts from the code fails here.

A recipe's stage is the one its usage comment runs it with (`lmforge label --config recipes/demo/write_page.yaml`),
else its file name up to the first underscore (`sft_lora.yaml` -> `lmforge.sft`), and the stage module's CONFIGS
are the dataclasses it is parsed into, exactly as `lmforge STAGE` does.
"""

import importlib
import re
from pathlib import Path

import pytest

from lmforge import LmforgeError
from lmforge.data import DataConfig
from lmforge.lib.configs import parse


RECIPES = sorted(Path(__file__).parent.parent.glob("recipes/**/*.yaml"))


def test_there_are_recipes():
    assert any(path.name == "data.yaml" for path in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_recipe_parses(path, tmp_path, monkeypatch):
    # The recipes' relative paths (runs/demo/...) name nothing here: a half-done run in the checkout is no failure.
    monkeypatch.chdir(tmp_path)
    usage = re.search(rf"lmforge (\w+) --config \S*/{re.escape(path.name)}\b", path.read_text())
    module = importlib.import_module(f"lmforge.{usage[1] if usage else path.stem.split('_')[0]}")
    configs = parse(module.CONFIGS, ["--config", str(path)])
    assert len(configs) == len(module.CONFIGS)
    # DDP does not search the graph for unused parameters (a stage's model uses them all) unless a recipe asks.
    assert all(getattr(config, "ddp_find_unused_parameters", False) is False for config in configs)


def test_command_line_overrides_recipe(tmp_path):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("warc_paths: [a.warc.gz]\ntasks: 4\n")
    (config,) = parse((DataConfig,), ["--config", str(recipe), "--tasks", "1", "--output_dir", "elsewhere"])
    assert (config.tasks, config.output_dir, config.warc_paths) == (1, "elsewhere", ["a.warc.gz"])


def test_a_list_option_takes_json_and_can_be_emptied(tmp_path):
    """A list the recipe sets can be replaced or emptied on the command line, as a JSON list; argparse's own form
    (`--languages en fr`) still works, and a glob that starts with a bracket stays a glob."""
    recipe = tmp_path / "data.yaml"
    recipe.write_text("warc_paths: [a.warc.gz, b.warc.gz]\nlanguages: [en, fr]\n")

    def parsed(*argv):
        (config,) = parse((DataConfig,), ["--config", str(recipe), *argv])
        return config.warc_paths, config.languages

    assert parsed("--languages", "[]") == (["a.warc.gz", "b.warc.gz"], [])
    assert parsed("--languages=[]", "--warc_paths", '["c.warc.gz"]') == (["c.warc.gz"], [])
    assert parsed("--languages", "de", "it") == (["a.warc.gz", "b.warc.gz"], ["de", "it"])
    assert parsed("--warc_paths", "[ab].warc.gz") == (["[ab].warc.gz"], ["en", "fr"])
    eval_recipe = str(Path(__file__).parent.parent / "recipes/demo/eval.yaml")  # a list of ints, converted
    (config,) = parse(
        (importlib.import_module("lmforge.eval").EvalConfig,), ["--config", eval_recipe, "--sums_levels", "[1, 4]"]
    )
    assert config.sums_levels == [1, 4]
    with pytest.raises(LmforgeError, match=r"command line: --languages: .* must be a list of plain values"):
        parsed("--languages", '[["en"]]')


def test_unknown_key_names_file_and_key(tmp_path):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("warc_paths: [a.warc.gz]\nlanguage_treshold: 0.5\n")
    expected = r"data.yaml: unknown key 'language_treshold' \(did you mean 'language_threshold'\?\)"
    with pytest.raises(LmforgeError, match=expected):
        parse((DataConfig,), ["--config", str(recipe)])


def test_a_key_given_twice_or_broken_yaml_is_one_line_with_its_line(tmp_path):
    """PyYAML keeps the last of two equal keys silently: a key added to a recipe that already sets it would win, or
    lose, unseen."""
    recipe = tmp_path / "data.yaml"
    recipe.write_text("warc_paths: [a.warc.gz]\ntasks: 4\nworkers: 1\ntasks: 2\n")
    with pytest.raises(LmforgeError) as error:
        parse((DataConfig,), ["--config", str(recipe)])
    assert (
        str(error.value)
        == f"recipe {recipe} line 4, column 1 is not valid YAML: key 'tasks' is given twice (also on line 2)"
    )
    recipe.write_text("step_options:\n  pii: {email_replacement: x, email_replacement: y}\n")
    with pytest.raises(LmforgeError, match=r"line 2, .*key 'email_replacement' is given twice \(also on line 2\)"):
        parse((DataConfig,), ["--config", str(recipe)])
    recipe.write_text("warc_paths: [a.warc.gz\ntasks: 4\n")
    with pytest.raises(
        LmforgeError, match=r"data.yaml line 2, column 6 is not valid YAML: .*expected ',' or ']'"
    ) as error:
        parse((DataConfig,), ["--config", str(recipe)])
    assert "\n" not in str(error.value)


def test_missing_and_malformed_recipes(tmp_path):
    with pytest.raises(LmforgeError, match="recipe .*nope.yaml not found"):
        parse((DataConfig,), ["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(LmforgeError, match="bad.yaml must be a mapping"):
        parse((DataConfig,), ["--config", str(bad)])


def test_unknown_step_option_is_named(tmp_path):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("warc_paths: [a.warc.gz]\nstep_options:\n  gopher_quality: {min_doc_wrds: 3}\n")
    expected = "step_options.gopher_quality: GopherQualityFilter has no option 'min_doc_wrds'"
    with pytest.raises(LmforgeError, match=expected):
        parse((DataConfig,), ["--config", str(recipe)])


ACCELERATE_CONFIGS = sorted(Path(__file__).parent.parent.glob("accelerate_configs/*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
