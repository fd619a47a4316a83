"""Find what the model does not know, and teach it to say so.

    lmforge interrogate --config recipes/demo/interrogate.yaml

Every known-answer question (sources lmforge.lib.sources reads: files, folders, globs or Hub ids with `question`
and `answer`, such as data/demo/python_faq.jsonl and GSM8K, prompt-completion rows or conversations) is asked `samples` times with sampling; a judge from lib.answers.MATCHERS compares each reply with the true answer.
A question answered correctly in at least `known_threshold` of the samples is known; for every other
question the stage writes a refusal conversation ("I don't know ..."), a `messages` dataset that an SFT
recipe mixes in:
    datasets: {refusals: {path: json, data_files: runs/demo/interrogate/refusals.jsonl}}
Run it again on the retrained model to see the change in `report.json`: the rate of refusals on unknown
questions should rise while the rate of correct answers on known ones holds.

Outputs under `output_dir`: `answers.jsonl` (each question's replies and verdicts, appended as it goes:
a killed run resumes after the last question answered), `refusals.jsonl`, `report.json` (written last).
"""

import json
import os
from dataclasses import dataclass, field

import torch

from lmforge import LmforgeError
from lmforge.lib.answers import MATCHERS, is_refusal
from lmforge.lib.configs import parse
from lmforge.lib.files import write_json, write_jsonl
from lmforge.lib.models import load_for_generation
from lmforge.lib.sampling import sampling_field, sampling_options
from lmforge.lib.sources import load_questions


REFUSALS = [
    "I don't know the answer to that.",
    "I don't know. I'm not confident enough to answer that question.",
    "I'm not sure, and I'd rather not guess. I don't know the answer.",
]


@dataclass
class InterrogateConfig:
    model_name_or_path: str = field(default="runs/demo/sft", metadata={"help": "The assistant model to question."})
    questions: list[str] = field(
        default_factory=lambda: ["data/demo/python_faq.jsonl"],
        metadata={"help": "Sources of questions with answers (lib.sources): files, folders, globs or Hub ids."},
    )
    judge: str = field(default="overlap", metadata={"help": f"How replies are judged: {list(MATCHERS)}."})
    samples: int = field(default=4, metadata={"help": "Replies sampled per question."})
    known_threshold: float = field(default=0.5, metadata={"help": "Fraction of correct replies for 'known'."})
    limit: int = field(default=-1, metadata={"help": "Questions asked (-1: all); for quick tries."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message of every question."})
    max_new_tokens: int = sampling_field("max_new_tokens", 64)
    temperature: float = sampling_field("temperature", 0.8)
    top_p: float = sampling_field("top_p", 0.95)
    seed: int = 42
    output_dir: str = field(default="runs/demo/interrogate", metadata={"help": "Where the stage writes."})

    def __post_init__(self):
        if self.judge not in MATCHERS:
            raise LmforgeError(f"judge: {self.judge!r} is not one of {list(MATCHERS)}")
        sampling_options(self)


CONFIGS = (InterrogateConfig,)


def ask(model, tokenizer, question: str, config: InterrogateConfig) -> list[str]:
    """`config.samples` sampled replies to one question."""
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    messages.append({"role": "user", "content": question})
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    with torch.no_grad():
        output = model.generate(
            **prompt,
            **sampling_options(config),
            max_new_tokens=config.max_new_tokens,
            num_return_sequences=config.samples,
        )
    return tokenizer.batch_decode(output[:, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


def answered(path: str) -> list[dict]:
    """The records of questions already asked; a line cut short by a kill is dropped and rewritten."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    write_jsonl(path, records)
    return records


def report(records: list[dict], config: InterrogateConfig) -> dict:
    known = [r for r in records if r["known"]]
    unknown = [r for r in records if not r["known"]]

    def rate(group, key):
        replies = [verdict for record in group for verdict in record[key]]
        return sum(replies) / len(replies) if replies else None

    return {
        "model": config.model_name_or_path,
        "judge": config.judge,
        "questions": len(records),
        "known": len(known),
        "unknown": len(unknown),
        "samples_per_question": config.samples,
        "answer_rate_known": rate(known, "correct"),
        "refusal_rate_unknown": rate(unknown, "refused"),
        "refusal_rate_known": rate(known, "refused"),
        "answer_rate_unknown": rate(unknown, "correct"),
    }


def main(config: InterrogateConfig) -> dict:
    questions = [row for source in config.questions for row in load_questions(source, "questions")]
    questions = questions[: config.limit] if config.limit >= 0 else questions
    model, tokenizer = load_for_generation(config.model_name_or_path, "to ask questions with")
    judge = MATCHERS[config.judge]
    os.makedirs(config.output_dir, exist_ok=True)
    answers_path = os.path.join(config.output_dir, "answers.jsonl")
    records = answered(answers_path)
    with open(answers_path, "a", encoding="utf-8") as out:
        for index in range(len(records), len(questions)):
            row = questions[index]
            torch.manual_seed(config.seed + index)  # the same replies on a resumed run
            replies = ask(model, tokenizer, row["question"], config)
            correct = [judge(reply, row["answer"]) for reply in replies]
            record = {
                "question": row["question"],
                "answer": row["answer"],
                "replies": replies,
                "correct": correct,
                "refused": [is_refusal(reply) for reply in replies],
                "known": sum(correct) >= config.known_threshold * len(replies),
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            records.append(record)

    refusals = [
        {
            "messages": ([{"role": "system", "content": config.system_prompt}] if config.system_prompt else [])
            + [
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": REFUSALS[index % len(REFUSALS)]},
            ]
        }
        for index, r in enumerate(records)
        if not r["known"]
    ]
    refusals_path = os.path.join(config.output_dir, "refusals.jsonl")
    write_jsonl(refusals_path, refusals)
    results = report(records, config)
    write_json(os.path.join(config.output_dir, "report.json"), results)
    print(json.dumps(results, indent=2))
    return results


def cli(argv=None):
    (config,) = parse(CONFIGS, argv)
    main(config)


if __name__ == "__main__":
    cli()
