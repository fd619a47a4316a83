"""Tools an assistant can call in the middle of its turn: the protocol, the interface and the registry.

The protocol lives inside an assistant message's content, so a tool-using turn is one message whose text
is exactly what the model reads and writes:

    Let me compute it.<|tool_call|>{"name": "python", "arguments": {"code": "print(17 * 23)"}}<|/tool_call|>
    <|tool_result|>391<|/tool_result|>Final answer: 391

(one line in the real text). The model writes the call: one JSON object with `name` and `arguments`
(an object) between <|tool_call|> and <|/tool_call|>. The generation loop (lmforge.lib.tools.generation)
stops at <|/tool_call|>, runs the tool and appends <|tool_result|>OUTPUT<|/tool_result|>, and the model
continues. The chat template renders results outside {% generation %}: the loss never covers them.

A tool is any object with `name`, `schema` (its JSON schema, which a Hub model's chat template shows it:
lmforge.lib.tools.template) and `run(arguments: dict) -> str`; `run` may raise
ToolError for bad arguments, and `run_call` turns every failure into a short `error: ...` result, so a
malformed call never stops a conversation. To add one, write the class and add it to TOOLS.
"""

from typing import Any

from lmforge import LmforgeError
from lmforge.lib.tools.protocol import Tool, ToolError, format_call, format_result, parse_call, run_call
from lmforge.lib.tools.python import PythonTool
from lmforge.lib.tools.search import SearchTool


TOOLS = {"python": PythonTool, "search": SearchTool}  # name -> class; a recipe's `tools: [python, search]`

__all__ = ["TOOLS", "Tool", "ToolError", "format_call", "format_result", "load_tools", "parse_call", "run_call"]


def load_tools(names: list[str], **options: Any) -> dict[str, Tool]:
    """The named tools, each built with the `options` it accepts (e.g. timeout for python, documents for search)."""
    tools = {}
    for name in names:
        if name not in TOOLS:
            raise LmforgeError(f"tools: unknown tool {name!r}; tools are {sorted(TOOLS)}")
        accepted = TOOLS[name].__dataclass_fields__
        tools[name] = TOOLS[name](**{key: value for key, value in options.items() if key in accepted})
    return tools
