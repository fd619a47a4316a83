"""The tool protocol's text: calls and results inside an assistant turn (see lmforge.lib.tools)."""

import json
from typing import Protocol

from lmforge.lib.chat_format import SPECIAL_TOKENS, TOOL_MARKERS


CALL, END_CALL, RESULT, END_RESULT = TOOL_MARKERS
MAX_RESULT_CHARS = 1000


class ToolError(Exception):
    """A call the tool cannot run (bad arguments): its message becomes the call's result."""


class Tool(Protocol):
    name: str
    # {"type": "function", "function": {name, description, parameters}}: what a Hub model's chat template shows it
    # (apply_chat_template(tools=...)). lmforge's own tokenizer learns each tool's calls from SFT conversations.
    schema: dict

    def run(self, arguments: dict) -> str: ...


def format_call(name: str, arguments: dict) -> str:
    return CALL + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + END_CALL


def format_result(output: str) -> str:
    """A tool's output as the text the model reads between lmforge's result markers (see clean_output)."""
    return RESULT + clean_output(output) + END_RESULT


def clean_output(output: str, special_tokens=SPECIAL_TOKENS) -> str:
    """`output` length capped, with special-token strings removed because they would become control tokens when
    the turn is rendered again (a printed "<|im_end|>" would end it)."""
    for token in special_tokens:
        output = output.replace(token, "")
    if len(output) > MAX_RESULT_CHARS:
        output = output[:MAX_RESULT_CHARS] + f"... ({len(output) - MAX_RESULT_CHARS} more characters)"
    return output


def parse_call(text: str) -> tuple[str, dict]:
    """Name and arguments of the call in `text` (the JSON between <|tool_call|> and <|/tool_call|>)."""
    text = text.split(CALL)[-1].split(END_CALL)[0].strip()
    try:
        call = json.loads(text)
    except json.JSONDecodeError as error:
        raise ToolError(f"the call is not valid JSON ({error.msg})") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ToolError('a call is {"name": TOOL, "arguments": {...}}')
    arguments = call.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be a JSON object")
    return call["name"], arguments


def run_call(tools: dict[str, Tool], text: str) -> str:
    """The result of the call in `text`, or `error: ...`; never raises for anything the model wrote."""
    try:
        name, arguments = parse_call(text)
    except ToolError as error:
        return f"error: {error}"
    return run_tool(tools, name, arguments)


def run_tool(tools: dict[str, Tool], name: str, arguments: dict) -> str:
    """The result of calling tool `name` with `arguments`, or `error: ...`."""
    try:
        if name not in tools:
            raise ToolError(f"unknown tool {name!r}; tools are {sorted(tools)}")
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object")
        return tools[name].run(arguments)
    except ToolError as error:
        return f"error: {error}"
