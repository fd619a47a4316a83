"""Every bad input ends in one line naming the file, row or key: through `lmforge STAGE` (in-process, as the
console script runs it), `python -m lmforge.STAGE` and `accelerate launch -m lmforge.STAGE`, never with a
library traceback or output that looks finished."""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers.integrations import is_tensorboard_available

from browser import free_port
from lmforge import LmforgeError
from lmforge.cli import main as lmforge
from lmforge.lib.loading import is_local
from lmforge.lib.rewards import load_scorer
from lmforge.tokenizer import train_tokenizer
from test_data import HANDBOOK, demo_pages, write_warc
from tiny import save_tiny_model


TEXTS = [f"the cat sat on mat number {i} and the dog sat on log number {i}." * 4 for i in range(120)]
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def one_line(stage: str, *argv: str) -> str:
    """`lmforge STAGE argv`: the one line it exits with."""
    with pytest.raises(SystemExit) as exit:
        lmforge([stage, *map(str, argv)])
    message = str(exit.value.code)
    assert message.startswith(f"lmforge {stage}: error: ") and "\n" not in message, message
    return message


def stderr_of(*command: str) -> str:
    """Run a command that must fail; its stderr, checked to hold no Python traceback."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "LmforgeError" not in result.stderr, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Documents (parquet) and the tokenizer the tokenizer stage would train on them."""
    root = tmp_path_factory.mktemp("corpus")
    rows = [{"text": text, "id": f"doc{i}", "metadata": {"language": "en"}} for i, text in enumerate(TEXTS)]
    pq.write_table(pa.Table.from_pylist(rows), root / "docs.parquet")
    train_tokenizer(TEXTS, vocab_size=300).save_pretrained(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), TEXTS, vocab_size=300)


# --- tokenizers and models ---


def test_pack_refuses_a_tokenizer_without_its_special_tokens(corpus, tmp_path):
    # Without tokenizer_config.json the folder still loads, with no <|bos|>/<|endoftext|>: every block held None.
    broken = tmp_path / "tokenizer"
    broken.mkdir()
    (broken / "tokenizer.json").write_bytes((corpus / "tokenizer" / "tokenizer.json").read_bytes())
    message = one_line(
        "pack",
        "--tokenizer",
        broken,
        "--documents",
        corpus / "docs.parquet",
        "--output_dir",
        tmp_path / "pack",
        "--seq_len",
        32,
    )
    assert f"tokenizer {broken} defines no bos_token or eos_token" in message
    assert "tokenizer_config.json" in message and not (tmp_path / "pack").exists()


def test_missing_tokenizer_folder_is_named(tmp_path):
    message = one_line("pretrain", "--tokenizer", tmp_path / "missing", "--output_dir", tmp_path / "run")
    assert f"tokenizer {tmp_path / 'missing'} does not exist" in message


def test_corrupt_weights_are_named(chat_model, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for path in chat_model.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a copy cut short
    message = one_line("generate", "--model", broken, "--prompt", "the cat")
    assert f"model folder {broken} could not be loaded: {broken / 'model.safetensors'} is unreadable" in message


@pytest.mark.parametrize("keep", ["config.json", "model.safetensors"])
def test_a_model_folder_without_weights_or_tokenizer_is_named(chat_model, tmp_path, keep):
    """A folder with a config alone (or weights without their tokenizer): transformers asked for sentencepiece."""
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in {"config.json", keep}:
        (partial / name).write_bytes((chat_model / name).read_bytes())
    message = one_line("sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", partial)
    missing = "no model weights" if keep == "config.json" else "no tokenizer (none of tokenizer.json"
    assert f"model_name_or_path: {partial} holds {missing}" in message


@pytest.mark.parametrize(
    "stage, option, what",
    [
        ("sft", "model_name_or_path", "model_name_or_path"),
        ("reward", "model_name_or_path", "model_name_or_path"),
        ("dpo", "model_name_or_path", "model"),
        ("grpo", "model_name_or_path", "model"),
        ("ppo", "sft_model_path", "model"),
        ("interrogate", "model_name_or_path", "model"),
    ],
)
def test_a_model_not_trained_yet_or_a_file_is_named(tmp_path, stage, option, what):
    """A newcomer's first `lmforge sft --config recipes/demo/sft.yaml` before pretraining, or a file given as the model:
    transformers' "Repo id must use alphanumeric chars" or "not a valid JSON file" tracebacks."""
    argv = ["--config", f"recipes/demo/{stage}.yaml", "--output_dir", tmp_path / "out"]
    message = one_line(stage, *argv, f"--{option}", tmp_path / "missing")
    assert f"{what} {tmp_path / 'missing'} does not exist (and is not a Hub repo id)" in message
    (tmp_path / "afile").write_text("")
    message = one_line(stage, *argv, f"--{option}", tmp_path / "afile")
    assert str(tmp_path / "afile") in message and ("is a file, not a model folder" in message or stage == "ppo")


def test_rollouts_from_a_model_not_trained_yet_is_named(tmp_path):
    message = one_line("rollouts", "--config", "recipes/demo/rollouts.yaml", "--model", tmp_path / "sft")
    assert f"model {tmp_path / 'sft'} does not exist (and is not a Hub repo id)" in message


@pytest.mark.parametrize(
    "option, value", [("per_device_train_batch_size", 0), ("gradient_accumulation_steps", -1), ("lora_r", 0)]
)
def test_a_count_below_one_is_named(tmp_path, option, value):
    """torch's "batch_size should be a positive integer value" or PEFT's "`r` should be a positive integer" after the
    model had loaded."""
    argv = ["--config", "recipes/demo/sft_lora.yaml", "--output_dir", tmp_path / "out", f"--{option}", value]
    assert f"{option}: {value} is not a positive count" in one_line("sft", *argv)


def test_a_run_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    handlers = [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)]
    message = one_line("run", "recipes/demo", "--run_dir", tmp_path / "afile")
    assert f"run_dir: {tmp_path / 'afile'} is a file, not a folder" in message
    # the runner's handlers were this process's only while it ran: forked later, a process ended as a stopped runner
    assert [signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)] == handlers


def test_a_base_model_without_a_template_is_named_where_it_would_chat(chat_model, tmp_path):
    """transformers' ValueError ("Cannot use chat template functions ...") once the user typed a line; the few-shot
    way of chatting with a base model is the one that works."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "base")
    AutoModelForCausalLM.from_pretrained(chat_model).save_pretrained(tmp_path / "base")
    for stage in ("chat", "serve"):
        message = one_line(stage, "--model_name_or_path", tmp_path / "base")
        assert f"model {tmp_path / 'base'}: its tokenizer has no chat template (a base model)" in message
        assert "`--few_shot true`" in message
    argv = ["--config", "recipes/demo/interrogate.yaml", "--model_name_or_path", tmp_path / "base"]
    message = one_line("interrogate", *argv, "--output_dir", tmp_path / "interrogate")
    assert message.endswith(f"model {tmp_path / 'base'}: its tokenizer has no chat template to ask questions with")
    models = json.dumps({"m": {"path": str(tmp_path / "base"), "kind": "assistant"}})
    argv = ["--config", "recipes/demo/eval.yaml", "--models", models, "--benchmarks", "{}", "--documents", "[]"]
    message = one_line("eval", *argv, "--output_dir", tmp_path / "eval")
    expected = "is measured as an assistant but its tokenizer has no chat template; a base model is measured as"
    assert message.endswith(f"models: {tmp_path / 'base'} {expected} `kind: base`")


def test_the_runner_names_the_line_of_a_broken_recipe(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.yaml").write_text("warc_paths: [a.warc.gz]\ntasks: 1\ntasks: 2\n")
    message = one_line("run", tmp_path / "mine", "--run_dir", tmp_path / "run")
    assert message.endswith(
        "data.yaml line 3, column 1 is not valid YAML: key 'tasks' is given twice (also on line 2)"
    )


def test_generate_from_a_folder_with_a_config_alone_is_named(chat_model, tmp_path):
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial/config.json").write_bytes((chat_model / "config.json").read_bytes())
    message = one_line("generate", "--model", tmp_path / "partial", "--prompt", "hi")
    assert f"model: {tmp_path / 'partial'} holds no" in message  # not "Couldn't instantiate the backend tokenizer"


def test_another_stages_recipe_is_named_as_such_in_one_short_line():
    message = one_line("sft", "--config", "recipes/demo/dpo.yaml")
    assert re.search(r"recipe recipes/demo/dpo.yaml: \d+ of its \d+ keys are unknown here \(unknown key '", message)
    assert message.endswith("...): is it the recipe of another stage?")
    assert len(message) < 300


@pytest.mark.parametrize("stage", ["data", "tokenizer"])
def test_an_output_dir_that_is_a_file_is_named(tmp_path, stage):
    (tmp_path / "afile").write_text("")
    for output_dir in (tmp_path / "afile", tmp_path / "afile/inside"):
        message = one_line(stage, "--config", f"recipes/demo/{stage}.yaml", "--output_dir", output_dir)
        assert f"output_dir: {tmp_path / 'afile'} is a file, not a folder" in message


def test_lora_targets_the_model_lacks_are_named_with_the_ones_it_has(corpus, tmp_path):
    """recipes/demo/sft_lora.yaml's Llama names on GPT-2 (c_attn, c_proj, c_fc): PEFT's NoMatchingPeftModuleError."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(corpus / "tokenizer")
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=256)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    argv = ["--config", "recipes/demo/sft_lora.yaml", "--model_name_or_path", tmp_path / "gpt2"]
    argv += ["--chat_template_path", "chatml", "--output_dir", tmp_path / "out", "--max_steps", "1"]
    message = one_line("sft", *argv, "--lora_target_modules", "q_proj", "v_proj")
    assert "lora_target_modules: gpt2 has no q_proj, v_proj; its linear modules are c_attn, c_fc, c_proj" in message


def test_a_model_without_a_scoring_head_is_refused_as_the_reward_model(chat_model, tmp_path):
    """A causal LM named as the reward model: transformers gives it a new, random score head, and PPO trained against
    its noise to the end, exit 0."""
    argv = ["--config", "recipes/demo/ppo.yaml", "--sft_model_path", chat_model, "--reward_model_path", chat_model]
    message = one_line("ppo", *argv, "--output_dir", tmp_path / "ppo")
    expected = (
        f"reward_model_path {chat_model} is not a reward model: its checkpoint (LlamaForCausalLM) lacks score.weight"
    )
    assert expected in message and not (tmp_path / "ppo" / "eval_before.json").exists()  # before any generation
    # Wherever else a reward model scores: GRPO's reward_model reward, eval, the RL stages' held-out tables.
    with pytest.raises(LmforgeError, match=f"reward model {chat_model} is not a reward model"):
        load_scorer(str(chat_model))


def test_a_reward_model_is_refused_where_a_model_generates(chat_model, tmp_path):
    """The other way round: chat, generate, serve, label and eval gave a reward model's folder a random LM head and
    printed what it generated."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoModelForSequenceClassification.from_pretrained(chat_model, num_labels=1).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(chat_model).save_pretrained(tmp_path / "rm")
    message = one_line("generate", "--model", tmp_path / "rm", "--prompt", "Hi")
    expected = "is not a causal language model: its checkpoint (LlamaForSequenceClassification) lacks lm_head.weight"
    assert f"model {tmp_path / 'rm'} {expected}" in message


def test_a_chat_template_path_that_names_nothing_is_named(chat_model, tmp_path):
    """A typo in a template name read as a Hub id: transformers' chained tracebacks of an unreachable Hub."""
    argv = ["--config", "recipes/demo/sft.yaml", "--model_name_or_path", chat_model, "--output_dir", tmp_path / "sft"]
    message = one_line("sft", *argv, "--chat_template_path", "chatlm")
    assert (
        "chat_template_path: 'chatlm' is neither a template name (chatml, mistral, llama3, gemma, qwen2_5)" in message
    )
    assert "as a chat model's tokenizer to clone: tokenizer Hub repo chatlm could not be loaded" in message
    (tmp_path / "empty").mkdir()
    message = one_line("sft", *argv, "--chat_template_path", tmp_path / "empty")
    assert f"tokenizer: {tmp_path / 'empty'} holds no tokenizer" in message


def test_hub_id_starting_with_runs_is_not_a_local_path():
    assert not is_local("runsomeone/prefs") and not is_local("someone/model")
    assert is_local("runs/demo/sft") and is_local("./model") and is_local("/abs/model")
    # Offline, the Hub id is looked up on the Hub and said to be one: not "does not exist (train it first)".
    message = one_line("generate", "--model", "runsomeone/model", "--prompt", "hi")
    assert "model Hub repo runsomeone/model could not be loaded" in message
    # ... and a user who meant a folder (`out/sft`, written elsewhere or not yet) is told there is none here.
    assert message.endswith(f"(nor is there a folder runsomeone/model here, in {Path.cwd()})")


# --- resuming ---


@pytest.mark.slow
def test_resume_passes_over_a_checkpoint_with_a_corrupt_optimizer(corpus, tmp_path, capsys):
    lmforge(
        [
            "pack",
            "--tokenizer",
            str(corpus / "tokenizer"),
            "--documents",
            str(corpus / "docs.parquet"),
            "--output_dir",
            str(tmp_path / "pack"),
            "--seq_len",
            "32",
            "--heldout_fraction",
            "0.1",
        ]
    )
    output_dir = tmp_path / "run"
    argv = [
        "pretrain",
        "--dataset",
        str(tmp_path / "pack"),
        "--tokenizer",
        str(corpus / "tokenizer"),
        "--depth",
        "1",
        "--context_length",
        "32",
        "--output_dir",
        str(output_dir),
        "--save_steps",
        "5",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--eval_strategy",
        "no",
        "--memorization_probes",
        "0",
        "--disable_tqdm",
        "true",
    ]
    lmforge([*argv, "--max_steps", "10"])
    optimizer = output_dir / "checkpoint-10" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])  # unreadable, while trainer_state.json is whole

    lmforge([*argv, "--max_steps", "12"])
    out = capsys.readouterr().out
    assert f"warning: {optimizer} is unreadable" in out and f"resuming from {output_dir / 'checkpoint-5'}" in out
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == list(range(1, 13))  # 1-5 saved, 6-12 rerun
    assert (output_dir / "unusable-checkpoint-10" / "optimizer.pt").is_file()  # kept for a look, out of the way


# --- data ---


def test_empty_and_non_gzip_warc_files_are_counted_and_skipped(tmp_path, capfd):
    page = demo_pages()[HANDBOOK.format("en-US", "apt.html")]
    write_warc(tmp_path / "good.warc.gz", {"https://a.example/apt": page})
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "plain.warc.gz").write_text("not gzip, not a WARC\n")
    out = tmp_path / "out"
    lmforge(
        [
            "data",
            "--warc_paths",
            str(tmp_path / "*.warc.gz"),
            "--output_dir",
            str(out),
            "--tasks",
            "3",
            "--workers",
            "1",
            "--url_filter",
            "false",
            "--gopher_quality",
            "false",
            "--c4_quality",
            "false",
            "--fineweb_quality",
            "false",
            "--gopher_repetition",
            "false",
            "--language_filter",
            "false",
        ]
    )
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["bad_files"] == 2 and funnel["documents_out"] == 1
    err = capfd.readouterr().err
    assert "empty.warc.gz: empty, no WARC record" in err and "plain.warc.gz: truncated or corrupt" in err


def test_nothing_readable_is_one_line(tmp_path):
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "notes.warc.gz").write_bytes(gzip.compress(b"a JSON line, not a WARC record\n"))
    message = one_line(
        "data", "--warc_paths", tmp_path / "*.warc.gz", "--output_dir", tmp_path / "out", "--tasks", 2, "--workers", 1
    )
    assert "no readable page in" in message and "0 records; 2 unreadable files" in message


def test_no_page_passing_the_filters_is_one_line(tmp_path, capsys):
    page = demo_pages()[HANDBOOK.format("en-US", "apt.html")]
    write_warc(tmp_path / "english.warc.gz", {"https://a.example/apt": page})
    message = one_line(
        "data",
        "--warc_paths",
        tmp_path / "english.warc.gz",
        "--output_dir",
        tmp_path / "out",
        "--tasks",
        1,
        "--workers",
        1,
        "--languages",
        "fr",
    )  # an English page
    assert "no document passed the filters" in message
    assert "language_filter" in capsys.readouterr().out  # the funnel so far says where it went


# --- SFT sources ---


@pytest.mark.parametrize(
    "content, expected",
    [
        (json.dumps({"messages": CHAT}) + "\n" + '{"messages": [oops\n', "chats.jsonl line 2: not valid JSON"),
        (
            json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": CHAT}).replace("hello", "h\udcffllo"),
            "chats.jsonl line 2: not UTF-8",
        ),
        (None, "data_files '{path}' matches no file"),
    ],
    ids=["invalid-json", "not-utf8", "missing"],
)
def test_sft_source_files_name_file_and_line(chat_model, tmp_path, content, expected):
    path = tmp_path / "chats.jsonl"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    datasets = {"chats": {"path": "json", "data_files": str(path)}}
    message = one_line(
        "sft",
        "--model_name_or_path",
        chat_model,
        "--datasets",
        json.dumps(datasets),
        "--output_dir",
        tmp_path / "sft",
        "--report_to",
        "none",
        "--use_cpu",
        "true",
        "--max_length",
        256,
    )
    assert "datasets.chats: " in message and expected.format(path=path) in message


# --- recipes and the command line ---


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--tasks", "two", "--warc_paths", "x"], "argument --tasks: invalid int value: 'two'"),
        (["--warc_paths", "x", "--taks", "1"], "unknown option '--taks' (did you mean '--tasks'?)"),
        (["--warc_paths", "x", "--step_options", "{pii: 1}"], "step_options: '{pii: 1}' is not JSON"),
    ],
)
def test_command_line_value_or_key_is_named(argv, expected):
    assert expected in one_line("data", *argv)


@pytest.mark.parametrize(
    "stage, argv, expected",
    [
        ("generate", ["--top_p", "1.5"], "top_p"),
        ("rollouts", ["--prompts", '{"a": {"generator": "arithmetic"}}', "--temperature", "0"], "temperature"),
        ("chat", ["--repetition_penalty", "0"], "penalty"),
        ("interrogate", ["--max_new_tokens", "0"], "max_new_tokens"),
    ],
)
def test_bad_sampling_settings_are_named(stage, argv, expected):
    """transformers' own checks (lib.sampling), before any model is loaded."""
    assert expected in one_line(stage, *argv)


def test_wrongly_typed_recipe_values_are_named(tmp_path):
    recipe = tmp_path / "pretrain.yaml"
    for line, expected in [
        ("max_steps: abc", "max_steps: 'abc' is not int"),
        ("max_steps: 1.5", "max_steps: 1.5 is not int"),
        ("bf16: maybe", "bf16: 'maybe' is not bool"),
        ("lr_scheduler_type: cosinus", "lr_scheduler_type: 'cosinus' is not one of"),
    ]:
        recipe.write_text(f"{line}\n")
        assert f"recipe {recipe}: {expected}" in one_line("pretrain", "--config", recipe)
    assert "argument --max_steps/--max-steps: invalid int value: 'abc'" in one_line("pretrain", "--max_steps", "abc")


@pytest.mark.skipif(is_tensorboard_available(), reason="tensorboard is installed")
def test_missing_logger_says_which_extra_to_install():
    message = one_line("pretrain", "--report_to", "tensorboard")
    assert "report_to: tensorboard is not installed: pip install 'lmforge[tensorboard]'" in message


# --- the same line from `python -m` and `accelerate launch` ---


def test_python_m_prints_one_line():
    err = stderr_of(sys.executable, "-m", "lmforge.data", "--tasks", "two")
    expected = "lmforge data: error: command line: argument --tasks: invalid int value: 'two'"
    assert err.strip().splitlines()[-1] == expected


@pytest.mark.slow
def test_accelerate_launch_prints_one_line(tmp_path):
    err = stderr_of(
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--quiet",
        "-m",
        "lmforge.pack",
        "--tokenizer",
        str(tmp_path / "missing"),
        "--output_dir",
        str(tmp_path / "pack"),
    )
    assert (
        err.strip().splitlines()[-1] == f"lmforge pack: error: tokenizer {tmp_path / 'missing'} does not exist "
        "(and is not a Hub repo id)"
    )


LAUNCHES = {
    "2 processes (torchrun)": ["--config_file", "accelerate_configs/cpu_ddp.yaml"],
    "1 process": ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    + ["--num_cpu_threads_per_process", "2"],  # else accelerate notes the default it used, in three lines
}


@pytest.mark.slow
@pytest.mark.parametrize("launch", LAUNCHES, ids=list(LAUNCHES))
def test_lmforge_launch_tells_a_failed_launch_in_one_line_per_process(tmp_path, launch):
    """`lmforge launch` is `accelerate launch` without torchrun's failure report (or, for one process without --quiet,
    accelerate's CalledProcessError traceback): each process's own line, then the launcher's one line."""
    missing = tmp_path / "missing"
    err = stderr_of(
        sys.executable,
        "-m",
        "lmforge.cli",
        "launch",
        *LAUNCHES[launch],
        "--main_process_port",
        str(free_port()),
        "--dynamo_backend",
        "no",
        "-m",
        "lmforge.pack",
        "--tokenizer",
        str(missing),
        "--output_dir",
        str(tmp_path / "pack"),
    )
    stage_line = f"lmforge pack: error: tokenizer {missing} does not exist (and is not a Hub repo id)"
    *stage_lines, launcher_line = err.strip().splitlines()
    processes = 2 if "2" in launch else 1
    assert 1 <= len(stage_lines) <= processes and set(stage_lines) == {stage_line}, err
    if processes == 2:  # the first to fail, and the other stopped by the launcher unless it failed on its own first
        assert re.fullmatch(
            r"lmforge launch: (rank [01] failed \(exit 1\); the launcher stopped the other processes|"
            r"rank 0 failed \(exit 1\), rank 1 failed \(exit 1\))",
            launcher_line,
        ), err
    else:
        assert launcher_line == "lmforge launch: the process failed (exit 1)"


def as_from_a_terminal() -> None:
    """A child's Ctrl-C as a terminal's shell leaves it: delivered and not ignored. A child inherits an ignored or
    blocked SIGINT; once in a full run of the suite the chat below never saw it (it read the closed stdin and ended 0)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_a_stage_in_one_line(tmp_path):
    model = save_tiny_model(tmp_path / "model", TEXTS, vocab_size=300)
    command = [sys.executable, "-m", "lmforge.cli", "chat", "--model_name_or_path", str(model)]
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chat = subprocess.Popen(command, **pipes, preexec_fn=as_from_a_terminal)
    assert chat.stdout.readline().startswith("Chatting with") and chat.stdout.read(2) == "> "  # waits for the user
    chat.send_signal(signal.SIGINT)
    _, err = chat.communicate(timeout=60)
    assert chat.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "lmforge chat: stopped by Ctrl-C"


# --- library notices a user cannot act on (lmforge.lib.notices) ---

NOTICES = {
    "Setting accelerator to CPU": "from deepspeed.accelerator import get_accelerator; get_accelerator()",
    "mtime may not be reliable": (
        "import os, sys; from transformers.trainer_utils import sort_checkpoints; "
        "[os.makedirs(os.path.join(sys.argv[1], f'checkpoint-{step}')) for step in (1, 2)]; "
        "sort_checkpoints(sys.argv[1], use_mtime=True)"
    ),
}


@pytest.mark.parametrize("notice", NOTICES)
def test_a_library_notice_a_user_cannot_act_on_is_dropped_where_it_is_logged(notice, tmp_path):
    for imported, folder in (("", tmp_path / "plain"), ("import lmforge; ", tmp_path / "lmforge")):
        run = subprocess.run(
            [sys.executable, "-c", imported + NOTICES[notice], str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert (notice in run.stdout + run.stderr) == (not imported), run.stdout + run.stderr  # the library says it
