"""The reward-hacking watch: it fires on a policy that repeats one token and not on a healthy one, stops the run
and puts the last healthy checkpoint in place of the final model."""

import json

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lmforge.lib.conversations import GENERATORS
from lmforge.lib.rewards import verifiable_prompts
from lmforge.lib.watch import WatchCallback, WatchConfig, counts_as_degenerate, own_rng, reply_stats
from lmforge.tokenizer import train_tokenizer
from tiny import tiny_llama_config


PROMPTS = verifiable_prompts({"arithmetic": 8}, seed=1)["prompt"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([m["content"] for c in GENERATORS["arithmetic"](size=200) for m in c], vocab_size=400)


def tiny_model(tokenizer):
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = tiny_llama_config(tokenizer, max_positions=256, eos_token_id=end_of_turn)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def plant_loop(model, token_id: int):
    """Make the policy say one token forever: a huge bias on that token's row of the output layer."""
    bias = torch.zeros(model.config.vocab_size)
    bias[token_id] = 1e4
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)


def test_degenerate_replies_and_stats():
    assert counts_as_degenerate([]) and counts_as_degenerate([5, 5, 5, 1]) and not counts_as_degenerate([1, 2, 3, 4])
    assert not counts_as_degenerate([7, 7])  # too short to call a loop
    stats = reply_stats([[1, 2, 3, 4, 5], [9] * 10])
    assert stats["mean_length"] == 7.5 and stats["degenerate"] == 0.5 and 0.4 < stats["repetition"] < 0.5


def test_watch_fires_on_a_looping_policy_and_not_on_a_healthy_one(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    watch = WatchCallback(WatchConfig(watch_max_new_tokens=24), PROMPTS, tokenizer, str(tmp_path))
    control = TrainerControl()
    healthy = watch.check(model, TrainerState(global_step=1), control)
    assert healthy["degenerate"] == 0 and healthy["repetition"] < 0.2 and healthy["mean_length"] > 10
    assert watch.alarms == [] and watch.healthy and not control.should_training_stop

    plant_loop(model, tokenizer.convert_tokens_to_ids("Ġapples"))
    looping = watch.check(model, TrainerState(global_step=2), control)
    assert looping["degenerate"] == 1.0 and looping["repetition"] > 0.9
    assert {a["metric"] for a in watch.alarms} == {"repetition", "degenerate"}
    assert control.should_training_stop and watch.stopped and not watch.healthy


def test_kl_from_logs_raises_an_alarm(tokenizer, tmp_path):
    watch = WatchCallback(WatchConfig(watch_max_kl=0.5, watch_stop=False), PROMPTS, tokenizer, str(tmp_path))
    control, state = TrainerControl(), TrainerState(global_step=3)
    watch.on_log(None, state, control, logs={"kl": 0.1})
    assert watch.healthy and watch.alarms == []
    watch.on_log(None, state, control, logs={"objective/kl": float("nan")})  # PPO's key; NaN is out of bounds too
    assert not watch.healthy and watch.alarms[0]["metric"] == "kl" and not control.should_training_stop


class Sabotage(TrainerCallback):
    """Turns the policy into a loop after a given step, as reward hacking would, only faster."""

    def __init__(self, step: int, token_id: int):
        self.step, self.token_id = step, token_id

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            plant_loop(model, self.token_id)


def test_watch_stops_training_and_keeps_the_last_healthy_checkpoint(tokenizer, tmp_path):
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in GENERATORS["arithmetic"](size=32)]
    rows = tokenizer(texts, max_length=64, truncation=True)["input_ids"]
    dataset = Dataset.from_dict({"input_ids": rows, "labels": rows})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=1,
        save_steps=2,
        save_total_limit=1,
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        learning_rate=1e-3,
    )
    watch = WatchCallback(WatchConfig(watch_every=2, watch_max_new_tokens=16), PROMPTS, tokenizer, str(tmp_path))
    model = tiny_model(tokenizer)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        callbacks=[Sabotage(5, tokenizer.convert_tokens_to_ids("Ġapples")), watch],
    )
    trainer.train()
    trainer.save_model(str(tmp_path))

    assert trainer.state.global_step == 6 and watch.stopped  # the check at step 6 saw the loop
    assert watch.last_healthy == str(tmp_path / "checkpoint-4")
    assert (tmp_path / "checkpoint-4").is_dir()  # spared by save_total_limit=1
    assert watch.restore_last_healthy(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    final, healthy = load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "checkpoint-4/model.safetensors")
    assert final.keys() == healthy.keys() and all(torch.equal(final[k], healthy[k]) for k in final)
    report = json.loads((tmp_path / "watch.json").read_text())
    assert [c["step"] for c in report["checks"]] == [2, 4, 6] and report["stopped"]
    assert {a["step"] for a in report["alarms"]} == {6}

    # Killed after the stop and run again: the watch remembers it stopped, tells the trainer so, and still restores.
    resumed, control = WatchCallback(watch.config, PROMPTS, tokenizer, str(tmp_path)), TrainerControl()
    resumed.on_train_begin(args, TrainerState(), control)
    assert resumed.stopped and control.should_training_stop
    assert resumed.restore_last_healthy(str(tmp_path)) == str(tmp_path / "checkpoint-4")


def test_restoring_a_sharded_checkpoint_copies_every_shard(tokenizer, tmp_path):
    """A checkpoint saved in shards replaces an unsharded final model whole: the index and all its shards, and the
    final model's own weight file is removed so that loading the folder cannot pick it."""
    checkpoint = tmp_path / "checkpoint-4"
    healthy = tiny_model(tokenizer)
    healthy.save_pretrained(checkpoint, max_shard_size="40KB")
    shards = sorted(p.name for p in checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (checkpoint / "model.safetensors").exists()
    torch.manual_seed(1)
    LlamaForCausalLM(healthy.config).save_pretrained(tmp_path)  # the stopped run's final model, unsharded

    watch = WatchCallback(WatchConfig(), PROMPTS, tokenizer, str(tmp_path))
    watch.stopped, watch.last_healthy = True, str(checkpoint)
    assert watch.restore_last_healthy(str(tmp_path)) == str(checkpoint)
    assert sorted(p.name for p in tmp_path.glob("model*.safetensors")) == shards
    restored = LlamaForCausalLM.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(restored[k], v) for k, v in healthy.state_dict().items())


def test_the_watch_forks_the_random_stream_of_its_own_device_only():
    """own_rng restores the CPU stream (the training run's); on a GPU it also forks that process's GPU alone (torch's
    fork_rng(devices=[index]); not checkable on this CPU machine)."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with own_rng(torch.device("cpu")):
        torch.manual_seed(123)
        torch.rand(5)
    assert torch.equal(torch.rand(3), expected)
