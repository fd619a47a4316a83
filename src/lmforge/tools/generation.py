"""Generation that runs the model's tool calls, and accuracy on held-out problems with tools on and off.

`generate_with_tools` samples the assistant's turn until <|/tool_call|> or the end of the turn; at
<|/tool_call|> it runs the call (lmforge.tools.run_call: a malformed call gets an `error: ...` result),
appends <|tool_result|>OUTPUT<|/tool_result|> as tokens and samples on. The model is reached through a
`generate(ids, stop_ids, max_new_tokens) -> new ids` function: `model_generate` makes one from a
transformers model.
"""

from collections.abc import Callable

import torch

from lmforge.conversations import arithmetic, spelling
from lmforge.tools.protocol import END_CALL, format_result, run_call

Generate = Callable[[list[int], list[int], int], list[int]]


def model_generate(model, tokenizer, **sampling) -> Generate:
    """A `generate` function over `model.generate`; `sampling` (do_sample, temperature...) is passed on."""
    def generate(ids: list[int], stop_ids: list[int], max_new_tokens: int) -> list[int]:
        prompt = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                    eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, **sampling)
        return output[0, len(ids):].tolist()
    return generate


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """Tokens that end an assistant turn: the model's generation eos (with <|im_end|> after SFT)."""
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return sorted(set(eos) | {tokenizer.convert_tokens_to_ids("<|im_end|>")})


def generate_with_tools(generate: Generate, tokenizer, prompt_ids: list[int], tools: dict, stop_ids: list[int],
                        max_new_tokens: int = 256, max_calls: int = 4,
                        on_result: Callable[[str], None] | None = None) -> tuple[list[int], int]:
    """The assistant turn's ids after `prompt_ids`, tool results included, and the number of calls made.

    `max_new_tokens` bounds what the model writes (results do not count); calls after `max_calls` get an
    error result instead of running.
    """
    end_call = tokenizer.convert_tokens_to_ids(END_CALL)
    turn, budget, calls = [], max_new_tokens, 0
    while budget > 0:
        new = generate(prompt_ids + turn, [*stop_ids, end_call], budget)
        turn, budget = turn + new, budget - len(new)
        if not new or new[-1] != end_call:
            break
        calls += 1
        text = tokenizer.decode(turn, skip_special_tokens=False)
        result = run_call(tools, text) if calls <= max_calls else f"error: at most {max_calls} tool calls per turn"
        result = format_result(result)
        if on_result:
            on_result(result)
        # format_result removed special-token strings from the output: only its own markers become control tokens.
        turn += tokenizer(result, add_special_tokens=False)["input_ids"]
    return turn, calls


def heldout_problems(size: int = 32, seed: int = 1000) -> list[dict]:
    """Arithmetic word problems and letter counts (half each) with their integer answers: question, answer, task."""
    rows = [{"question": p["question"], "answer": p["answer"], "task": "arithmetic"}
            for p in arithmetic.problems(size - size // 2, seed)]
    return rows + [{"question": p["question"], "answer": p["answer"], "task": "counting"}
                   for p in spelling.problems(size // 2, seed)]


def tool_accuracy(generate: Generate, tokenizer, problems: list[dict], stop_ids: list[int], tools: dict | None,
                  max_new_tokens: int = 128) -> dict:
    """Share of `problems` whose reply ends with the right `Final answer: N`, overall and per task, with tools
    run (`tools`) or not (None: a call the model writes is left as text), and the mean number of calls."""
    scores, calls = {}, 0
    for problem in problems:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": problem["question"]}],
                                               add_generation_prompt=True)["input_ids"]
        if tools:
            ids, made = generate_with_tools(generate, tokenizer, prompt, tools, stop_ids, max_new_tokens)
            calls += made
        else:
            ids = generate(prompt, stop_ids, max_new_tokens)
        reply = tokenizer.decode(ids, skip_special_tokens=False)
        scores.setdefault(problem["task"], []).append(float(arithmetic.final_answer(reply) == problem["answer"]))
    every = [score for task_scores in scores.values() for score in task_scores]
    return {"tools": sorted(tools or []), "rows": len(every), "accuracy": sum(every) / max(len(every), 1),
            "per_task": {task: sum(s) / len(s) for task, s in sorted(scores.items())},
            "mean_tool_calls": calls / max(len(every), 1)}


def compare_tools(model, tokenizer, tools: dict, size: int = 32, seed: int = 1000, max_new_tokens: int = 128) -> dict:
    """Greedy accuracy on the same held-out problems without tools and with `tools`: {"off": ..., "on": ...}."""
    generate, stop_ids = model_generate(model, tokenizer), end_of_turn_ids(model, tokenizer)
    problems = heldout_problems(size, seed)
    return {"off": tool_accuracy(generate, tokenizer, problems, stop_ids, None, max_new_tokens),
            "on": tool_accuracy(generate, tokenizer, problems, stop_ids, tools, max_new_tokens)}
