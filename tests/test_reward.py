"""The reward stage on a tiny Llama: pairs ranked by the judges (well-formed answers above looping or
runaway ones) train a reward model that scores held-out chosen above rejected, and a rerun resumes."""

import json

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from trl.experimental.utils import get_reward

from lmforge import label, reward
from lmforge.cli import main as lmforge
from lmforge.lib import chat_format, rewards
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS, arithmetic
from tiny import save_tiny_model


FAST = [
    "--max_steps",
    "60",
    "--save_steps",
    "30",
    "--eval_steps",
    "1000",
    "--logging_steps",
    "10",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "1e-3",
    "--max_length",
    "256",
    "--report_to",
    "none",
]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A random 2-layer Llama with the lmforge tokenizer, saved as a causal LM like the SFT stage."""
    path = tmp_path_factory.mktemp("base")
    texts = [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0) for m in c]
    return save_tiny_model(path, texts, vocab_size=512)


@pytest.fixture(scope="module")
def preferences(tmp_path_factory):
    """Demo-like pairs: rollouts of arithmetic prompts ranked by the judges and exported by `lmforge label`."""
    path = tmp_path_factory.mktemp("labels")
    rows = []
    for prompt_id, problem in enumerate(arithmetic.problems(size=90, seed=5)):
        first_step = problem["solution"].splitlines()[0]
        responses = [
            problem["solution"],  # well-formed and right
            " ".join([first_step] * 6),  # loops
            first_step + "\n<|im_start|>user\nAnd then?",
        ]  # writes the user's turn, never ends its own
        rows.append(
            {
                "prompt_id": prompt_id,
                "prompt": [{"role": "user", "content": problem["question"]}],
                "task": "arithmetic",
                "reference": problem["solution"],
                "responses": responses,
                "finished": [True, True, False],
                "seed": prompt_id,
                "model": "fixture",
            }
        )
    Dataset.from_list(rows).save_to_disk(path / "rollouts")
    label.main(
        *parse(
            label.CONFIGS,
            [
                "--config",
                "recipes/demo/label.yaml",
                "--rollouts",
                str(path / "rollouts"),
                "--output_dir",
                str(path),
                "--test_fraction",
                "0.2",
            ],
        )
    )
    return path / "preferences"


def run_reward(base_model, preferences, output_dir, *extra):
    argv = [
        "--config",
        "recipes/demo/reward.yaml",
        "--model_name_or_path",
        str(base_model),
        "--preferences",
        str(preferences),
        "--output_dir",
        str(output_dir),
        *FAST,
        *extra,
    ]
    return reward.main(*parse(reward.CONFIGS, argv))


def test_judged_pairs_have_the_expected_shape(preferences):
    pairs = load_from_disk(str(preferences))
    assert len(pairs["train"]) + len(pairs["test"]) == 90 * 3  # 3 responses, no ties: 3 pairs per prompt
    assert len(pairs["test"]) == 18 * 3 and set(pairs["train"]["source"]) == {"judge"}


@pytest.mark.slow
def test_reward_model_ranks_heldout_pairs_and_resumes(base_model, preferences, tmp_path):
    results = run_reward(base_model, preferences, tmp_path, "--attn_implementation", "eager")
    assert results["heldout_accuracy"] >= 0.9 > results["heldout_accuracy_before"] + 0.2
    assert results["attn_implementation"] == "eager"  # the recipe's kernel reached the model
    assert results["pair_sources"] == ["judge"]
    saved = json.loads((tmp_path / "rewards.json").read_text())
    assert len(saved["heldout_rewards"]["chosen"]) == results["test_pairs"] == 54
    assert (tmp_path / "rewards.png").read_bytes().startswith(b"\x89PNG")
    model = reward.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    card = (tmp_path / "README.md").read_text()  # TRL's, made right (lib.cards): the local folder, no placeholder
    assert "licence" not in card and 'model="None"' not in card and f'model="{tmp_path}"' in card
    assert (
        f'rewarder = pipeline(model="{tmp_path}"' in card and f"Fine-tuned from the local model `{base_model}`" in card
    )
    assert "licence" not in card and "huggingface.co/None" not in card and "huggingface.co/datasets" not in card
    again = run_reward(base_model, preferences, tmp_path)
    assert again["resumed_from"].endswith("checkpoint-60") and again["heldout_accuracy_before"] is None


@pytest.mark.slow
def test_lora_reward_model_trains_its_head(base_model, preferences, tmp_path):
    results = run_reward(
        base_model,
        preferences,
        tmp_path,
        "--use_peft",
        "true",
        "--lora_r",
        "8",
        "--max_steps",
        "30",
        "--margin_scale",
        "0.5",
    )
    assert results["lora"] and results["heldout_accuracy"] > 0.5
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in str(config["modules_to_save"])


def test_reward_is_read_where_ppo_reads_it(base_model, tmp_path):
    """TRL's PPO scores a sampled reply at its end-of-turn token, the last one before padding. The reward stage's
    pairs and the held-out scorer (lib.rewards.reward_model) must end there too: ChatML writes a newline after
    <|im_end|>, and a model trained on whole renderings would be read in PPO where it never learned to score."""
    tokenizer = reward.AutoTokenizer.from_pretrained(base_model)
    torch.manual_seed(0)
    model = reward.AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompt, reply = [{"role": "user", "content": "What is 2 + 3?"}], "2 + 3 = 5.\nFinal answer: 5"
    end = chat_format.end_of_turn(tokenizer)
    assert chat_format.render(tokenizer, [*prompt, {"role": "assistant", "content": reply}]).endswith(end + "\n")

    query = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    response = tokenizer(reply + end, add_special_tokens=False)["input_ids"]
    padded = torch.tensor([query + response + [tokenizer.pad_token_id] * 3])
    with torch.no_grad():
        _, ppo_score, _ = get_reward(model, padded, tokenizer.pad_token_id, len(query))

    pairs = DatasetDict(
        {
            "test": Dataset.from_list(
                [
                    {"prompt": prompt, "chosen": [{"role": "assistant", "content": reply}]}
                    | {"rejected": [{"role": "assistant", "content": "6"}]}
                ]
            )
        }
    )
    assert reward.tokenize(pairs, tokenizer)["test"][0]["chosen_ids"] == query + response
    (score,) = rewards.reward_model([reply], [prompt], str(tmp_path))
    assert score == pytest.approx(ppo_score.item(), abs=1e-5)


def test_held_out_pairs_score_the_same_batched_as_one_by_one(base_model, preferences):
    """score_pairs pads responses of different lengths into batches; each score is the one the response gets alone."""
    tokenizer = reward.AutoTokenizer.from_pretrained(base_model)
    torch.manual_seed(0)
    model = reward.AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs = reward.tokenize(load_from_disk(str(preferences)), tokenizer)["test"].select(range(12))
    assert len(set(map(len, pairs["chosen_ids"]))) > 1  # the batches are padded
    batched, alone = reward.score_pairs(model, tokenizer, pairs), reward.score_pairs(model, tokenizer, pairs, 1)
    for side in ("chosen", "rejected"):
        assert batched[side] == pytest.approx(alone[side], abs=1e-4)
    assert batched["accuracy"] == alone["accuracy"]


def test_an_empty_preferences_folder_is_one_line(base_model, tmp_path):
    """`lmforge reward --preferences <an empty folder>` (a traceback from load_from_disk before)."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        lmforge(
            ["reward", "--config", "recipes/demo/reward.yaml", "--model_name_or_path", str(base_model)]
            + ["--preferences", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out")]
        )
    assert str(exit.value.code) == (
        f"lmforge reward: error: preferences: {tmp_path / 'empty'}: an empty folder, or one without "
        ".jsonl/.json/.csv/.parquet/.arrow files"
    )


def test_too_long_pairs_stop_or_are_dropped_and_counted(base_model, preferences, tmp_path):
    with pytest.raises(
        reward.LmforgeError, match=r"split train row \d+: prompt \+ (chosen|rejected) is \d+ tokens, longer"
    ):
        run_reward(base_model, preferences, tmp_path, "--max_length", "60")
    results = run_reward(
        base_model, preferences, tmp_path, "--max_length", "120", "--invalid_rows", "drop", "--max_steps", "1"
    )
    assert 0 < results["preferences"]["invalid_dropped"] and results["train_pairs"] + results["test_pairs"] < 270
