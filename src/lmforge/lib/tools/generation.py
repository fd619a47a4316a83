"""Generation that runs the model's tool calls, and accuracy on held-out problems with tools on and off.

`generate_with_tools` samples assistant turns for a batch of prompts. Each row is sampled until
<|/tool_call|> or the end of its turn; rows that closed a call get the call's result appended as tokens
(<|tool_result|>OUTPUT<|/tool_result|>, from lmforge.lib.tools.run_call: a malformed call gets an `error: ...`
result) and go on in the next round, together, until every turn has ended. Each turn keeps a mask of
which tokens the model wrote (1) and which a tool did (0): RL must not learn from, or be scored on,
tokens the model never chose. The model is reached through a
`generate(batch, stop_ids, max_new_tokens) -> new ids per row` function: `model_generate` makes one from
a transformers model, `engine_generate` from a vLLM engine (GRPO's colocated one, each round); the tests script one.

A Hub model without lmforge's tool tokens calls tools through its own chat template (lmforge.lib.tools.template):
its prompt shows the tools' schemas (`prompt_tools`), a turn that ends with a call in the model's format gets the
results as the template's tool messages and the next assistant turn opened, all masked 0, and the model goes on.

Chat, the chat page, `lmforge generate --chat`, rollouts, GRPO and eval all sample through this loop
when tools are on.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lmforge.lib import chat_format
from lmforge.lib.conversations import arithmetic, spelling
from lmforge.lib.models import device
from lmforge.lib.tools import template
from lmforge.lib.tools.protocol import END_CALL, format_result, run_call


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Generate = Callable[[list[list[int]], list[int], int], list[list[int]]]
# Greedy decoding, overriding any sampling defaults in a model's generation config.
GREEDY = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@dataclass
class Turn:
    """An assistant turn: its token ids, tool results included, and which of them the model wrote."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1: written by the model, 0: a tool's result
    calls: int = 0

    def add(self, ids: list[int], written: bool) -> None:
        self.ids += ids
        self.mask += [int(written)] * len(ids)


def model_generate(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", /, **sampling: Any) -> Generate:
    """A batched `generate` over `model.generate` (rows left-padded); `sampling` (do_sample, temperature,
    streamer...) is passed on. Each row is cut after its first stop token: what follows is padding."""

    def generate(batch: list[list[int]], stop_ids: list[int], max_new_tokens: int) -> list[list[int]]:
        # One row needs no padding (and a Hub base model's tokenizer may have no pad token).
        if len(batch) == 1:
            inputs = {"input_ids": torch.tensor(batch), "attention_mask": torch.ones(1, len(batch[0]), dtype=int)}
        else:
            inputs = tokenizer.pad({"input_ids": batch}, padding_side="left", return_tensors="pt")
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        rows = output[:, inputs["input_ids"].shape[1] :].tolist()
        return [row[: next((i + 1 for i, token in enumerate(row) if token in stop_ids), len(row))] for row in rows]

    return generate


def engine_generate(llm: Any, sampling_params: Callable[..., Any]) -> Generate:
    """A batched `generate` over a vLLM engine (`vllm.LLM`, as TRL's colocated GRPO holds it): each round is one
    `llm.generate` of every active row. `sampling_params(max_tokens=, stop_token_ids=)` makes the round's
    `vllm.SamplingParams` (the caller binds temperature, top_p... to it)."""

    def generate(batch: list[list[int]], stop_ids: list[int], max_new_tokens: int) -> list[list[int]]:
        params = sampling_params(max_tokens=max_new_tokens, stop_token_ids=stop_ids)
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in batch], sampling_params=params, use_tqdm=False)
        # A row that hit a stop token ends with it, as the loop needs: vLLM appends each token before it checks
        # the stops (vllm/v1/core/sched/utils.py, check_stop, in 0.27.1).
        return [list(output.outputs[0].token_ids) for output in outputs]

    return generate


def generation_eos(model: "PreTrainedModel") -> list[int]:
    """The tokens that end generation in the model's generation config."""
    eos = model.generation_config.eos_token_id
    return eos if isinstance(eos, list) else [eos] if eos is not None else []


def end_of_turn_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """Tokens that end an assistant turn: the model's generation eos and its chat template's end of turn."""
    return chat_format.end_of_turn_ids(tokenizer, generation_eos(model))


def prompt_tools(tokenizer: "PreTrainedTokenizerBase", tools: dict | None) -> list[dict] | None:
    """The `tools=` to render a prompt with: the tools' schemas for a Hub model whose template shows them, None
    for lmforge's tokenizer (its model learnt the tools in SFT) or without tools."""
    return template.schemas(tools) if tools and template.call_format(tokenizer) else None


def generate_with_tools(
    generate: Generate,
    tokenizer: "PreTrainedTokenizerBase",
    prompts: list[list[int]],
    tools: dict | None,
    stop_ids: list[int],
    max_new_tokens: int = 256,
    max_calls: int = 4,
    on_result: Callable[[str], None] | None = None,
    synced: bool = False,
) -> list[Turn]:
    """The assistant turn after each of `prompts`, tool results included.

    `max_new_tokens` bounds what the model writes in a turn (results do not count); calls after `max_calls`
    get an error result instead of running. `on_result(result)` sees each formatted result as it is made.
    Without `tools` this is plain generation: a call the model writes stays text and it writes on.
    `synced`: every process runs this loop at once on a model whose every generation step needs them all (ZeRO-3,
    FSDP: lib.models.generates_together). Their prompts take different numbers of rounds, so a process whose turns
    have all ended generates a placeholder each round until every process's have: all call `generate` equally often.
    """
    call_format = template.call_format(tokenizer) if tools else None  # None: lmforge's protocol
    end_call = tokenizer.convert_tokens_to_ids(END_CALL) if tools and not call_format else None
    stops = stop_ids if end_call is None else [*stop_ids, end_call]
    turns = [Turn() for _ in prompts]
    active = list(range(len(prompts)))
    while any_sampling(bool(active), synced):
        budget = {i: max_new_tokens - sum(turns[i].mask) for i in active}
        batch = [prompts[i] + turns[i].ids for i in active] or prompts[:1]  # all ended here: a placeholder
        new = generate(batch, stops, max(budget.values(), default=1))
        going_on = []
        for i, ids in zip(active, new):
            ids = ids[: budget[i]]  # the batch ran to the largest budget
            turns[i].add(ids, written=True)
            if call_format:  # a Hub model: its calls end its turn, the template gives the results back
                text = ids and ids[-1] in stop_ids and tokenizer.decode(ids, skip_special_tokens=False)
                calls = template.parse_calls(tokenizer, call_format, text) if text else []
                if not calls:
                    continue
                turns[i].calls += 1 if isinstance(calls, str) else len(calls)
                results = (
                    template.run_calls(tools, calls)
                    if turns[i].calls <= max_calls
                    else [("error", f"error: at most {max_calls} tool calls per turn")]
                )
                result = template.continuation(tokenizer, tools, results)
            else:
                if not ids or ids[-1] != end_call:
                    continue
                turns[i].calls += 1
                text = tokenizer.decode(turns[i].ids, skip_special_tokens=False)
                result = format_result(
                    run_call(tools, text)
                    if turns[i].calls <= max_calls
                    else f"error: at most {max_calls} tool calls per turn"
                )
            if on_result:
                on_result(result)
            # The result had special-token strings removed: only its own markers become control tokens.
            turns[i].add(tokenizer(result, add_special_tokens=False)["input_ids"], written=False)
            if budget[i] > len(ids):
                going_on.append(i)
        active = going_on
    return turns


def any_sampling(sampling: bool, synced: bool) -> bool:
    """Whether this process's loop goes on: while it is `sampling`, or, `synced`, while any process is."""
    if not synced:
        return sampling
    flag = torch.tensor(int(sampling), device=device())
    torch.distributed.all_reduce(flag)
    return bool(flag.item())


def heldout_problems(size: int = 32, seed: int = 1000) -> list[dict]:
    """Arithmetic word problems and letter counts (half each) with their integer answers: question, answer, task."""
    rows = [
        {"question": p["question"], "answer": p["answer"], "task": "arithmetic"}
        for p in arithmetic.problems(size - size // 2, seed)
    ]
    return rows + [
        {"question": p["question"], "answer": p["answer"], "task": "counting"}
        for p in spelling.problems(size // 2, seed)
    ]


def tool_accuracy(
    generate: Generate,
    tokenizer: "PreTrainedTokenizerBase",
    problems: list[dict],
    stop_ids: list[int],
    tools: dict | None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
) -> dict:
    """Share of `problems` whose reply ends with the right `Final answer: N`, overall and per task, with tools
    run (`tools`) or not (None: a call the model writes is left as text), the mean number of calls and the replies."""
    replies, calls = [], 0
    for start in range(0, len(problems), batch_size):
        prompts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": problem["question"]}],
                add_generation_prompt=True,
                tools=prompt_tools(tokenizer, tools),
            )["input_ids"]
            for problem in problems[start : start + batch_size]
        ]
        turns = generate_with_tools(generate, tokenizer, prompts, tools, stop_ids, max_new_tokens)
        calls += sum(turn.calls for turn in turns)
        replies += tokenizer.batch_decode([turn.ids for turn in turns], skip_special_tokens=False)
    scores = {}
    for problem, reply in zip(problems, replies):
        scores.setdefault(problem["task"], []).append(float(arithmetic.final_number(reply) == problem["answer"]))
    every = [score for task_scores in scores.values() for score in task_scores]
    return {
        "tools": sorted(tools or []),
        "rows": len(every),
        "accuracy": sum(every) / max(len(every), 1),
        "per_task": {task: sum(s) / len(s) for task, s in sorted(scores.items())},
        "mean_tool_calls": calls / max(len(every), 1),
        "replies": [{"task": p["task"], "prompt": p["question"], "reply": r} for p, r in zip(problems, replies)],
    }


def compare_tools(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    tools: dict,
    size: int = 32,
    seed: int = 1000,
    max_new_tokens: int = 128,
    batch_size: int = 16,
) -> dict:
    """Greedy accuracy on the same held-out problems without tools and with `tools`: {"off": ..., "on": ...}."""
    generate = model_generate(model, tokenizer, **GREEDY)
    stop_ids, problems = end_of_turn_ids(model, tokenizer), heldout_problems(size, seed)
    return {
        "off": tool_accuracy(generate, tokenizer, problems, stop_ids, None, max_new_tokens, batch_size),
        "on": tool_accuracy(generate, tokenizer, problems, stop_ids, tools, max_new_tokens, batch_size),
    }
