"""Tool use through a Hub model's own chat template: the prompt shows the tools' schemas, the model's call in its
family's format runs in the sandbox, and the result comes back as the template's tool message.

Tokenizers are test_conventions' byte-level BPEs with the Qwen 2.5 (tools=, <tool_call>, results in
<tool_response>) and Llama 3.1 (tools= in the first user turn, bare JSON calls, results in an `ipython` turn)
templates that TRL keeps as the originals those models ship.
"""

import json

import pytest
from datasets import load_from_disk

from lmforge import LmforgeError, rollouts
from lmforge.lib.tools.generation import generate_with_tools, prompt_tools
from lmforge.lib.tools.python import PythonTool
from lmforge.lib.tools.template import call_format, parse_calls
from test_conventions import TRL, build_tokenizer
from tiny import memorize


PYTHON = PythonTool(timeout=2, memory_mb=256)
QUESTION = "What is 6 times 7?"
# family: (the call as the model writes it, the result as the template gives it back and opens the next turn)
CALLS = {
    "qwen2_5": (
        '<tool_call>\n{"name": "python", "arguments": {"code": "print(6 * 7)"}}\n</tool_call><|im_end|>',
        "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    ),
    "llama3_1": (
        '{"name": "python", "parameters": {"code": "print(6 * 7)"}}<|eot_id|>',
        '<|start_header_id|>ipython<|end_header_id|>\n\n"42"<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
}
END = {"qwen2_5": "<|im_end|>", "llama3_1": "<|eot_id|>"}


def hub_tokenizer(family: str):
    if family == "llama3_1":
        tokenizer = build_tokenizer("llama3")
        tokenizer.chat_template = (TRL / "llama3_1.jinja").read_text()
        return tokenizer
    return build_tokenizer(family)


def test_the_call_format_is_read_from_the_template():
    assert call_format(hub_tokenizer("qwen2_5")) == "hermes"
    assert call_format(hub_tokenizer("llama3_1")) == "llama3_json"
    assert call_format(build_tokenizer("chatml_marked")) is None  # lmforge's tokenizer: lmforge's protocol
    with pytest.raises(LmforgeError, match="neither lmforge's tool tokens.*nor a chat template that renders"):
        call_format(build_tokenizer("llama3"))  # Llama 3's template takes no tools=


def test_calls_are_parsed_in_the_models_format():
    qwen, llama = hub_tokenizer("qwen2_5"), hub_tokenizer("llama3_1")
    assert parse_calls(qwen, "hermes", "Let me run it.\n" + CALLS["qwen2_5"][0]) == [
        ("python", {"code": "print(6 * 7)"})
    ]
    assert parse_calls(llama, "llama3_json", CALLS["llama3_1"][0]) == [("python", {"code": "print(6 * 7)"})]
    assert parse_calls(qwen, "hermes", "42, I think.<|im_end|>") == []
    assert parse_calls(llama, "llama3_json", "It is {42}.<|eot_id|>") == []
    assert parse_calls(qwen, "hermes", "<tool_call>{oops</tool_call><|im_end|>").startswith("error: the call is not")


def scripted(tokenizer, family, seen):
    """A model that knows its family's tool format: it calls python for QUESTION, then reads the answer off the
    result. `seen` collects each context it is given."""

    def generate(batch, stop_ids, max_new_tokens):
        texts = []
        for ids in batch:
            context = tokenizer.decode(ids, skip_special_tokens=False)
            seen.append(context)
            texts.append(f"Final answer: 42{END[family]}" if context.endswith(CALLS[family][1]) else CALLS[family][0])
        return [ids[:max_new_tokens] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return generate


@pytest.mark.parametrize("family", CALLS)
def test_the_tool_loop_runs_the_models_call_and_renders_the_result_as_the_template_does(family):
    tokenizer, seen = hub_tokenizer(family), []
    tools = {"python": PYTHON}
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tools=prompt_tools(tokenizer, tools)
    )["input_ids"]
    assert "return what it prints" in tokenizer.decode(prompt)  # the schema reached the prompt
    stop = [tokenizer.convert_tokens_to_ids(END[family])]
    (turn,) = generate_with_tools(scripted(tokenizer, family, seen), tokenizer, [prompt], tools, stop)
    call, result = CALLS[family]
    assert turn.calls == 1 and len(seen) == 2 and seen[1].endswith(call + result)  # the next turn reads 42
    assert tokenizer.decode(turn.ids) == call + result + f"Final answer: 42{END[family]}"
    assert tokenizer.decode([t for t, written in zip(turn.ids, turn.mask) if not written]) == result
    (plain,) = generate_with_tools(scripted(tokenizer, family, []), tokenizer, [prompt], None, stop)
    assert tokenizer.decode(plain.ids) == call and plain.calls == 0  # without tools the call is text


def test_rollouts_of_a_qwen_model_run_its_calls(tmp_path):
    """A tiny Qwen-templated model taught to open its reply with a call: rollouts with tools run it in the
    sandbox, the response holds the template's tool message with the real result, and the turn ends after it."""
    tokenizer = hub_tokenizer("qwen2_5")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        tools=prompt_tools(tokenizer, {"python": PYTHON}),
    )["input_ids"]
    call = tokenizer(CALLS["qwen2_5"][0], add_special_tokens=False)["input_ids"]
    model = memorize(tokenizer, [(prompt, call)], steps=60)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": QUESTION}) + "\n")
    prompts = {"q": {"path": "json", "data_files": str(tmp_path / "prompts.jsonl")}}
    config = rollouts.RolloutsConfig(
        model=str(tmp_path / "model"),
        num_responses=2,
        max_new_tokens=80,
        temperature=0.05,
        prompts=prompts,
        tools=["python"],
        output_dir=str(tmp_path / "out"),
    )
    responses = load_from_disk(str(rollouts.main(config)))[0]["responses"]
    assert len(responses) == 2
    assert all(r.startswith(CALLS["qwen2_5"][0] + CALLS["qwen2_5"][1]) for r in responses)
