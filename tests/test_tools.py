"""Tools: the python sandbox's limits hold, search finds passages, the chat template keeps tool results out of
the loss, tool-use conversations are right, and the generation loop runs calls (real tiny model, scripted one)."""

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_from_disk
from huggingface_hub.constants import HF_HOME
from transformers import AutoTokenizer, LlamaForCausalLM
from trl import GRPOConfig

from browser import free_port
from lmforge import LmforgeError, chat, generate, grpo, rollouts
from lmforge.lib.conversations import GENERATORS, check_conversation
from lmforge.lib.stages import RUN_DIR
from lmforge.lib.tools import ToolError, format_call, format_result, load_tools, parse_call, run_call
from lmforge.lib.tools.generation import (
    compare_tools,
    end_of_turn_ids,
    engine_generate,
    generate_with_tools,
    heldout_problems,
    tool_accuracy,
)
from lmforge.lib.tools.python import PythonTool
from lmforge.lib.tools.search import SearchTool
from lmforge.tokenizer import train_tokenizer
from tiny import memorize, tiny_llama_config


PYTHON = PythonTool(timeout=2, memory_mb=256)
DOCUMENTS = [
    {
        "text": "APT pinning sets the priority of a package source. The file /etc/apt/preferences holds the rules.",
        "id": "a",
        "metadata": {"url": "https://example.org/apt", "language": "en"},
    },
    {
        "text": "Python uses indentation for grouping statements. Guido van Rossum chose it for clarity.",
        "id": "b",
        "metadata": {"url": "https://example.org/python", "language": "en"},
    },
]


def run(code: str) -> str:
    return PYTHON.run({"code": code})


# The sandbox.


def test_python_runs_code_and_reports_errors_briefly():
    assert run("import math, json\nprint(json.dumps([math.factorial(5)]))") == "[120]"
    assert run("1 / 0") == "error: ZeroDivisionError: division by zero"
    assert run("print(").startswith("error: SyntaxError")
    assert run("x = 1") == "(no output)"
    assert run("open('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())") == "hi"  # its scratch dir


@pytest.mark.parametrize(
    "code, error",
    [
        ("while True:\n    pass", "error: timed out after 2 s"),
        ("import time\ntime.sleep(60)", "error: timed out after 2 s"),
        ("x = bytearray(4 * 1024**3)", "error: MemoryError"),
        ("import socket\nsocket.socket().connect(('127.0.0.1', 22))", "socket.__new__ is not allowed"),
        ("import urllib.request\nurllib.request.urlopen('http://example.org')", "sandbox: socket."),
        ("print(open('/etc/passwd').read())", "/etc/passwd is outside the scratch directory"),
        ("import os\nos.symlink('/etc/passwd', 'p')\nprint(open('p').read())", "/etc/passwd is outside"),
        ("open('/tmp/lmforge-sandbox-escape', 'w')", "is outside the scratch directory"),
        ("import subprocess\nsubprocess.run(['cat', '/etc/passwd'])", "subprocess.Popen is not allowed"),
        ("import os\nos.system('cat /etc/passwd')", "os.system is not allowed"),
        ("import ctypes", "module ctypes is not allowed"),
        ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "resource.setrlimit is not allowed"),
    ],
)
def test_python_limits_hold(code, error):
    assert error in run(code)


def test_python_cannot_read_a_file_outside_scratch(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    result = run(f"print(open({str(secret)!r}).read())")
    assert "do not read" not in result and "outside the scratch directory" in result


# Search.


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("collection")
    pq.write_table(pa.Table.from_pylist(DOCUMENTS), folder / "docs.parquet")
    (folder / "book.txt").write_text("Once upon a time a fox lived in the forest.\n\nThe fox liked grapes.\n" * 5)
    return folder


def test_search_ranks_passages_and_caches_its_index(collection):
    tool = SearchTool(
        documents=[str(collection / "*.parquet")],
        text_files=[str(collection / "*.txt")],
        index_dir=str(collection / "index"),
    )
    assert tool.run({"query": "package priority pinning"}).startswith("[1] https://example.org/apt: APT pinning")
    assert tool.run({"query": "Who chose indentation?"}).startswith("[1] https://example.org/python")
    assert "book.txt" in tool.run({"query": "fox"}) and tool.run({"query": "zebra"}) == "no match"
    assert tool.run({"query": 'AND "OR NEAR('}) == "no match"  # FTS5 syntax in a query is just words
    again = SearchTool(documents=[str(collection / "*.parquet")], text_files=[], index_dir=str(collection / "index"))
    assert again.index != tool.index and len(list((collection / "index").glob("*.sqlite"))) == 2
    built = (collection / "index").stat().st_mtime_ns
    SearchTool(documents=[str(collection / "*.parquet")], text_files=[], index_dir=str(collection / "index"))
    assert (collection / "index").stat().st_mtime_ns == built  # reused, not rebuilt
    with pytest.raises(LmforgeError, match="no file matches"):
        SearchTool(documents=[str(collection / "missing*.parquet")], index_dir=str(collection / "index"))


def test_search_index_goes_in_the_run_folder_or_the_cache_never_the_working_directory(
    collection, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    documents = [str(collection / "*.parquet")]
    monkeypatch.setenv(RUN_DIR, str(tmp_path / "run"))  # as `lmforge run` starts a stage
    assert Path(SearchTool(documents=documents, text_files=[]).index).parent == tmp_path / "run" / "search"
    monkeypatch.delenv(RUN_DIR)  # a stage run by hand
    assert Path(SearchTool(documents=documents, text_files=[]).index).parent == Path(HF_HOME, "lmforge", "search")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_search_caps_the_query_length_and_time(collection):
    tool = SearchTool(documents=[str(collection / "*.parquet")], text_files=[], index_dir=str(collection / "index"))
    start = time.monotonic()
    for query in [" ".join(["pinning"] * 50_000), "pinning " * 33, "x" * 1001]:
        assert run_call({"search": tool}, format_call("search", {"query": query})).startswith(
            "error: the query is too long: at most 32 words"
        )
    assert time.monotonic() - start < 2
    assert tool.run({"query": " ".join(["pinning"] * 32)}).startswith("[1] https://example.org/apt")


def test_a_slow_search_is_interrupted(tmp_path):
    """The shipped books (a few MB), a long query and a tiny time limit: SQLite stops it, the tool says so."""
    tool = SearchTool(
        documents=[], index_dir=str(tmp_path), max_query_words=10**6, max_query_chars=10**7, query_seconds=0.01
    )
    words = [f"word{n}" for n in range(3000)] + ["the", "and", "king"] * 100
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"the query took over 0.01 s; use fewer words"):
        tool.run({"query": " ".join(words)})
    assert time.monotonic() - start < 2


# The protocol.


def test_malformed_calls_become_error_results(collection):
    tools = {"python": PYTHON}
    assert run_call(tools, format_call("python", {"code": "print(6 * 7)"})) == "42"
    assert parse_call('Sure.<|tool_call|> {"name": "python", "arguments": {}} <|/tool_call|>') == ("python", {})
    for text, error in [
        ("<|tool_call|>{not json<|/tool_call|>", "not valid JSON"),
        ('<|tool_call|>["python"]<|/tool_call|>', '"name"'),
        ('<|tool_call|>{"name": "python", "arguments": "print(1)"}<|/tool_call|>', "JSON object"),
        ('<|tool_call|>{"name": "shell", "arguments": {}}<|/tool_call|>', "unknown tool 'shell'"),
        ('<|tool_call|>{"name": "python", "arguments": {"source": "1"}}<|/tool_call|>', "needs"),
    ]:
        assert run_call(tools, text).startswith("error:") and error in run_call(tools, text)
    assert format_result("a<|im_end|>b" + "x" * 2000).startswith("<|tool_result|>ab" + "x" * 100)
    assert format_result("x" * 2000).endswith("... (1000 more characters)<|/tool_result|>")
    with pytest.raises(LmforgeError, match="unknown tool 'shell'"):
        load_tools(["shell"])


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        m["content"] for g in ("python_arithmetic", "python_counting") for c in GENERATORS[g](size=100) for m in c
    ]
    return train_tokenizer(texts, vocab_size=500)


def spans(tokenizer, messages) -> tuple[list[str], str]:
    """The trained-on spans of the rendered conversation, decoded, and the untrained text."""
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    found, current = [], []
    for token, masked in zip(out["input_ids"], out["assistant_masks"]):
        if masked:
            current.append(token)
        elif current:
            found, current = found + [tokenizer.decode(current)], []
    untrained = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if not m])
    return found + ([tokenizer.decode(current)] if current else []), untrained


def test_template_keeps_tool_results_out_of_the_loss(tokenizer, collection):
    conversations = (
        GENERATORS["python_arithmetic"](size=20)
        + GENERATORS["python_counting"](size=20)
        + GENERATORS["corpus_search"](
            size=5, text_files=[str(collection / "*.txt")], index_dir=str(collection / "index")
        )
    )
    for messages in conversations:
        reply = messages[-1]["content"]
        before, rest = reply.split("<|tool_result|>")
        result, after = rest.split("<|/tool_result|>")
        trained, untrained = spans(tokenizer, messages)
        assert trained == [before, after + "<|im_end|>"]  # the call is trained on, the result is not
        assert f"<|tool_result|>{result}<|/tool_result|>" in untrained
    with pytest.raises(Exception, match="never closed"):
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a<|tool_result|>b"}], tokenize=False
        )


# Conversations that use tools.


@pytest.mark.parametrize("name", ["python_arithmetic", "python_counting"])
def test_python_conversations_embed_what_the_code_prints(name):
    rows = GENERATORS[name](size=300, seed=3)
    assert all(check_conversation(messages) is None for messages in rows)
    for messages in rows[:: 300 // 8]:  # the sandbox takes ~0.1 s a run: check a spread of them
        reply = messages[-1]["content"]
        result = reply.split("<|tool_result|>")[1].split("<|/tool_result|>")[0]
        assert run_call({"python": PYTHON}, reply.split("<|tool_result|>")[0]) == result
        assert reply.endswith(f"Final answer: {result}")


def test_search_conversations_embed_the_tools_output(collection):
    rows = GENERATORS["corpus_search"](
        size=10,
        seed=1,
        documents=[str(collection / "*.parquet")],
        text_files=[str(collection / "*.txt")],
        index_dir=str(collection / "index"),
    )
    tool = SearchTool(
        documents=[str(collection / "*.parquet")],
        text_files=[str(collection / "*.txt")],
        index_dir=str(collection / "index"),
    )
    for messages in rows:
        assert check_conversation(messages) is None
        call, rest = messages[-1]["content"].split("<|tool_result|>")
        assert (
            format_result(run_call({"search": tool}, call))
            == "<|tool_result|>" + rest.split("<|/tool_result|>")[0] + "<|/tool_result|>"
        )


# The generation loop.


def scripted(tokenizer, script):
    """A stand-in for a model that already knows the protocol: `script(context_text)` gives what it writes next
    (until a stop token). Used only where a tiny model cannot be made to call tools."""

    def generate(batch, stop_ids, max_new_tokens):
        texts = [script(tokenizer.decode(ids, skip_special_tokens=False)) for ids in batch]
        return [ids[:max_new_tokens] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return generate


def oracle(context: str) -> str:
    """Writes the python code for the question, then reads the answer off the tool's result."""
    if context.endswith("<|/tool_result|>"):
        return f"Final answer: {context.split('<|tool_result|>')[-1].split('<|/tool_result|>')[0]}<|im_end|>"
    question = context.split("<|im_start|>user\n")[-1].split("<|im_end|>")[0]
    known = GENERATORS["python_arithmetic"](size=16, seed=1000) + GENERATORS["python_counting"](size=16, seed=1000)
    for messages in known:
        if messages[0]["content"] == question:
            return messages[1]["content"].split("<|tool_result|>")[0]
    return "I do not know.<|im_end|>"


def test_tool_loop_runs_calls_and_tools_raise_accuracy(tokenizer):
    problems = heldout_problems(size=32, seed=1000)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with_tools = tool_accuracy(scripted(tokenizer, oracle), tokenizer, problems, stop, {"python": PYTHON})
    without = tool_accuracy(scripted(tokenizer, oracle), tokenizer, problems, stop, None)
    assert with_tools.pop("replies")[0]["reply"].count("<|tool_result|>") == 1
    assert with_tools == {
        "tools": ["python"],
        "rows": 32,
        "accuracy": 1.0,
        "per_task": {"arithmetic": 1.0, "counting": 1.0},
        "mean_tool_calls": 1.0,
    }
    assert without["accuracy"] == 0.0 and without["mean_tool_calls"] == 0.0  # the call is never run


def test_tool_loop_caps_calls_and_survives_malformed_ones(tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "go"}], add_generation_prompt=True)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    results = []
    (turn,) = generate_with_tools(
        scripted(tokenizer, lambda context: "<|tool_call|>{oops<|/tool_call|>"),
        tokenizer,
        [prompt["input_ids"]],
        {"python": PYTHON},
        stop,
        max_new_tokens=200,
        max_calls=2,
        on_result=results.append,
    )
    assert turn.calls > 2 and "not valid JSON" in results[0] and "at most 2 tool calls" in results[2]
    assert sum(turn.mask) == 200  # the model's budget spent, results not counted, no crash


def test_tool_results_are_masked_and_rows_of_a_batch_stop_on_their_own(tokenizer):
    """In a batch, a row that calls a tool goes on after the result while a row that answered directly has ended;
    the mask marks exactly the result's tokens as not written by the model (what RL must not learn from)."""

    def script(context):
        if "direct:" in context:
            return "Final answer: 4<|im_end|>"
        return oracle(context)

    problem = GENERATORS["python_counting"](size=1, seed=1000)[0][0]["content"]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
        for q in ("direct: what is 2 + 2?", problem)
    ]
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    direct, tooled = generate_with_tools(scripted(tokenizer, script), tokenizer, prompts, {"python": PYTHON}, stop)
    assert (direct.calls, set(direct.mask), tokenizer.decode(direct.ids)) == (0, {1}, "Final answer: 4<|im_end|>")
    assert tooled.calls == 1 and tokenizer.decode(tooled.ids).endswith("<|im_end|>")
    result = [token for token, written in zip(tooled.ids, tooled.mask) if not written]
    assert tokenizer.decode(result).startswith("<|tool_result|>") and tokenizer.decode(result).endswith(
        "<|/tool_result|>"
    )
    assert tokenizer.decode([t for t, written in zip(tooled.ids, tooled.mask) if written]).count("<|tool_call|>") == 1


def synced_loop(rank: int, tokenizer_dir: str, port: int, synced: bool, results: dict) -> None:
    """One of two processes running the tool loop at once, each on its own prompt, as GRPO's do under ZeRO-3 or
    FSDP: the `generate` of each round waits for the other process, as transformers' synced_gpus does at each step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=20))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    script = scripted(
        tokenizer, lambda context: "Final answer: 4<|im_end|>" if "direct:" in context else oracle(context)
    )

    def generate(batch, stop_ids, max_new_tokens):
        torch.distributed.barrier()
        return script(batch, stop_ids, max_new_tokens)

    question = "direct: 2 + 2?" if rank == 0 else GENERATORS["python_counting"](size=1, seed=1000)[0][0]["content"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    try:
        (turn,) = generate_with_tools(
            generate, tokenizer, [prompt["input_ids"]], {"python": PYTHON}, stop, synced=synced
        )
        results[rank] = (turn.calls, tokenizer.decode(turn.ids))
    except RuntimeError as error:  # gloo's timeout: the other process never called generate again
        results[rank] = str(error)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("synced", [True, False])
def test_processes_that_generate_together_go_round_the_tool_loop_together(tokenizer, tmp_path, synced):
    """Rank 0's reply is direct (one round), rank 1's calls python (two rounds). In step, rank 0 generates a
    placeholder in the second round and both replies are what each process gets alone; out of step, rank 1's second
    round waits for a process that has left the loop."""
    tokenizer.save_pretrained(tmp_path)
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(synced_loop, (str(tmp_path), free_port(), synced, results), nprocs=2)
        results = dict(results)
    if not synced:
        assert "timed out" in str(results[1]).lower() or "connection" in str(results[1]).lower(), results
        return
    assert results[0] == (0, "Final answer: 4<|im_end|>")
    calls, reply = results[1]
    assert calls == 1 and "<|tool_result|>" in reply and reply.endswith("<|im_end|>")


class ScriptedEngine:
    """What GRPO's tool loop sees of vLLM's `LLM.generate` (token-id prompts in; per prompt a RequestOutput whose
    outputs[0].token_ids end with the stop token hit, vLLM 0.27.1), written by `oracle`: vLLM is GPU-only."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append((len(prompts), sampling_params))
        rows = scripted(self.tokenizer, oracle)([p["prompt_token_ids"] for p in prompts], [], 10**6)
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=tuple(row))]) for row in rows]


def test_the_tool_loop_samples_each_round_on_a_vllm_engine(tokenizer):
    """GRPO with vLLM (`tool_rollouts` on trainer.vllm_generation): every round is one engine call of the rows still
    going, with the round's token budget and the stops as vLLM's sampling parameters, and the calls run."""
    engine = ScriptedEngine(tokenizer)
    stop = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    problems = heldout_problems(size=4, seed=1000)
    generate = engine_generate(engine, lambda **params: {"temperature": 1.0, **params})
    scores = tool_accuracy(generate, tokenizer, problems, stop, {"python": PYTHON}, max_new_tokens=64)
    assert scores["accuracy"] == 1.0 and scores["mean_tool_calls"] == 1.0
    end_call = tokenizer.convert_tokens_to_ids("<|/tool_call|>")
    first, second = engine.calls  # the call, then the answer after its result
    assert first == (4, {"temperature": 1.0, "max_tokens": 64, "stop_token_ids": [*stop, end_call]})
    assert second[0] == 4 and second[1]["max_tokens"] < 64  # what the model wrote in round one is spent


@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        tiny_llama_config(tokenizer, hidden_size=32, layers=1, heads=2, kv_heads=1, max_positions=1024)
    )
    model.generation_config.eos_token_id = end_of_turn_ids(model, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


def test_compare_tools_runs_on_a_real_model(tokenizer, tiny_model):
    _, model = tiny_model
    report = compare_tools(model, tokenizer, {"python": PYTHON}, size=4, max_new_tokens=8)
    for side in ("off", "on"):
        assert report[side]["rows"] == 4 and 0 <= report[side]["accuracy"] <= 1
        assert set(report[side]["per_task"]) == {"arithmetic", "counting"}
    assert report["on"]["tools"] == ["python"] and report["off"]["tools"] == []


def test_chat_with_tools_and_few_shot(tiny_model, capsys):
    path, _ = tiny_model
    messages = chat.main(
        chat.ChatConfig(model_name_or_path=str(path), tools=["python"], max_new_tokens=6, seed=0),
        lines=["What is 2 + 2?", "/exit"],
    )
    assert [m["role"] for m in messages] == ["user", "assistant"]
    messages = chat.main(
        chat.ChatConfig(model_name_or_path=str(path), few_shot=True, max_new_tokens=6, seed=0),
        lines=["Hi", "And you?", "/exit"],
    )
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert json.dumps(messages)


QUESTION = "What is 6 times 7?"
CALL = format_call("python", {"code": "print(6 * 7)"})


@pytest.fixture(scope="module")
def calling_model(tokenizer, tmp_path_factory):
    """A tiny chat model taught to open its reply to QUESTION with CALL."""
    path = tmp_path_factory.mktemp("calling")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, sanitize_control_tokens=True
    )["input_ids"]
    model = memorize(tokenizer, [(prompt, tokenizer(CALL, add_special_tokens=False)["input_ids"])], steps=60)
    model.generation_config.eos_token_id = end_of_turn_ids(model, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_generate_runs_the_calls_a_chat_model_writes(calling_model):
    """`lmforge generate --chat --tools python` runs the call and the sample holds the real result; without tools
    the call stays unanswered text."""
    options = dict(
        model=str(calling_model), prompt=QUESTION, chat=True, temperature=0.0, max_new_tokens=40, stream=False
    )
    (with_tools,) = generate.main(generate.GenerateConfig(**options, tools=["python"]))
    assert with_tools.startswith(CALL + "<|tool_result|>42<|/tool_result|>")
    (without,) = generate.main(generate.GenerateConfig(**options))
    assert without.startswith('{"name": "python"') and "42" not in without
    with pytest.raises(LmforgeError, match="set chat: true"):
        generate.main(generate.GenerateConfig(model=str(calling_model), prompt=QUESTION, tools=["python"]))


def test_rollouts_run_the_calls_of_every_response(calling_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": QUESTION}) + "\n")
    config = rollouts.RolloutsConfig(
        model=str(calling_model),
        prompts={"q": {"path": "json", "data_files": str(prompts)}},
        num_responses=3,
        max_new_tokens=40,
        tools=["python"],
        output_dir=str(tmp_path / "out"),
    )
    responses = load_from_disk(str(rollouts.main(config)))[0]["responses"]
    assert len(responses) == 3 and all(r.startswith(CALL + "<|tool_result|>42<|/tool_result|>") for r in responses)


def test_grpo_with_tools_refuses_a_vllm_engine_the_tool_loop_cannot_drive(tmp_path):
    """The loop's rounds differ between processes: each needs its own awake, unsplit engine (vllm_mode colocate)."""

    def args(**vllm):
        return GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True, **vllm)

    grpo.check_tool_engine(args(vllm_mode="colocate"))
    for bad in ({"vllm_mode": "server"}, {"vllm_tensor_parallel_size": 2}, {"vllm_enable_sleep_mode": True}):
        with pytest.raises(LmforgeError, match="vllm_mode: colocate"):
            grpo.check_tool_engine(args(**bad))
