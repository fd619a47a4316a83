"""Stage 7, eval: every model of a run measured the same way, in one table with a column per model.

    lmforge eval --config recipes/demo/eval.yaml
    lmforge eval --config recipes/demo/eval.yaml --models '{"mine": {"path": "runs/x/sft", "kind": "assistant"}}'

The recipe lists models by name -> {path, kind}; the kind says what is measured, with the metric modules of
lmforge/metrics/ (`evaluate.Metric`s loaded by path, since the Hub's metric scripts are not needed offline):
    base       bits per byte on held-out web text: the data stage's documents that `lmforge.lib.documents.is_heldout`
               kept out of the tokenizer and of pretraining (bits_per_byte, as the pretrain stage measures it);
               samples: sampled continuations of held-out text (and of `text_files`), and greedy few-shot replies (lmforge.lib.fewshot) to the
               questions whose replies the assistants keep as samples, for the report to set side by side
    assistant  the same, plus on greedy replies to chat prompts: chat-format compliance (chat_compliance), accuracy
               on arithmetic problems from a seed no stage trains on (arithmetic_accuracy), answer rate on known
               questions and refusal rate on unknowable ones, judged as `lmforge interrogate` judges (refusals),
               and the mean score of `reward_model` on the replies when one is given; and accuracy on held-out
               arithmetic and counting problems with `tools` off and on, and tool calls per reply
               (tool_accuracy_off, tool_accuracy_on, tool_calls_per_reply: lmforge.lib.tools.generation.compare_tools)
    reward     pairwise accuracy on the held-out split of `lmforge label`'s preference pairs (pairwise_accuracy)
A model whose path does not exist (its stage was not run) is skipped with a note. Base models and assistants also
get the recipe's `benchmarks` (lmforge.lib.benchmarks: lm-eval), with before/after rows for a model `from` another.

Outputs under `output_dir`: `<model>.json` per model (metrics, sample replies and an assistant's whole tools
comparison; reused on a rerun while the model's files and the settings are unchanged, so a killed run goes on with
the next model), `samples/<model>/<benchmark>.jsonl` (lm-eval's record of every benchmark row), `results.json`
(every model and the skipped ones; written last) and `table.md` (one row per metric, then one per benchmark, one
column per model).
"""

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from transformers import EvalPrediction

from lmforge import LmforgeError
from lmforge.lib import benchmarks
from lmforge.lib.answers import MATCHERS, taught_accuracy
from lmforge.lib.chat_format import chat_format
from lmforge.lib.configs import exit_launched, from_json, parse
from lmforge.lib.conversations import arithmetic, identity, sums
from lmforge.lib.documents import is_heldout, iter_documents
from lmforge.lib.encoding import bits_per_byte as bits_per_byte_of_losses
from lmforge.lib.encoding import encode_text, token_losses, utf8_lengths
from lmforge.lib.fewshot import few_shot_ids, reply_text, stopping
from lmforge.lib.files import read_json, write_json, write_text
from lmforge.lib.loading import is_local
from lmforge.lib.metrics import load_metric
from lmforge.lib.models import load_for_generation, process_state
from lmforge.lib.rewards import reward_model
from lmforge.lib.sources import load_pairs, load_questions
from lmforge.lib.tables import FEW_SHOT, eval_table
from lmforge.lib.tools import load_tools
from lmforge.lib.tools.generation import GREEDY, compare_tools, generation_eos, model_generate


KINDS = ("base", "assistant", "reward")
CONTINUATION = {"do_sample": True, "temperature": 0.8, "top_k": 40}  # how a base model's samples are drawn


@dataclass
class EvalConfig:
    models: dict | str | None = field(
        default=None, metadata={"help": f"Name -> {{path, kind in {list(KINDS)}, from: model trained from}}."}
    )
    output_dir: str = field(default="runs/demo/eval", metadata={"help": "Where the results are written."})
    documents: list[str] = field(
        default_factory=lambda: ["runs/demo/data/documents/*.parquet"],
        metadata={"help": "Documents as the tokenizer and pack read them; their held-out ones are scored ([]: none)."},
    )
    text_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Plain-text files the pack stage also read (.txt, .txt.gz: the demo's books): a base model "
            "continues their held-out chunks too, as samples (bits per byte stays on the documents)."
        },
    )
    heldout_fraction: float = field(
        default=0.05, metadata={"help": "The tokenizer and pack stages' heldout_fraction (the same documents)."}
    )
    max_length: int = field(default=256, metadata={"help": "Tokens per scored window (capped at the context)."})
    batch_size: int = field(default=16, metadata={"help": "Windows, prompts or pairs per forward pass."})
    arithmetic_problems: int = field(default=32, metadata={"help": "Arithmetic problems asked (0: none)."})
    arithmetic_seed: int = field(
        default=3000,
        metadata={
            "help": "Seed of the problems: not SFT's or GRPO's (42), GRPO's held-out (1000) "
            "or rollouts' (1001), so they are new to every model."
        },
    )
    identity_name: str | None = field(
        default=None,
        metadata={
            "help": "The assistant's name: identity questions in phrasings no training row uses "
            "are asked, and a reply is right when it says the name (None: not asked)."
        },
    )
    sums_problems: int = field(
        default=0, metadata={"help": "Held-out questions asked per level of the sums ladder (0: none)."}
    )
    sums_levels: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Levels of the ladder."})
    known_questions: list[str] = field(
        default_factory=lambda: ["data/demo/python_faq.jsonl"],
        metadata={"help": "Sources of questions and answers SFT taught (lib.sources: files, folders, Hub ids)."},
    )
    known_limit: int = field(default=32, metadata={"help": "Known questions asked (-1: all)."})
    unknowable_questions: list[str] = field(
        default_factory=lambda: ["data/demo/unknowable_questions.jsonl"],
        metadata={"help": "Sources of questions no model can answer (private, future or made-up facts; lib.sources)."},
    )
    tools: list[str] = field(
        default_factory=lambda: ["python"],
        metadata={"help": "Tools of the tools-off / tools-on comparison of assistants ([]: no comparison)."},
    )
    tool_problems: int = field(
        default=32, metadata={"help": "Held-out arithmetic and counting problems of that comparison (0: none)."}
    )
    tool_seed: int = field(default=3001, metadata={"help": "Seed of those problems, one that no stage trains on."})
    judge: str = field(default="overlap", metadata={"help": f"How known answers are judged: {list(MATCHERS)}."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message of every chat prompt."})
    max_new_tokens: int = field(default=96, metadata={"help": "Longest reply; a reply cut here did not end its turn."})
    continuation_tokens: int = field(
        default=128, metadata={"help": "Length of a base model's sampled continuations (long enough for a scene)."}
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "Reward model that scores the assistants' replies (None: no score)."}
    )
    preferences: str = field(
        default="runs/demo/labels/preferences",
        metadata={"help": "Preference pairs for reward models: `lmforge label`'s, or any source (lib.sources)."},
    )
    preference_split: str = field(default="test", metadata={"help": "Split of the pairs that is scored."})
    preference_limit: int = field(default=256, metadata={"help": "Pairs scored (-1: all)."})
    samples: int = field(default=2, metadata={"help": "Replies kept per task and model for the report."})
    benchmarks: dict | str | None = field(
        default=None, metadata={"help": "Name -> {num_fewshot, metric, data, note, max_new_tokens}: lib.benchmarks."}
    )
    benchmark_limit: int | None = field(default=None, metadata={"help": "Rows per benchmark (None: all)."})
    benchmark_backend: str = field(default="hf", metadata={"help": "hf, or vllm (GPU, the vllm extra)."})

    def __post_init__(self):
        self.models = from_json(self.models, "models")
        if not self.models:
            raise LmforgeError("models: name at least one model, as name: {path: DIR, kind: base|assistant|reward}")
        for name, spec in self.models.items():
            if not isinstance(spec, dict) or not spec.get("path") or spec.get("kind") not in KINDS:
                raise LmforgeError(f"models.{name}: needs a path and a kind, one of {list(KINDS)} (got {spec!r})")
            if spec.get("from", name) not in self.models:
                raise LmforgeError(f"models.{name}.from: {spec['from']!r} is not one of the models")
        self.benchmarks = benchmarks.settings(from_json(self.benchmarks, "benchmarks"))
        if self.judge not in MATCHERS:
            raise LmforgeError(f"judge: {self.judge!r} is not one of {list(MATCHERS)}")


CONFIGS = (EvalConfig,)  # what `--config recipes/*/eval*.yaml` is parsed into


def heldout_texts(config: EvalConfig) -> list[str]:
    texts = [
        document["text"]
        for document in iter_documents(config.documents, [])
        if is_heldout(document["id"], config.heldout_fraction)
    ]
    if not texts:
        raise LmforgeError(f"heldout_fraction: {config.heldout_fraction} holds out no document of {config.documents}")
    return texts


def text_windows(token_ids: list[list[int]], bos_token_id: int, length: int) -> list[list[int]]:
    """Each text as <|bos|> + tokens, cut into windows of `length` that overlap by one token, so that every
    token after <|bos|> is predicted exactly once (the first token of a window is context only)."""
    windows = []
    for ids in token_ids:
        ids = [bos_token_id, *ids]
        windows += [ids[start : start + length] for start in range(0, max(len(ids) - 1, 1), length - 1)]
    return windows


@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> float:
    """Bits per UTF-8 byte of `texts`, computed by the same function as the pretrain stage's eval_bits_per_byte."""
    length = min(max_length, getattr(model.config, "max_position_embeddings", max_length))
    windows = text_windows(encode_text(tokenizer, texts), tokenizer.bos_token_id, length)
    losses, labels = [], []
    for start in range(0, len(windows), batch_size):
        # Padded to one length so that the batches concatenate; padding is labelled -100 and counts no byte.
        batch = tokenizer.pad(
            {"input_ids": windows[start : start + batch_size]},
            padding="max_length",
            max_length=length,
            padding_side="right",
            return_tensors="pt",
        )
        batch_labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch.to(model.device)).logits
        losses.append(token_losses(logits, batch_labels.to(model.device)).cpu())
        labels.append(batch_labels)
    prediction = EvalPrediction(predictions=torch.cat(losses).numpy(), label_ids=torch.cat(labels).numpy())
    scores = bits_per_byte_of_losses(prediction, load_metric("bits_per_byte"), utf8_lengths(tokenizer))
    return scores["bits_per_byte"]


def chat_prompts(config: EvalConfig) -> list[dict]:
    """The chat tasks, each row: messages, question (the user's), task, reference (the answer; "" for an unknowable
    question)."""
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []

    def row(question, task, reference):
        return {
            "messages": system + [{"role": "user", "content": question}],
            "question": question,
            "task": task,
            "reference": reference,
        }

    rows = [
        row(p["question"], "arithmetic", p["answer"])
        for p in arithmetic.problems(config.arithmetic_problems, config.arithmetic_seed)
    ]
    known = [pair for source in config.known_questions for pair in load_questions(source, "known_questions")]
    if config.known_limit >= 0:
        known = known[: config.known_limit]
    rows += [row(p["question"], "known", p["answer"]) for p in known]
    unknowable = [
        q for source in config.unknowable_questions for q in load_questions(source, "unknowable_questions", False)
    ]
    rows += [row(q["question"], "unknowable", "") for q in unknowable]
    if config.identity_name:
        rows += [row(q, "identity", config.identity_name) for q in identity.HELDOUT_QUESTIONS]
    rows += [
        row(p["question"], f"sums_{level}", str(p["answer"]))
        for level in config.sums_levels
        for p in sums.problems(config.sums_problems, config.arithmetic_seed, level, heldout=True)
    ]
    return rows


def sampled(rows: list[dict], per_task: int) -> list[int]:
    """Indices of the first `per_task` rows of each task: the rows whose replies are kept as samples."""
    seen, picked = Counter(), []
    for i, row in enumerate(rows):
        seen[row["task"]] += 1
        if seen[row["task"]] <= per_task:
            picked.append(i)
    return picked


def reply_ids_with_stop(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int, options: dict | None = None
) -> list[list[int]]:
    """Greedy continuation of each prompt: its token ids up to and including the token that stopped it; `options`
    go to `generate` and may replace greedy decoding (with stop strings, a row that stopped at one ends in padding)."""
    generate = model_generate(model, tokenizer, **(GREEDY | (options or {})))
    return [
        ids
        for start in range(0, len(prompts), batch_size)
        for ids in generate(prompts[start : start + batch_size], generation_eos(model), max_new_tokens)
    ]


def chat_metrics(model, tokenizer, config: EvalConfig) -> tuple[dict, list[dict]]:
    rows = chat_prompts(config)
    if not rows:
        return {}, []
    if not tokenizer.chat_template:  # an assistant is asked through its template
        raise LmforgeError(
            f"models: {tokenizer.name_or_path} is measured as an assistant but its tokenizer has no chat template; "
            "a base model is measured as `kind: base`"
        )
    prompts = [tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True)["input_ids"] for row in rows]
    ids = reply_ids_with_stop(model, tokenizer, prompts, config.max_new_tokens, config.batch_size)
    raw = tokenizer.batch_decode(ids, skip_special_tokens=False)  # what compliance looks at: the turn markers
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    sums = [i for i, row in enumerate(rows) if row["task"] == "arithmetic"]
    questions = [i for i, row in enumerate(rows) if row["task"] in ("known", "unknowable")]
    convention = chat_format(tokenizer)  # compliance is judged by the model's own turn markers
    results = load_metric("chat_compliance").compute(
        replies=raw, end_of_turn=convention.end_of_turn, turn_start=convention.turn_start
    )
    if sums:
        results["arithmetic_accuracy"] = load_metric("arithmetic_accuracy").compute(
            predictions=[texts[i] for i in sums], references=[rows[i]["reference"] for i in sums]
        )["accuracy"]
    if questions:
        results |= load_metric("refusals").compute(
            predictions=[texts[i] for i in questions],
            references=[rows[i]["reference"] for i in questions],
            judge=config.judge,
        )
    results |= taught_accuracy(rows, texts)
    if config.reward_model and Path(config.reward_model).exists():
        scores = reward_model(
            texts, prompts=[row["messages"] for row in rows], path=config.reward_model, batch_size=config.batch_size
        )
        results["reward_model_score"] = sum(scores) / len(scores)
    elif config.reward_model:
        print(f"eval: reward_model {config.reward_model} does not exist; no reward-model score")
    samples = [
        {"task": rows[i]["task"], "prompt": rows[i]["question"], "reply": raw[i]}
        for i in sampled(rows, config.samples)
    ]
    return results, samples


def tool_metrics(model, tokenizer, config: EvalConfig) -> tuple[dict, dict, list[dict]]:
    """Accuracy on held-out arithmetic and counting problems with the tools off and on, the whole comparison, and
    the first replies with the tools on as samples."""
    tools = load_tools(config.tools)
    comparison = compare_tools(model, tokenizer, tools, config.tool_problems, config.tool_seed, config.max_new_tokens)
    off, on = comparison["off"], comparison["on"]
    results = {"tool_accuracy_off": off["accuracy"], "tool_accuracy_on": on["accuracy"]}
    results["tool_calls_per_reply"] = on["mean_tool_calls"]
    samples = [{**reply, "task": "tools"} for reply in on["replies"][: config.samples]]
    return results, comparison, samples


def few_shot_samples(model, tokenizer, config: EvalConfig) -> list[dict]:
    """A base model's greedy few-shot replies (lmforge.lib.fewshot) to the questions whose replies the assistants keep
    as samples, so that the report can set them side by side."""
    rows = chat_prompts(config)
    questions = [rows[i]["question"] for i in sampled(rows, config.samples)]
    ids = reply_ids_with_stop(
        model,
        tokenizer,
        [few_shot_ids(tokenizer, question) for question in questions],
        config.max_new_tokens,
        config.batch_size,
        stopping(tokenizer),
    )
    return [
        {"task": FEW_SHOT, "prompt": question, "reply": reply_text(text)}
        for question, text in zip(questions, tokenizer.batch_decode(ids, skip_special_tokens=True))
    ]


def continuations(model, tokenizer, texts: list[str], config: EvalConfig) -> list[dict]:
    """A base model's sampled continuation of the first 32 tokens of a few held-out documents, and of as many held-out
    chunks of `text_files`. Sampled, as nanoGPT shows its Shakespeare: greedy decoding of a small model repeats one
    likely phrase forever, and hides whether it learned the shape of a document (speaker names, verse lines)."""
    chunks = [
        doc["text"] for doc in iter_documents([], config.text_files) if is_heldout(doc["id"], config.heldout_fraction)
    ]
    sources = {"documents": texts[: config.samples], "text_files": chunks[: config.samples]}
    tasks = [f"continuation ({source})" for source, starts in sources.items() for _ in starts]
    starts = [ids[:32] for ids in encode_text(tokenizer, sources["documents"] + sources["text_files"])]
    torch.manual_seed(0)  # the same samples on a rerun
    ids = reply_ids_with_stop(
        model,
        tokenizer,
        [[tokenizer.bos_token_id, *start] for start in starts],
        config.continuation_tokens,
        config.batch_size,
        CONTINUATION,
    )
    return [
        {"task": task, "prompt": tokenizer.decode(start), "reply": tokenizer.decode(reply)}
        for task, start, reply in zip(tasks, starts, ids)
    ]


def reward_metrics(path: str, config: EvalConfig) -> tuple[dict, str | None]:
    """Pairwise accuracy of a reward model on held-out preference pairs; a note instead when there are none."""
    pairs_path = Path(config.preferences)
    if is_local(config.preferences) and not pairs_path.exists():
        return {}, f"no preference pairs at {pairs_path} (run `lmforge label`)"
    splits, _ = load_pairs(config.preferences)
    if config.preference_split not in splits:
        raise LmforgeError(
            f"preference_split: {pairs_path} has no {config.preference_split!r} split (splits: {list(splits)})"
        )
    pairs = splits[config.preference_split]
    if config.preference_limit >= 0:
        pairs = pairs.select(range(min(config.preference_limit, len(pairs))))
    if len(pairs) == 0:
        return {}, f"{pairs_path} has no {config.preference_split} pairs"
    chosen, rejected = (
        reward_model(pairs[column], prompts=pairs["prompt"], path=path, batch_size=config.batch_size)
        for column in ("chosen", "rejected")
    )
    results = load_metric("pairwise_accuracy").compute(chosen_scores=chosen, rejected_scores=rejected)
    return results | {"pairs": len(pairs)}, None


def evaluate_model(spec: dict, config: EvalConfig, samples_dir: Path) -> dict:
    start = time.perf_counter()
    metrics, samples, tools, note, scored = {}, [], None, None, {}
    if spec["kind"] == "reward":
        metrics, note = reward_metrics(spec["path"], config)
    else:
        model, tokenizer = load_for_generation(spec["path"])
        texts = heldout_texts(config) if config.documents else []  # documents: [] (no data stage), no bits per byte
        if texts:
            metrics["bits_per_byte"] = bits_per_byte(model, tokenizer, texts, config.max_length, config.batch_size)
        if spec["kind"] == "assistant":
            chat, samples = chat_metrics(model, tokenizer, config)
            metrics |= chat
            if config.tools and config.tool_problems:
                scores, tools, tool_samples = tool_metrics(model, tokenizer, config)
                metrics, samples = metrics | scores, samples + tool_samples
        else:
            samples = continuations(model, tokenizer, texts, config) + few_shot_samples(model, tokenizer, config)
        if config.benchmarks:
            lm = benchmarks.language_model(model, tokenizer, config.batch_size, config.benchmark_backend, spec["path"])
            scored = benchmarks.run(
                lm, tokenizer, spec["kind"], config.benchmarks, config.benchmark_limit, samples_dir
            )
    return {
        **spec,
        "metrics": metrics,
        "benchmarks": scored,
        "samples": samples,
        "tools": tools,
        "note": note,
        "seconds": round(time.perf_counter() - start, 1),
    }


def fingerprint(spec: dict, config: EvalConfig) -> str:
    """What a model's results depend on: every setting but the model list, and the files (names, sizes, times) of
    the model, the reward model and the preference pairs, so that retraining any of them measures anew."""
    settings = {key: value for key, value in asdict(config).items() if key not in ("models", "output_dir")}
    files = [
        sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())
        for folder in (spec["path"], config.reward_model, config.preferences)
        if folder and Path(folder).is_dir()
    ]
    return hashlib.sha256(json.dumps([spec, settings, files]).encode()).hexdigest()


def main(config: EvalConfig) -> dict:
    """Under `accelerate launch` every process measures every model (each is loaded whole on its device) and scores
    its share of each benchmark's rows; the main process writes, and the others return its results."""
    return broadcast_object_list([measure(config, writes=process_state().is_main_process)])[0]


def measure(config: EvalConfig, writes: bool = True) -> dict:
    benchmarks.check_sources(config.benchmarks)
    output_dir = Path(config.output_dir)
    models, skipped = {}, {}
    for name, spec in config.models.items():
        if is_local(spec["path"]) and not Path(spec["path"]).exists():
            skipped[name] = f"{spec['path']} does not exist (stage not run)"
            print(f"eval: {name}: skipped, {skipped[name]}")
            continue
        path, stamp = output_dir / f"{name}.json", fingerprint(spec, config)
        if path.is_file() and read_json(path).get("fingerprint") == stamp:
            print(f"eval: {name}: unchanged since {path}, reused")
            models[name] = read_json(path)
            continue
        print(f"eval: {name} ({spec['kind']}) {spec['path']}")
        models[name] = evaluate_model(spec, config, output_dir / "samples" / name) | {"fingerprint": stamp}
        if writes:
            write_json(path, models[name])
    results = {"models": models, "skipped": skipped}
    if writes:
        write_text(output_dir / "table.md", eval_table(results) + "\n")
        write_json(output_dir / "results.json", results)
        print(eval_table(results))
    return results


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)
    exit_launched()


if __name__ == "__main__":
    cli()
