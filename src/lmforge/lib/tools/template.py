"""Tool use through a Hub model's own chat template, for tokenizers without lmforge's tool tokens.

A Hub chat model learnt tools its own way: its template shows it the tools' JSON schemas
(`apply_chat_template(tools=...)`), the model answers with a call in its family's format, and the call's result
comes back as a `{"role": "tool"}` message that the template renders (Qwen 2.5 as a user turn holding
<tool_response>, Llama 3.1 as an `ipython` turn). The generation loop (lmforge.lib.tools.generation) asks this
module three things: whether a template takes tools (`call_format`), which calls a finished turn holds
(`parse_calls`), and what text follows the turn to give the results back and open the model's next turn
(`continuation`).

Calls are parsed with transformers' `tokenizer.parse_response`: with the tokenizer's own `response_template`
where it ships one, else with the entry of RESPONSE_TEMPLATES for the format the template renders calls in.
"""

import json
import re

from lmforge import LmforgeError
from lmforge.lib import chat_format
from lmforge.lib.tools.protocol import clean_output, run_tool


PROBE = {
    "type": "function",
    "function": {
        "name": "PROBE_TOOL",
        "description": "PROBE_DESCRIPTION",
        "parameters": {"type": "object", "properties": {}},
    },
}
PROBE_CALL = {"type": "function", "function": {"name": "PROBE_TOOL", "arguments": {"PROBE_ARGUMENT": 1}}}


def hermes(start: str, end: str) -> dict:
    """Hermes / Qwen 2.5: calls as <tool_call>{"name": ..., "arguments": {...}}</tool_call>, after any text."""
    return {
        "defaults": {"role": "assistant"},
        "start_anchor": start,
        "fields": {
            "tool_calls": {
                "open_pattern": r"\s*<tool_call>",
                "close": "</tool_call>",
                "repeats": True,
                "content": "json",
                "transform": {"type": "function", "function": "{content}"},
            },
            "content": {"close_pattern": r"\s*" + re.escape(end), "content": "text"},
        },
    }


def llama3_json(start: str, end: str) -> dict:
    """Llama 3.1 custom tools: the whole reply is one JSON object {"name": ..., "parameters": {...}}."""
    return {
        "defaults": {"role": "assistant"},
        "start_anchor": start,
        "fields": {
            "tool_calls": {
                "open_pattern": r"^\s*(?=\{)",
                "close_pattern": r"\s*" + re.escape(end),
                "repeats": True,
                "content": "json",
                "transform": {
                    "type": "function",
                    "function": {"name": "{content.name}", "arguments": "{content.parameters}"},
                },
            },
            "content": {"close_pattern": r"\s*" + re.escape(end), "content": "text"},
        },
    }


# Format name -> transformers response_template for a template's generation prompt and end of turn.
RESPONSE_TEMPLATES = {"hermes": hermes, "llama3_json": llama3_json}


def call_format(tokenizer) -> str | None:
    """How the model calls tools: None where the tokenizer has lmforge's tool tokens (lmforge's protocol), "model"
    where it ships a response_template, else the RESPONSE_TEMPLATES name matching how its template writes a call.
    A template that takes no `tools=` (the schema does not appear in the prompt) is one line."""
    if chat_format.has_tool_markers(tokenizer):
        return None
    user = [{"role": "user", "content": chat_format.USER}]
    try:
        renders_tools = "PROBE_DESCRIPTION" in chat_format.render(tokenizer, user, tools=[PROBE])
    except Exception:  # a template that fails on tools= does not take them
        renders_tools = False
    if not renders_tools:
        raise LmforgeError(
            "tools: the tokenizer has neither lmforge's tool tokens "
            f"{chat_format.TOOL_MARKERS} nor a chat template that renders `tools=`"
        )
    if getattr(tokenizer, "response_template", None):
        return "model"
    call = chat_format.render(
        tokenizer, [*user, {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]}], tools=[PROBE]
    )
    if re.search(r'<tool_call>\s*\{"name": "PROBE_TOOL"', call):
        return "hermes"
    if '{"name": "PROBE_TOOL", "parameters": ' in call:
        return "llama3_json"
    raise LmforgeError(
        f"tools: the chat template writes tool calls in a format lmforge does not parse (it knows "
        f"{', '.join(RESPONSE_TEMPLATES)}); give the tokenizer a transformers `response_template`"
    )


def schemas(tools: dict) -> list[dict]:
    return [tool.schema for tool in tools.values()]


def parse_calls(tokenizer, call_format: str, text: str) -> list[tuple[str, dict]] | str:
    """(name, arguments) of each call in `text`, what the model wrote after its generation prompt, or an
    `error: ...` line when a call is not valid JSON."""
    if call_format == "model":
        template = tokenizer.response_template
    else:
        start = chat_format.generation_prompt(tokenizer)
        template = RESPONSE_TEMPLATES[call_format](start, chat_format.end_of_turn(tokenizer))
    try:
        # The generation prompt as prefix: parsing starts where the model's reply does.
        message = tokenizer.parse_response(text, template, prefix=chat_format.generation_prompt(tokenizer))
    except ValueError as error:
        return f"error: the call is not valid JSON ({str(error).splitlines()[0]})"
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):  # some formats carry arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # run_tool answers that arguments must be an object
        calls.append((function.get("name"), arguments))
    return calls


def run_calls(tools: dict, calls: list[tuple[str, dict]] | str) -> list[tuple[str, str]]:
    """(tool name, result) for each call; a parse error is one result."""
    if isinstance(calls, str):
        return [("error", calls)]
    return [(str(name), run_tool(tools, name, arguments)) for name, arguments in calls]


def continuation(tokenizer, tools: dict, results: list[tuple[str, str]]) -> str:
    """The text the template writes after the assistant's end of turn (which the model has written) to give back
    `results` as tool messages and open the assistant's next turn."""
    controls = [*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()]
    messages = [
        {"role": "user", "content": chat_format.USER},
        {"role": "assistant", "content": chat_format.REPLY},
        *({"role": "tool", "name": name, "content": clean_output(result, controls)} for name, result in results),
    ]
    text = chat_format.render(tokenizer, messages, tools=schemas(tools), add_generation_prompt=True)
    after = text.split(chat_format.REPLY, 1)[1]
    return after.split(chat_format.end_of_turn(tokenizer), 1)[1]
