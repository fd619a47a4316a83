"""Bring your own model: tiny random models with each family's chat convention, built offline, go through SFT
(assistant-only labels), merge, chat and the RL stages, and every stage stops where the model's turn ends.

Tokenizers are byte-level BPEs trained here with each family's control tokens. Templates: lmforge's own
(ChatML with {% generation %}), a SmolLM2-style ChatML with a default system prompt and no markers, Mistral's
[INST] format (written from its documented format), and the Llama 3, Gemma and Qwen 2.5 originals that TRL
keeps for identifying them (what those models ship); a GPT-2-style base has no template at all.
"""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict, load_from_disk
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

import test_rl
from lmforge import LmforgeError, chat, dpo, grpo, merge, ppo, reward, rollouts, sft
from lmforge import eval as lmforge_eval
from lmforge.lib import chat_format
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS
from lmforge.lib.metrics import load_metric
from lmforge.lib.rl_eval import chat_tokenizer
from lmforge.lib.tools.generation import end_of_turn_ids
from lmforge.tokenizer import train_tokenizer


TRL = chat_format.TRL_TEMPLATES
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2-Instruct's template: ChatML, a default system prompt, no {% generation %} markers.
SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Mistral-7B-Instruct-v0.1's documented format: <s>[INST] user [/INST]assistant</s>[INST] ...
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# name: (control tokens, bos, eos, pad, template, architecture, end of turn, training template source, masked turn)
FAMILIES = {
    "chatml_marked": (None, None, None, None, None, "llama", "<|im_end|>", "model", "{}<|im_end|>"),
    "chatml": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        SMOLLM_TEMPLATE,
        "llama",
        "<|im_end|>",
        "lmforge:chatml",
        "{}<|im_end|>",
    ),
    "llama3": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|end_of_text|>",
        (TRL / "llama3.jinja").read_text(),
        "llama",
        "<|eot_id|>",
        "trl",
        "{}<|eot_id|>",
    ),
    "gemma": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        "<pad>",
        (TRL / "gemma.jinja").read_text(),
        "qwen2",
        "<end_of_turn>",
        "trl",
        "{}<end_of_turn>\n",
    ),
    "mistral": (
        ["<unk>", "<s>", "</s>"],
        "<s>",
        "</s>",
        None,
        MISTRAL_TEMPLATE,
        "llama",
        "</s>",
        "lmforge:mistral",
        "{}</s>",
    ),
    "qwen2_5": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|im_end|>",
        "<|endoftext|>",
        (TRL / "qwen2_5.jinja").read_text(),
        "qwen2",
        "<|im_end|>",
        "trl",
        "\n{}<|im_end|>\n",
    ),
    "gpt2_base": (
        ["<|endoftext|>"],
        "<|endoftext|>",
        "<|endoftext|>",
        None,
        None,
        "gpt2",
        "<|im_end|>",
        "lmforge:chatml",
        "{}<|im_end|>",
    ),
}
CONVERSATION = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I'm Forge."},
]
TRAINER = [*test_rl.TRAINER, "--save_steps", "1000"]  # the RL tests' CPU settings, no checkpoints
HELDOUT = [
    "--heldout_tasks",
    json.dumps({"arithmetic": 2}),
    "--heldout_max_new_tokens",
    "6",
    "--watch_prompts",
    "2",
    "--watch_max_new_tokens",
    "6",
    "--watch_every",
    "1000",
]


def texts():
    return [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0, size=60) for m in c]


def build_tokenizer(family: str):
    controls, bos, eos, pad, template = FAMILIES[family][:5]
    if controls is None:
        return train_tokenizer(texts(), vocab_size=400)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=controls,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )


def save_model(path: Path, family: str) -> Path:
    tokenizer = build_tokenizer(family)
    sizes = {
        "llama": dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
        ),
        "qwen2": dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
        ),
        "gpt2": dict(n_embd=32, n_layer=1, n_head=4, n_positions=256),
    }
    architecture = FAMILIES[family][5]
    # Room for tokens a tokenizer class adds on loading (Qwen2's tokenizer adds its unk token to Gemma's vocabulary).
    config = AutoConfig.for_model(
        architecture,
        vocab_size=len(tokenizer) + 16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes[architecture],
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gpt2_base"])
def test_the_convention_comes_from_the_template(family):
    tokenizer = build_tokenizer(family)
    end, source, masked = FAMILIES[family][6:]
    convention = chat_format.chat_format(tokenizer)
    assert convention.end_of_turn == end
    assert convention.tool_markers == (family == "chatml_marked")
    template, found = chat_format.training_template(tokenizer)
    assert found == source
    assert chat_format.renders_identically(tokenizer, template)
    # The loss mask covers exactly what the assistant writes, its end of turn included.
    rendered = tokenizer.apply_chat_template(
        CONVERSATION, chat_template=template, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert tokenizer.decode(trained) == "".join(masked.format(m["content"]) for m in CONVERSATION[1::2])


def test_default_system_prompt_and_turn_markers_are_found():
    smollm, gemma, llama3 = (build_tokenizer(f) for f in ("chatml", "gemma", "llama3"))
    assert chat_format.default_system_prompt(smollm) == SMOLLM_SYSTEM
    assert chat_format.default_system_prompt(gemma) is None  # refuses system messages: injects none
    assert "You are Qwen" in chat_format.default_system_prompt(build_tokenizer("qwen2_5"))
    assert (chat_format.turn_start(smollm), chat_format.turn_start(gemma), chat_format.turn_start(llama3)) == (
        "<|im_start|>",
        "<start_of_turn>",
        "<|start_header_id|>",
    )
    assert chat_format.generation_prompt(llama3) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert chat_format.generation_prompt(build_tokenizer("mistral")) == ""


def test_refusals_name_the_ways_forward():
    base = build_tokenizer("gpt2_base")
    with pytest.raises(LmforgeError, match="no chat template.*chat_template_path"):
        chat_format.chat_format(base, "gpt2")
    base.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(LmforgeError, match="no known training equivalent.*chat_template_path.*assistant_only_loss"):
        chat_format.training_template(base, "odd")


def run_sft(model_path, output_dir, *extra):
    """SFT until the model has memorised one short reply (so greedy decoding ends its turn)."""
    rows = [
        [{"role": "user", "content": f"What is {i}+{i}?"}, {"role": "assistant", "content": "Four."}] for i in range(8)
    ]
    data = Path(output_dir).parent / f"{Path(output_dir).name}.jsonl"
    data.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    argv = [
        "--config",
        "recipes/demo/sft_lora.yaml",
        "--model_name_or_path",
        str(model_path),
        "--output_dir",
        str(output_dir),
        "--datasets",
        json.dumps({"four": {"path": "json", "data_files": str(data)}}),
        "--max_steps",
        "30",
        "--learning_rate",
        "2e-2",
        "--warmup_steps",
        "0",
        "--per_device_train_batch_size",
        "8",
        "--eval_fraction",
        "0",
        "--eval_strategy",
        "no",
        "--max_length",
        "128",
        *TRAINER,
        *extra,
    ]
    return sft.main(*parse(sft.CONFIGS, argv))


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_stage_stops_at_the_models_end_of_turn(family, tmp_path):
    base = save_model(tmp_path / "base", family)
    end = FAMILIES[family][6]
    extra = ["--lora_target_modules", "all-linear", "--lora_modules_to_save", "lm_head"]
    if family == "gpt2_base":  # no template: give it ChatML, whose new tokens need full fine-tuning
        extra = ["--chat_template_path", "chatml", "--use_peft", "false", "--max_steps", "60"]
    results = run_sft(base, tmp_path / "sft", *extra)
    assert results["chat_template"]["end_of_turn"] == end
    model_dir = tmp_path / "sft"
    if family != "gpt2_base":
        merge.main(merge.MergeConfig(adapter_path=str(model_dir), output_dir=str(tmp_path / "merged")))
        assert "base_model" not in (tmp_path / "merged" / "README.md").read_text().split("---")[1]
        model_dir = tmp_path / "merged"
    tokenizer = chat_tokenizer(str(model_dir))
    assert tokenizer.eos_token == end
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert tokenizer.convert_tokens_to_ids(end) in end_of_turn_ids(model, tokenizer)
    # Chat stops at the end of the turn the model learnt, not at the length limit.
    messages = chat.main(
        chat.ChatConfig(model_name_or_path=str(model_dir), max_new_tokens=20, do_sample=False), lines=["What is 3+3?"]
    )
    assert messages[-1]["content"] == "Four."

    preferences = tmp_path / "preferences"
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
            "chosen": [{"role": "assistant", "content": "Four."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }
        for i in range(8)
    ]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:2])}).save_to_disk(preferences)
    recipe = yaml.safe_load(Path("recipes/demo/dpo.yaml").read_text()) | {"heldout_reward_model": None}
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(recipe))
    results = dpo.main(
        *parse(
            dpo.CONFIGS,
            [
                "--config",
                str(tmp_path / "dpo.yaml"),
                "--model_name_or_path",
                str(model_dir),
                "--preferences",
                str(preferences),
                "--output_dir",
                str(tmp_path / "dpo"),
                "--max_steps",
                "2",
                "--eval_strategy",
                "no",
                "--per_device_train_batch_size",
                "4",
                "--max_length",
                "256",
                *HELDOUT,
                *TRAINER,
            ],
        )
    )
    assert results["eval"]["after"]["mean_length"] <= 6
    results = grpo.main(
        *parse(
            grpo.CONFIGS,
            [
                "--config",
                "recipes/demo/grpo.yaml",
                "--model_name_or_path",
                str(model_dir),
                "--output_dir",
                str(tmp_path / "grpo"),
                "--tasks",
                json.dumps({"arithmetic": 8}),
                "--max_steps",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--num_generations",
                "4",
                "--max_completion_length",
                "8",
                *HELDOUT,
                *TRAINER,
            ],
        )
    )
    assert (tmp_path / "grpo" / "grpo_results.json").is_file()
    # The saved policy keeps the SFT tokenizer, its turn still ends where the model's does.
    assert chat_format.end_of_turn(AutoTokenizer.from_pretrained(tmp_path / "grpo")) == end
    if family in ("llama3", "gemma"):
        rollouts_reward_and_eval(model_dir, family, preferences, tmp_path)


def rollouts_reward_and_eval(model_dir, family, preferences, tmp_path):
    """Rollouts end where the model's turn does, the reward model trains on pairs in the model's template, and eval
    judges compliance by the model's own end of turn."""
    end, turn_start = FAMILIES[family][6], chat_format.turn_start(chat_tokenizer(str(model_dir)))
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "What is 3+3?"}) + "\n")
    config = rollouts.RolloutsConfig(
        model=str(model_dir),
        num_responses=2,
        max_new_tokens=20,
        temperature=0.05,
        prompts={"q": {"path": "json", "data_files": str(tmp_path / "prompts.jsonl")}},
        output_dir=str(tmp_path / "rollouts"),
    )
    row = load_from_disk(str(rollouts.main(config)))[0]
    assert row["responses"] == ["Four."] * 2 and row["finished"] == [True] * 2  # no end of turn, no next turn

    results = reward.main(
        *parse(
            reward.CONFIGS,
            [
                "--config",
                "recipes/demo/reward.yaml",
                "--model_name_or_path",
                str(model_dir),
                "--preferences",
                str(preferences),
                "--output_dir",
                str(tmp_path / "reward"),
                "--max_steps",
                "2",
                "--eval_strategy",
                "no",
                "--per_device_train_batch_size",
                "4",
                "--max_length",
                "128",
                *TRAINER,
            ],
        )
    )
    assert results["heldout_accuracy"] is not None
    scorer = AutoTokenizer.from_pretrained(tmp_path / "reward")  # pairs are rendered, and ended, its way
    assert chat_format.end_of_turn(scorer) == end and end in chat_format.render(scorer, CONVERSATION)

    documents = tmp_path / "documents.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": str(i), "text": "What is 2+2? Four."} for i in range(4)]), documents)
    results = lmforge_eval.main(
        lmforge_eval.EvalConfig(
            models={"sft": {"path": str(model_dir), "kind": "assistant"}},
            output_dir=str(tmp_path / "eval"),
            documents=[str(documents)],
            heldout_fraction=1.0,
            arithmetic_problems=2,
            known_limit=0,
            unknowable_questions=[],
            tools=[],
            max_new_tokens=20,
            preference_limit=0,
        )
    )
    assert results["models"]["sft"]["metrics"]["compliance"] == 1.0  # "Four." + the family's end of turn
    metric = load_metric("chat_compliance")
    assert metric.compute(replies=[f"Four.{end}"], end_of_turn=end, turn_start=turn_start)["compliance"] == 1.0
    assert metric.compute(replies=["Four.<|im_end|>"], end_of_turn=end, turn_start=turn_start)["compliance"] == 0.0


@pytest.mark.slow
def test_ppo_with_a_llama3_convention(tmp_path):
    base = save_model(tmp_path / "base", "llama3")
    run_sft(base, tmp_path / "sft", "--use_peft", "false")
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "sft", num_labels=1)
    reward.config.pad_token_id = reward.config.pad_token_id or 0
    reward.save_pretrained(tmp_path / "reward")
    AutoTokenizer.from_pretrained(tmp_path / "sft").save_pretrained(tmp_path / "reward")
    results = ppo.main(
        *parse(
            ppo.CONFIGS,
            [
                "--config",
                "recipes/demo/ppo.yaml",
                "--sft_model_path",
                str(tmp_path / "sft"),
                "--reward_model_path",
                str(tmp_path / "reward"),
                "--output_dir",
                str(tmp_path / "ppo"),
                "--tasks",
                json.dumps({"arithmetic": 8}),
                "--total_episodes",
                "8",
                "--per_device_train_batch_size",
                "4",
                "--local_rollout_forward_batch_size",
                "4",
                "--response_length",
                "8",
                "--num_ppo_epochs",
                "1",
                *HELDOUT,
                *TRAINER,
            ],
        )
    )
    assert results["eval"]["after"] is not None
    assert chat_format.end_of_turn(AutoTokenizer.from_pretrained(tmp_path / "ppo")) == "<|eot_id|>"


@pytest.mark.slow
def test_a_default_system_prompt_warns_and_the_recipe_decides(tmp_path):
    base = save_model(tmp_path / "base", "chatml")
    with pytest.warns(UserWarning, match="named SmolLM.*system_prompt"):
        results = run_sft(base, tmp_path / "a", "--max_steps", "1")
    assert results["chat_template"]["rows_without_system_prompt"] == 8
    results = run_sft(base, tmp_path / "b", "--max_steps", "1", "--system_prompt", "You are Forge.")
    assert results["chat_template"]["rows_without_system_prompt"] == 0
