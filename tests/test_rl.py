"""The RL stages on tiny models: GRPO raises an easy verifiable reward, DPO widens the chosen-minus-rejected
margin, PPO raises the reward model's score with a finite KL; each writes its before/after table and watch report."""

import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import LlamaForCausalLM

from lmforge import LmforgeError, dpo, grpo, ppo, sft
from lmforge.lib.configs import parse
from lmforge.lib.conversations import GENERATORS, arithmetic
from lmforge.lib.rewards import accuracy, verifiable_prompts
from lmforge.lib.rl_eval import sequence_logprobs
from lmforge.tokenizer import train_tokenizer
from tiny import save_liking_reward_model, tiny_llama_config


# The real GSM8K training problems, beside the repository as in recipes/smollm2-360m-instruct/grpo_gsm8k.yaml.
GSM8K = "../shared/benchmarks/gsm8k/train.jsonl"
TRAINER = [
    "--use_cpu",
    "true",
    "--bf16",
    "false",
    "--activation_checkpointing",
    "false",
    "--report_to",
    "none",
    "--logging_steps",
    "1",
    "--seed",
    "0",
]
HELDOUT = [
    "--heldout_tasks",
    json.dumps({"arithmetic": 4}),
    "--heldout_max_new_tokens",
    "12",
    "--watch_prompts",
    "4",
    "--watch_max_new_tokens",
    "12",
]


@pytest.fixture(scope="session")
def tokenizer():
    texts = [m["content"] for g in ("identity", "arithmetic") for c in GENERATORS[g](seed=0) for m in c]
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, tokenizer):
    """A random 2-layer Llama saved as the SFT stage saves its assistant (generation stops at <|im_end|>)."""
    path = tmp_path_factory.mktemp("sft")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory, tokenizer):
    """A reward model that likes a quarter of the vocabulary (tiny.save_liking_reward_model), so a policy can learn
    to please it in a few steps: the score rises with the share of liked tokens in prompt + reply."""
    return save_liking_reward_model(tmp_path_factory.mktemp("reward"), tokenizer, liked_tokens(tokenizer))


def liked_tokens(tokenizer):
    return list(range(300, 300 + len(tokenizer) // 4))


def test_the_test_reward_model_likes_its_tokens(reward_model, tokenizer):
    from lmforge.lib.rewards import load_scorer

    model, _ = load_scorer(str(reward_model))
    liked, other = liked_tokens(tokenizer)[:8], list(range(100, 108))
    scores = model(torch.tensor([liked, other, liked[:4] + other[:4]])).logits[:, 0]
    assert scores[0] > scores[2] > scores[1]


def assert_card_is_right(output_dir, data):
    """TRL's card, made right (lib.cards): the quick start loads the local folder, the data is named, not linked."""
    card = (output_dir / "README.md").read_text()
    assert f'model="{output_dir}"' in card and f"on {data}." in card, card
    assert "licence" not in card and "huggingface.co/None" not in card and "huggingface.co/datasets" not in card


def read_results(path, name):
    return json.loads((path / name).read_text())


@pytest.mark.slow
def test_grpo_raises_an_easy_reward(sft_model, tmp_path):
    # A length penalty is a reward a random policy can improve in a few steps: shorter tokens, or <|im_end|>.
    argv = [
        "--config",
        "recipes/demo/grpo.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--output_dir",
        str(tmp_path),
        "--tasks",
        json.dumps({"arithmetic": 64}),
        "--rewards",
        json.dumps({"length": {"max_chars": 10}}),
        "--max_steps",
        "16",
        "--save_steps",
        "8",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--max_completion_length",
        "12",
        "--learning_rate",
        "2e-2",
        "--watch_every",
        "8",
        "--watch_max_kl",
        "100",
        "--attn_implementation",
        "eager",
        *HELDOUT,
        *TRAINER,
    ]
    results = grpo.main(*parse(grpo.CONFIGS, argv))
    assert results["reward_last"] > results["reward_first"] + 0.2, results
    assert results["attn_implementation"] == "eager"  # the recipe's kernel reached the policy
    assert results["kl_last"] is not None and results["kl_last"] < 10
    assert results["watch"]["checks"] and not results["watch"]["stopped"]
    saved = read_results(tmp_path, "grpo_results.json")
    assert saved["eval"]["before"]["kl"] == 0.0 and saved["eval"]["after"]["kl"] > 0
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "checkpoint-16").is_dir()
    assert_card_is_right(tmp_path, "`arithmetic`")


@pytest.fixture(scope="session")
def tool_caller(tmp_path_factory, sft_model):
    """The tiny model fine-tuned for a few steps on letter counting, half answered in its head and half with a python
    call: it writes calls often enough, and not always, for GRPO to change how often it calls."""
    path = tmp_path_factory.mktemp("tool_caller")
    argv = [
        "--config",
        "recipes/demo/sft.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--output_dir",
        str(path),
        "--datasets",
        json.dumps(
            {"tools": {"generator": "python_counting", "size": 200}, "head": {"generator": "spelling", "size": 200}}
        ),
        "--max_steps",
        "60",
        "--learning_rate",
        "1e-2",
        "--warmup_steps",
        "5",
        "--per_device_train_batch_size",
        "16",
        "--eval_fraction",
        "0",
        "--eval_strategy",
        "no",
        "--save_steps",
        "1000",
        *TRAINER,
    ]
    sft.main(*parse(sft.CONFIGS, argv))
    return path


@pytest.mark.slow
def test_grpo_with_tools_runs_the_calls_and_learns_when_they_pay(tool_caller, tmp_path):
    """With the python tool run during sampling and a cost per call as the only reward, the policy calls less."""
    argv = [
        "--config",
        "recipes/demo/grpo_tools.yaml",
        "--model_name_or_path",
        str(tool_caller),
        "--output_dir",
        str(tmp_path),
        "--tasks",
        json.dumps({"counting": 64}),
        "--rewards",
        json.dumps({"tool_cost": {"cost": 1.0}}),
        "--max_steps",
        "12",
        "--save_steps",
        "100",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--max_completion_length",
        "64",
        "--learning_rate",
        "1e-2",
        "--watch_every",
        "100",
        "--watch_max_kl",
        "100",
        *TRAINER,
        "--heldout_tasks",
        json.dumps({"counting": 4}),
        "--heldout_max_new_tokens",
        "64",
        "--watch_prompts",
        "4",
    ]
    results = grpo.main(*parse(grpo.CONFIGS, argv))
    assert results["tools"] == ["python"] and results["reward_first"] < 0, results  # calls were made and counted
    assert results["reward_last"] > results["reward_first"], results
    assert results["eval"]["before"]["tool_calls"] is not None  # held-out replies generated with the tool run


@pytest.fixture(scope="session")
def preferences(tmp_path_factory):
    """Pairs shaped like `lmforge label --export`'s: a worked solution chosen over an evasive reply."""
    path = tmp_path_factory.mktemp("labels") / "preferences"
    rows = [
        {
            "prompt": [{"role": "user", "content": p["question"]}],
            "chosen": [{"role": "assistant", "content": p["solution"]}],
            "rejected": [{"role": "assistant", "content": "I would rather talk about the weather."}],
            "source": "judge",
            "prompt_id": i,
        }
        for i, p in enumerate(arithmetic.problems(40, seed=3))
    ]
    DatasetDict({"train": Dataset.from_list(rows[:32]), "test": Dataset.from_list(rows[32:])}).save_to_disk(path)
    return path


@pytest.mark.slow
def test_dpo_widens_the_margin_between_chosen_and_rejected(sft_model, reward_model, preferences, tmp_path):
    argv = [
        "--config",
        "recipes/demo/dpo.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--preferences",
        str(preferences),
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "12",
        "--save_steps",
        "6",
        "--eval_steps",
        "100",
        "--per_device_train_batch_size",
        "8",
        "--max_length",
        "128",
        "--learning_rate",
        "5e-3",
        "--warmup_steps",
        "0",
        "--lr_scheduler_type",
        "constant",
        "--watch_every",
        "6",
        "--heldout_reward_model",
        str(reward_model),
        "--attn_implementation",
        "eager",
        *HELDOUT,
        *TRAINER,
    ]
    results = dpo.main(*parse(dpo.CONFIGS, argv))
    assert results["margin_last"] > results["margin_first"] + 1.0, results
    assert results["attn_implementation"] == "eager"  # the recipe's kernel reached the policy
    assert results["test_margin"] > 0 and results["test_accuracy"] > 0.5
    assert results["train_pairs"] == 32 and results["test_pairs"] == 8
    assert results["eval"]["after"]["kl"] != 0 and results["watch"]["checks"]
    assert results["eval"]["before"]["reward_model"] is not None
    assert (tmp_path / "dpo_results.json").is_file() and (tmp_path / "checkpoint-12").is_dir()


def test_dpo_names_missing_preferences(sft_model, tmp_path):
    argv = [
        "--config",
        "recipes/demo/dpo.yaml",
        "--model_name_or_path",
        str(sft_model),
        "--preferences",
        str(tmp_path / "nope"),
        "--output_dir",
        str(tmp_path),
        *TRAINER,
    ]
    with pytest.raises(LmforgeError, match="nope does not exist"):
        dpo.main(*parse(dpo.CONFIGS, argv))


def test_dpo_trains_on_a_users_folder_of_jsonl_pairs(sft_model, reward_model, tmp_path):
    """`lmforge dpo --preferences mypairs`, where mypairs/train.jsonl holds TRL's standard preference rows (text, not
    messages): read as they are, no conversion (it stopped with datasets' "neither a Dataset directory nor a
    DatasetDict directory")."""
    (tmp_path / "mypairs").mkdir()
    rows = [{"prompt": p["question"], "chosen": p["solution"], "rejected": "No."} for p in arithmetic.problems(12, 5)]
    (tmp_path / "mypairs/train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    argv = ["--config", "recipes/demo/dpo.yaml", "--model_name_or_path", str(sft_model)]
    argv += ["--preferences", str(tmp_path / "mypairs"), "--output_dir", str(tmp_path / "out"), "--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "4", "--max_length", "96", "--watch_every", "100", *HELDOUT, *TRAINER]
    argv += ["--heldout_reward_model", str(reward_model)]
    results = dpo.main(*parse(dpo.CONFIGS, argv))
    assert results["train_pairs"] + results["test_pairs"] == 12 and (tmp_path / "out/checkpoint-2").is_dir()
    assert results["test_pairs"] and results["test_margin"] is not None  # held out by a hash, and evaluated
    card = (tmp_path / "out/README.md").read_text()  # TRL's, written at the checkpoint, made right (lib.cards)
    assert "licence" not in card and 'model="None"' not in card and f'model="{tmp_path / "out"}"' in card
    assert f"`{tmp_path / 'mypairs'}`" in card and "huggingface.co/datasets/" not in card  # a folder, not a Hub id
    assert_card_is_right(tmp_path / "out", f"`{tmp_path / 'mypairs'}`")


def test_a_users_questions_with_answers_are_split_for_good_and_graded():
    """GSM8K's format (`answer` ending in `#### N`) from the real training problems beside the repository: the held-out
    side shares no question with the training side whatever the sizes and seeds, and `accuracy` grades the number."""
    source = {"path": GSM8K}
    train = verifiable_prompts({"gsm8k": source}, seed=0)
    heldout = verifiable_prompts({"gsm8k": {**source, "heldout": True}}, seed=1000)
    assert len(train) + len(heldout) == 7473 and 250 < len(heldout) < 500  # 5% held out
    questions = {prompt[-1]["content"] for prompt in train["prompt"]}
    assert not questions & {prompt[-1]["content"] for prompt in heldout["prompt"]}
    row = next(r for r in train if r["prompt"][0]["content"].startswith("Natalia sold clips"))  # answer: #### 72
    assert row["answer"] == "72"
    replies = ["48 + 24 = 72. Final answer: 72", "Final answer: 72.0", "Final answer: $72", "Final answer: 70", "72"]
    assert accuracy(replies, task=["gsm8k"] * 5, answer=["72"] * 5, entry=[""] * 5) == [1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.slow
def test_the_gsm8k_recipe_trains_on_its_training_side_and_evaluates_on_the_held_out(sft_model, tmp_path):
    argv = ["--config", "recipes/smollm2-360m-instruct/grpo_gsm8k.yaml", "--model_name_or_path", str(sft_model)]
    argv += ["--output_dir", str(tmp_path), "--use_vllm", "false", "--max_steps", "2", "--num_generations", "4"]
    argv += ["--per_device_train_batch_size", "4", "--max_completion_length", "8", "--heldout_max_new_tokens", "8"]
    argv += ["--watch_every", "100", "--watch_prompts", "2", "--watch_max_new_tokens", "8", *TRAINER]
    argv += ["--heldout_tasks", json.dumps({"gsm8k": {"path": GSM8K, "size": 4, "heldout": True}})]
    results = grpo.main(*parse(grpo.CONFIGS, argv))
    assert results["train_prompts"] == 4800 and results["tasks"]["gsm8k"]["path"] == GSM8K
    assert results["eval"]["before"]["accuracy"] is not None and (tmp_path / "checkpoint-2").is_dir()


@pytest.mark.slow
def test_ppo_raises_the_reward_models_score(sft_model, reward_model, tmp_path):
    argv = [
        "--config",
        "recipes/demo/ppo.yaml",
        "--sft_model_path",
        str(sft_model),
        "--reward_model_path",
        str(reward_model),
        "--output_dir",
        str(tmp_path),
        "--tasks",
        json.dumps({"arithmetic": 64}),
        "--total_episodes",
        "96",
        "--per_device_train_batch_size",
        "8",
        "--local_rollout_forward_batch_size",
        "8",
        "--response_length",
        "8",
        "--learning_rate",
        "1e-2",
        "--lr_scheduler_type",
        "constant",
        "--num_ppo_epochs",
        "4",
        "--temperature",
        "1.0",
        "--save_steps",
        "6",
        "--watch_every",
        "6",
        "--watch_max_kl",
        "1000",
        "--attn_implementation",
        "eager",
        *HELDOUT,
        *TRAINER,
    ]
    results = ppo.main(*parse(ppo.CONFIGS, argv))
    assert results["score_last"] > results["score_first"] + 0.15, results
    assert results["attn_implementation"] == "eager"  # the recipe's kernel reached the policy
    assert all(map(math.isfinite, (results["kl_first"], results["kl_last"], results["entropy_last"])))
    # The held-out table scores greedy replies, which loop on a random tiny policy: check it is there, not its trend.
    assert set(results["eval"]["after"]) == set(results["eval"]["before"]) and results["eval"]["after"]["kl"] > 0
    assert (tmp_path / "checkpoint-12" / "value_model" / "model.safetensors").is_file()
    assert read_results(tmp_path, "ppo_results.json")["watch"]["checks"]
    assert_card_is_right(tmp_path, "`arithmetic`")


@pytest.mark.slow
def test_the_hacking_recipe_trips_the_watch_which_keeps_the_last_healthy_checkpoint(sft_model, reward_model, tmp_path):
    """recipes/demo/ppo_hacking.yaml, small: PPO without the KL leash against a reward model that can be pleased by
    repeating its favourite tokens. The score climbs, the policy drifts until a watch bound breaks, the run stops and
    the last checkpoint saved while healthy becomes the final model (the demo's run, longer, does the same)."""
    argv = [
        "--config",
        "recipes/demo/ppo_hacking.yaml",
        "--sft_model_path",
        str(sft_model),
        "--reward_model_path",
        str(reward_model),
        "--output_dir",
        str(tmp_path),
        "--tasks",
        json.dumps({"arithmetic": 64}),
        "--total_episodes",
        "256",
        "--per_device_train_batch_size",
        "8",
        "--local_rollout_forward_batch_size",
        "8",
        "--response_length",
        "8",
        "--learning_rate",
        "1e-2",
        "--lr_scheduler_type",
        "constant",
        "--temperature",
        "1.0",
        "--save_steps",
        "2",
        "--watch_every",
        "2",
        *HELDOUT,
        *TRAINER,
    ]
    results = ppo.main(*parse(ppo.CONFIGS, argv))
    watch = results["watch"]
    assert results["score_last"] > results["score_first"], results
    assert watch["stopped"] and watch["alarms"], watch
    # PPO stopped at the step of the first alarm: no alarm or check after it.
    stop = watch["alarms"][0]["step"]
    assert {alarm["step"] for alarm in watch["alarms"]} == {stop} and max(c["step"] for c in watch["checks"]) <= stop
    assert results["final_model"] == watch["last_healthy"] and watch["last_healthy"].startswith(str(tmp_path))


def test_kl_log_probabilities_are_the_same_batched_as_one_by_one():
    """rl_eval's KL sums log p(reply | prompt) for pairs of different lengths in one padded forward pass: each sum
    is the one a forward pass of that pair alone gives."""
    tokenizer = train_tokenizer(["a few words to learn a vocabulary from, and some more of them"], vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer)).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(300, (n,), generator=generator).tolist() for n in (3, 9, 5, 1)]
    replies = [torch.randint(300, (n,), generator=generator).tolist() for n in (6, 2, 8, 4)]
    alone = sequence_logprobs(model, prompts, replies, batch_size=1)
    assert sequence_logprobs(model, prompts, replies, batch_size=3) == pytest.approx(alone, abs=1e-4)
    ids = torch.tensor([prompts[1] + replies[1]])  # and one sum by hand
    by_hand = model(ids).logits[0, 8:10].log_softmax(-1).gather(-1, ids[0, 9:, None]).sum().item()
    assert alone[1] == pytest.approx(by_hand, abs=1e-5)
