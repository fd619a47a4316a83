"""The SFT stage on a tiny Llama: validation loss falls, labels cover exactly the assistant's tokens, a
LoRA adapter merges into a model that generates, and a killed run resumes."""

import json
import subprocess
import sys

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge import chat, interrogate, merge, sft
from lmforge.lib import answers
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS, arithmetic, load_conversations
from tiny import save_tiny_model


FAST = [
    "--max_steps",
    "40",
    "--eval_steps",
    "1000",
    "--save_steps",
    "20",
    "--logging_steps",
    "10",
    "--per_device_train_batch_size",
    "8",
    "--max_length",
    "256",
    "--report_to",
    "none",
]
DATA = {
    "identity": {"generator": "identity", "size": 100},
    "arithmetic": {"generator": "arithmetic", "size": 200},
    "spelling": {"generator": "spelling", "size": 100},
}


@pytest.fixture(scope="session")
def base_model(tmp_path_factory):
    """A 2-layer Llama with a tokenizer trained on the demo conversations, saved like the pretrain stage."""
    path = tmp_path_factory.mktemp("pretrain")
    texts = [m["content"] for g in ("identity", "arithmetic", "spelling") for c in GENERATORS[g](seed=0) for m in c]
    return save_tiny_model(path, texts, vocab_size=512)


def run_sft(base_model, output_dir, *extra):
    argv = [
        "--config",
        "recipes/demo/sft.yaml",
        "--model_name_or_path",
        str(base_model),
        "--output_dir",
        str(output_dir),
        "--datasets",
        json.dumps(DATA),
        *FAST,
        *extra,
    ]
    return sft.main(*parse(sft.CONFIGS, argv))


@pytest.mark.slow
def test_sft_lowers_validation_loss_and_resumes(base_model, tmp_path):
    results = run_sft(base_model, tmp_path / "sft", "--eval_fraction", "0.1", "--attn_implementation", "eager")
    assert results["eval_loss_after"] < results["eval_loss_before"] - 0.5
    assert results["attn_implementation"] == "eager"  # the recipe's kernel reached the model
    assert (tmp_path / "sft" / "checkpoint-40").is_dir()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sft")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    card = (tmp_path / "sft" / "README.md").read_text()
    assert "Fine-tuned from the local model" in card and "licence" not in card and "huggingface.co/None" not in card
    assert f'pipeline("text-generation", model="{tmp_path / "sft"}"' in card  # never pushed: the local folder
    assert "`identity`" in card and "huggingface.co/datasets/identity" not in card  # a generator, not a Hub dataset
    # Run again: it finds checkpoint-40 and resumes there instead of training from the start.
    again = run_sft(base_model, tmp_path / "sft", "--eval_fraction", "0.1")
    assert again["resumed_from"].endswith("checkpoint-40") and again["eval_loss_before"] is None


def test_labels_mask_everything_but_assistant_turns(base_model, tmp_path):
    script_args, training_args = parse(
        sft.CONFIGS,
        [
            "--config",
            "recipes/demo/sft.yaml",
            "--model_name_or_path",
            str(base_model),
            "--output_dir",
            str(tmp_path),
            "--datasets",
            json.dumps({"identity": DATA["identity"]}),
            "--eval_strategy",
            "no",
            *FAST,
        ],
    )
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I'm Forge."},
    ]

    trainer = sft.SFTTrainer(
        model=str(base_model),
        args=training_args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"messages": [messages]}),
    )
    row = trainer.train_dataset[0]
    expected = "".join(f"{m['content']}<|im_end|>" for m in messages if m["role"] == "assistant")
    trained = [token for token, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tokenizer.decode(trained) == expected
    assert all(label in (-100, token) for token, label in zip(row["input_ids"], row["labels"]))
    # The collator pads labels with -100 too.
    batch = trainer.data_collator([row, {**row, "input_ids": row["input_ids"][:5], "labels": row["labels"][:5]}])
    assert (batch["labels"][1, 5:] == -100).all()


@pytest.mark.slow
def test_lora_adapter_merges_into_a_model_that_generates(base_model, tmp_path):
    results = run_sft(
        base_model,
        tmp_path / "lora",
        "--use_peft",
        "true",
        "--lora_r",
        "8",
        "--lora_alpha",
        "16",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--learning_rate",
        "1e-2",
        "--eval_fraction",
        "0.1",
    )
    assert results["eval_loss_after"] < results["eval_loss_before"]
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    merge.main(merge.MergeConfig(adapter_path=str(tmp_path / "lora"), output_dir=str(tmp_path / "merged")))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in model.named_parameters())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who are you?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert output.shape[1] > prompt["input_ids"].shape[1]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id


@pytest.mark.slow
def test_sft_trains_on_a_users_parquet_of_prompts_and_completions(base_model, tmp_path):
    """TRL's standard prompt-completion rows in a Parquet file, 40% of them taken: each becomes a user and an assistant
    turn, a hash of each holds some out, and the validation loss falls."""
    rows = [{"prompt": p["question"], "completion": p["solution"]} for p in arithmetic.problems(300, seed=2)]
    Dataset.from_list(rows).to_parquet(tmp_path / "mine.parquet")
    data = {"mine": {"path": str(tmp_path / "mine.parquet"), "weight": 0.4}}
    argv = ["--config", "recipes/demo/sft.yaml", "--model_name_or_path", str(base_model)]
    argv += ["--output_dir", str(tmp_path / "sft"), "--datasets", json.dumps(data), "--eval_fraction", "0.1", *FAST]
    results = sft.main(*parse(sft.CONFIGS, argv))
    mine = results["sources"]["mine"]
    assert mine["format"] == "prompt-completion" and mine["taken"] + mine["heldout"] == 120 and mine["heldout"] > 0
    assert results["eval_rows"] == mine["heldout"] and results["train_rows"] == mine["taken"]
    assert results["eval_loss_after"] < results["eval_loss_before"] - 0.5


def test_malformed_conversation_stops_or_is_dropped(base_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}],
    ]
    bad.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    source = json.dumps({"mine": {"path": "json", "data_files": str(bad)}})
    argv = [
        "--config",
        "recipes/demo/sft.yaml",
        "--model_name_or_path",
        str(base_model),
        "--output_dir",
        str(tmp_path / "out"),
        "--datasets",
        source,
        "--eval_fraction",
        "0",
        *FAST,
    ]
    with pytest.raises(
        sft.LmforgeError,
        match=r"datasets.mine: \S+bad.jsonl split train row 1: message 1 \(assistant\) has empty content",
    ):
        sft.main(*parse(sft.CONFIGS, argv + ["--invalid_rows", "stop"]))
    results = sft.main(*parse(sft.CONFIGS, argv + ["--invalid_rows", "drop", "--max_steps", "1"]))
    assert results["sources"]["mine"]["invalid_dropped"] == 1 and results["train_rows"] == 1


def test_interrogate_writes_refusals_for_unknown_questions(base_model, tmp_path, monkeypatch):
    questions = tmp_path / "qa.jsonl"
    rows = [{"question": f"Question {i}?", "answer": "known" if i < 3 else "unknown"} for i in range(5)]
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # A judge of the test's own, registered by name like any other: it knows which questions are known.
    monkeypatch.setitem(answers.MATCHERS, "by_truth", lambda reply, truth: truth == "known")
    config = interrogate.InterrogateConfig(
        model_name_or_path=str(base_model),
        questions=[str(questions)],
        judge="by_truth",
        samples=2,
        max_new_tokens=4,
        output_dir=str(tmp_path / "i"),
    )
    report = interrogate.main(config)
    assert (report["known"], report["unknown"], report["answer_rate_known"]) == (3, 2, 1.0)
    assert 0.0 <= report["refusal_rate_unknown"] <= 1.0
    refusals = tmp_path / "i" / "refusals.jsonl"
    dataset, _, _ = load_conversations({"refusals": {"path": "json", "data_files": str(refusals)}}, None, None)
    assert [m[0]["content"] for m in dataset["messages"]] == ["Question 3?", "Question 4?"]
    assert all("I don't know" in m[1]["content"] for m in dataset["messages"])
    # A rerun finds every question answered and asks nothing again.
    monkeypatch.setattr(interrogate, "ask", lambda *args: pytest.fail("asked again"))
    assert interrogate.main(config) == report


def test_judges_and_refusal_detection():
    truth = "Python is an interpreted, interactive, object-oriented programming language."
    assert answers.overlap("It is an interactive, interpreted programming language: Python.", truth)
    assert not answers.overlap("A snake.", truth)
    assert answers.exact("The Answer!", "answer") and answers.contains("it is 42, surely", "42")
    assert answers.is_refusal("Sorry, I don’t know.") and not answers.is_refusal("It is 42.")


@pytest.mark.slow
def test_chat_answers_piped_input_until_exit(base_model):
    command = [
        sys.executable,
        "-m",
        "lmforge.cli",
        "chat",
        "--config",
        "recipes/demo/chat.yaml",
        "--model_name_or_path",
        str(base_model),
        "--max_new_tokens",
        "5",
        "--seed",
        "0",
    ]
    result = subprocess.run(
        command, input="Hello\n/reset\nWho are you?\n/exit\nnever read\n", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "(new conversation)" in result.stdout and result.stdout.count("> ") == 4
    messages = chat.main(
        chat.ChatConfig(model_name_or_path=str(base_model), max_new_tokens=5, system_prompt="Hi."),
        lines=["Hello", "Who are you?"],
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
