"""Rollouts: K sampled responses per prompt from a chat model, the raw material of preference data.

    lmforge rollouts --config recipes/demo/rollouts.yaml
    lmforge rollouts --config recipes/demo/rollouts.yaml --model runs/demo/sft --num_responses 8

Prompts come from `prompts`, a mapping from a name to a source, as in the SFT recipe: a generator of
lmforge.lib.conversations (`{generator: arithmetic, size: 40, seed: 1000}`; give a seed other than SFT's so
the prompts are new to the model) or any source lmforge.lib.sources reads (a file, folder, glob or Hub id, or
`load_dataset` keywords such as `{path: json, data_files: f.jsonl}`) in TRL's prompt-only format (`prompt`, text
or messages), prompt-completion format (the completion kept as the `reference` answer) or conversational format
(`messages`, whose last assistant turn is dropped and kept as the reference). Each prompt goes through the model's chat template
with the generation prompt, and K responses are sampled with the recipe's settings; with `tools`, the calls a
response makes run as it is sampled and their results become part of it.

Prompts are sampled `prompts_per_batch` at a time (all their K responses in one batch), the batch of prompts
i, i+1, ... with seed `seed + i`, so a prompt's responses do not depend on which batches were sampled before
it: a resumed run gives what an uninterrupted one would have. Each finished prompt is appended to
`rollouts.jsonl` (flushed and synced) and a restarted run skips the prompts found there; a batch cut short is
sampled again whole (the same prompts and seed, so the same responses) and only its missing prompts written.

Outputs under `output_dir`: `settings.json` (model, sampling settings, prompt sources; a restart with
other settings is refused), `rollouts.jsonl` (progress), and `dataset/`, written last and atomically,
with columns prompt_id, prompt (messages), task (the source's generator or name), reference, responses,
finished (whether each response ended its turn), seed and model.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import set_seed

from lmforge import LmforgeError
from lmforge.lib.configs import parse
from lmforge.lib.conversations import check_conversation, load_source
from lmforge.lib.files import recover_dir, staged_dir, write_json
from lmforge.lib.models import load_for_generation
from lmforge.lib.sampling import sampling_field, sampling_options
from lmforge.lib.sources import named_sources
from lmforge.lib.tools import load_tools
from lmforge.lib.tools.generation import end_of_turn_ids, generate_with_tools, model_generate, prompt_tools


@dataclass
class RolloutsConfig:
    model: str = field(default="runs/demo/sft", metadata={"help": "Chat model directory or Hub id."})
    prompts: dict | str | None = field(
        default=None,
        metadata={"help": "Name -> source: {generator: NAME, ...options} or a file, folder, glob or Hub id."},
    )
    num_responses: int = field(default=4, metadata={"help": "K: responses sampled per prompt."})
    max_new_tokens: int = sampling_field("max_new_tokens", 128)
    temperature: float = sampling_field("temperature", 1.0, "Above 0: rollouts must differ to be ranked.")
    top_k: int = sampling_field("top_k", 0)
    top_p: float = sampling_field("top_p", 1.0)
    seed: int = field(default=0, metadata={"help": "The batch of prompts from i on is sampled with seed + i."})
    prompts_per_batch: int = field(
        default=1, metadata={"help": "Prompts whose K responses are sampled together (K x this many rows)."}
    )
    tools: list[str] = field(
        default_factory=list, metadata={"help": "Tools whose calls run while sampling: python, search."}
    )
    max_tool_calls: int = field(default=4, metadata={"help": "Tool calls allowed in one response."})
    output_dir: str = "runs/demo/rollouts"

    def __post_init__(self):
        self.prompts = named_sources(self.prompts, "prompts")
        if not self.prompts:
            raise LmforgeError("prompts: no prompt sources given")
        if self.num_responses < 2:
            raise LmforgeError(f"num_responses: {self.num_responses}; ranking needs at least 2 responses")
        sampling_options(self)  # rollouts are always sampled: temperature 0 fails here


CONFIGS = (RolloutsConfig,)


def load_prompts(sources: dict) -> list[dict]:
    """Unique prompts of every source, in order: {prompt: messages, task, reference}."""
    rows, seen = [], set()
    for name, spec in sources.items():
        for index, row in enumerate(source_rows(name, dict(spec))):
            problem = check_prompt(row["prompt"])
            if problem:
                raise LmforgeError(f"prompts {name!r} row {index}: {problem}")
            key = json.dumps(row["prompt"])
            if key not in seen:  # generators repeat short questions; a prompt is ranked once
                seen.add(key)
                rows.append(row)
    return rows


def source_rows(name: str, spec: dict) -> list[dict]:
    """A source's prompts (lmforge.lib.sources, or a generator's conversations): a conversation's last assistant turn
    or a completion is kept as the reference."""
    task = spec.get("generator", name)
    return [split_conversation(messages, task) for messages in load_source(name, spec, seed=0, key="prompts")]


def split_conversation(messages: list, task: str) -> dict:
    """A conversation without its final assistant turn, which becomes the reference answer."""
    if messages and messages[-1].get("role") == "assistant":
        return {"prompt": messages[:-1], "task": task, "reference": messages[-1]["content"]}
    return {"prompt": messages, "task": task, "reference": None}


def check_prompt(prompt) -> str | None:
    """A prompt is a valid conversation that ends with a user turn, for the model to answer."""
    if not isinstance(prompt, list) or not prompt or not isinstance(prompt[-1], dict):
        return "prompt must be a non-empty list of messages"
    if prompt[-1].get("role") != "user":
        return f"prompt must end with a user message, not {prompt[-1].get('role')!r}"
    # check_conversation wants a final assistant turn: give it a placeholder.
    return check_conversation(prompt + [{"role": "assistant", "content": "-"}])


def sample_responses(
    model, tokenizer, prompts: list[list], config: RolloutsConfig, seed: int, tools: dict | None = None
) -> list[tuple[list, list]]:
    """K responses to each prompt, sampled in one batch, and whether each ended its turn (rather than running out of
    tokens). With `tools`, calls run as they are written and a response holds the calls and their results
    (lmforge.lib.tools.generation)."""
    ids = [
        tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, sanitize_control_tokens=True, tools=prompt_tools(tokenizer, tools)
        )["input_ids"]
        for prompt in prompts
    ]
    stops = end_of_turn_ids(model, tokenizer)
    generate = model_generate(model, tokenizer, **sampling_options(config))
    set_seed(seed)
    rows = [prompt_ids for prompt_ids in ids for _ in range(config.num_responses)]
    turns = generate_with_tools(generate, tokenizer, rows, tools, stops, config.max_new_tokens, config.max_tool_calls)
    responses, finished = [], []
    for row in (turn.ids for turn in turns):
        # The turn ends at its last token (a Hub model's tool calls end turns inside it, the template's way).
        end = len(row) - 1 if row and row[-1] in stops else None
        # Special tokens stay in the text: a response that opens a new turn (<|im_start|>user) must show it.
        responses.append(tokenizer.decode(row[:end]))
        finished.append(end is not None)
    k = config.num_responses
    return [(responses[i : i + k], finished[i : i + k]) for i in range(0, len(responses), k)]


def read_done(path: Path) -> dict[int, dict]:
    """Rows already written, by prompt id. A line cut by a kill is dropped, with everything after it."""
    done, good_bytes = {}, 0
    if not path.exists():
        return done
    with path.open("rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not line.endswith(b"\n"):
                break
            done[row["prompt_id"]] = row
            good_bytes += len(line)
    if good_bytes != path.stat().st_size:
        os.truncate(path, good_bytes)
    return done


def write_dataset(rows: list[dict], path: Path) -> None:
    """save_to_disk under a temporary name, then swap it in: `path` is the old dataset or the new, never a part."""
    with staged_dir(path) as staging:
        Dataset.from_list(rows).save_to_disk(staging)


def check_settings(path: Path, settings: dict) -> None:
    if path.exists() and json.loads(path.read_text()) != settings:
        raise LmforgeError(f"{path}: this output_dir holds rollouts made with other settings; use another output_dir")
    if not path.exists():
        write_json(path, settings)


def main(config: RolloutsConfig) -> Path:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recover_dir(output_dir / "dataset")  # a previous run killed while it swapped the dataset in
    prompts = load_prompts(config.prompts)
    model, tokenizer = load_for_generation(config.model, "(rollouts need a chat model)")
    tools = load_tools(config.tools)
    check_settings(output_dir / "settings.json", {k: v for k, v in asdict(config).items() if k != "output_dir"})
    progress = output_dir / "rollouts.jsonl"
    done = read_done(progress)
    start = time.time()
    with progress.open("a") as f:
        for first in range(0, len(prompts), config.prompts_per_batch):
            batch = range(first, min(first + config.prompts_per_batch, len(prompts)))
            if all(prompt_id in done for prompt_id in batch):
                continue
            seed = config.seed + first
            sampled = sample_responses(model, tokenizer, [prompts[i]["prompt"] for i in batch], config, seed, tools)
            for prompt_id, (responses, finished) in zip(batch, sampled):
                if prompt_id in done:  # written before a kill cut this batch short
                    continue
                done[prompt_id] = {
                    "prompt_id": prompt_id,
                    **prompts[prompt_id],
                    "responses": responses,
                    "finished": finished,
                    "seed": seed,
                    "model": config.model,
                }
                f.write(json.dumps(done[prompt_id], ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())  # the line survives a kill or power loss: a restart will not sample it again
    write_dataset([done[i] for i in range(len(prompts))], output_dir / "dataset")
    print(
        f"rollouts: {len(prompts)} prompts x {config.num_responses} responses in {time.time() - start:.0f} s "
        f"-> {output_dir / 'dataset'}"
    )
    return output_dir / "dataset"


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
