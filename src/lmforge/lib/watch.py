"""A watch for reward hacking and collapse, used by every RL stage (`lmforge grpo`, `dpo`, `ppo`).

A policy optimised against a reward drifts from its reference; past some point it finds what the reward fails to
punish: replies that loop on a phrase, collapse to one token, go empty or swell in length. WatchCallback follows
    - KL to the reference, read from the trainer's logs (`kl` in GRPO, `objective/kl` in PPO; DPO logs none),
    - response length, n-gram repetition rate and share of degenerate replies, from replies it samples itself
      to a few held-out prompts every `watch_every` steps and at every checkpoint (DPO never samples, and the
      same measure for every stage keeps the figures comparable),
warns when one crosses its recipe threshold, stops the run if `watch_stop`, and remembers the last checkpoint
saved while everything was within bounds: `restore_last_healthy` puts that model in place of the final one.
Its figures go to `watch.json` in the output directory (kept across a resume) and into the stage's results.
"""

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME

from lmforge.lib.files import read_json, write_json
from lmforge.lib.models import process_state
from lmforge.lib.repetition import repetition_rate
from lmforge.lib.tools.generation import generation_eos, model_generate
from lmforge.lib.trl_logs import KL


logger = logging.getLogger(__name__)
# Files that make up a saved model or adapter, besides the shards a sharded model's index names; the optimizer and
# trainer state of a checkpoint are not copied.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    SAFE_WEIGHTS_INDEX_NAME,
    "adapter_config.json",
    "adapter_model.safetensors",
)


@dataclass
class WatchConfig:
    """Recipe keys of the watch: how often it samples, and the bounds a healthy policy stays within."""

    watch_every: int = field(default=10, metadata={"help": "Sample held-out prompts every N optimizer steps."})
    watch_prompts: int = field(default=8, metadata={"help": "Held-out prompts sampled at each check."})
    watch_max_new_tokens: int = field(default=64, metadata={"help": "Length of each sampled reply."})
    watch_max_kl: float | None = field(
        default=None, metadata={"help": "Alarm above this KL to the reference, as the trainer logs it (None: off)."}
    )
    watch_max_repetition: float = field(
        default=0.5, metadata={"help": "Alarm above this mean share of repeated token 3-grams in the replies."}
    )
    watch_max_degenerate: float = field(
        default=0.5, metadata={"help": "Alarm above this share of degenerate replies (empty or one token looping)."}
    )
    watch_min_length: float = field(default=1.0, metadata={"help": "Alarm below this mean reply length (tokens)."})
    watch_max_length: float | None = field(
        default=None, metadata={"help": "Alarm above this mean reply length (tokens); None: off."}
    )
    watch_stop: bool = field(default=True, metadata={"help": "Stop training at the first alarm."})


def counts_as_degenerate(ids: list[int]) -> bool:
    """Empty, or a reply of four tokens or more in which one token makes up at least half: a collapsed policy."""
    if not ids:
        return True
    return len(ids) >= 4 and Counter(ids).most_common(1)[0][1] * 2 >= len(ids)


def sampled_ids_without_stop(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], max_new_tokens: int
) -> list[list[int]]:
    """The token ids of one reply sampled from the model's plain distribution per prompt (prompt, padding and
    end-of-turn token removed)."""
    generate = model_generate(model, tokenizer, do_sample=True, top_k=None, top_p=None, temperature=1.0)
    stops = generation_eos(model)
    return [row[:-1] if row and row[-1] in stops else row for row in generate(prompts, stops, max_new_tokens)]


def own_rng(device: torch.device):
    """torch.random.fork_rng of the CPU and of this process's own accelerator. Without `devices` it forks every GPU
    of the machine, from every process: each process would make a context (and take memory) on each GPU."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device.index or 0], device_type=device.type)


def reply_stats(replies: list[list[int]]) -> dict:
    return {
        "mean_length": sum(map(len, replies)) / len(replies),
        "repetition": sum(repetition_rate(r) for r in replies) / len(replies),
        "degenerate": sum(map(counts_as_degenerate, replies)) / len(replies),
    }


class WatchCallback(TrainerCallback):
    def __init__(self, config: WatchConfig, prompts: list, tokenizer, output_dir: str):
        """`prompts` are chats (lists of messages) never trained on; the first `watch_prompts` are sampled."""
        self.config, self.tokenizer, self.output_dir = config, tokenizer, output_dir
        self.prompt_ids = [
            tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"]
            for p in prompts[: config.watch_prompts]
        ]
        self.checks, self.alarms, self.kl = [], [], None
        self.stopped, self.last_healthy = False, None
        self.problems = {"samples": [], "kl": []}  # the latest reading of each source, empty when within bounds
        previous = os.path.join(output_dir, "watch.json")
        if os.path.exists(previous):  # resuming: keep what the killed run saw
            with open(previous) as f:
                state = json.load(f)
            self.checks, self.alarms, self.last_healthy = state["checks"], state["alarms"], state["last_healthy"]
            self.stopped = state["stopped"]

    @property
    def healthy(self) -> bool:
        return not (self.problems["samples"] or self.problems["kl"])

    def on_train_begin(self, args, state, control, **kwargs):
        if self.last_healthy:  # the rotation of old checkpoints spares the "best" one
            state.best_model_checkpoint = self.last_healthy
        if self.stopped:  # a run killed after the watch stopped it does not train on when resumed
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        kl = next((logs[key] for key in KL if key in (logs or {})), None)
        if kl is None:
            return
        self.kl = kl
        bound = self.config.watch_max_kl
        self.problems["kl"] = [("kl", kl, bound)] if bound is not None and not kl <= bound else []  # NaN too
        self.raise_alarms("kl", state, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.config.watch_every == 0 or control.should_save:
            self.check(getattr(model, "policy", model), state, control)  # PPO passes its policy-and-value wrapper

    def check(self, model, state, control) -> dict:
        """Sample the held-out prompts, record the figures and raise alarms for those out of bounds."""
        was_training = model.training
        model.eval()
        with own_rng(process_state().device):  # sampling here must not change the training run's random stream
            torch.manual_seed(state.global_step)
            replies = sampled_ids_without_stop(
                model, self.tokenizer, self.prompt_ids, self.config.watch_max_new_tokens
            )
            stats = reply_stats(replies)
        model.train(was_training)
        # Every process samples (a sharded model needs them all to generate), and the main process's figures decide
        # for all: a process that stopped alone would leave the others waiting for it. The KL comes from the logs,
        # which the trainers average over the processes, so it is the same everywhere already.
        stats = broadcast_object_list([{"step": state.global_step, "kl": self.kl, **stats}])[0]
        self.checks.append(stats)
        c = self.config
        bounds = [
            ("repetition", c.watch_max_repetition, max),
            ("degenerate", c.watch_max_degenerate, max),
            ("mean_length", c.watch_min_length, min),
            ("mean_length", c.watch_max_length, max),
        ]
        self.problems["samples"] = [
            (name, stats[name], bound)
            for name, bound, side in bounds
            if bound is not None and (stats[name] > bound if side is max else stats[name] < bound)
        ]
        self.raise_alarms("samples", state, control)
        return stats

    def raise_alarms(self, source: str, state, control):
        for name, value, bound in self.problems[source]:
            alarm = {"step": state.global_step, "metric": name, "value": value, "bound": bound}
            self.alarms.append(alarm)
            logger.warning("watch: step %d: %s = %.4g is out of bounds (%s)", state.global_step, name, value, bound)
            if self.config.watch_stop:
                self.stopped = control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if self.healthy:
            self.last_healthy = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            state.best_model_checkpoint = self.last_healthy
        self.save()

    def on_train_end(self, args, state, control, **kwargs):
        self.save()

    def save(self):
        if process_state().is_main_process:
            write_json(os.path.join(self.output_dir, "watch.json"), self.report())

    def report(self) -> dict:
        return {
            "thresholds": asdict(self.config),
            "checks": self.checks,
            "alarms": self.alarms,
            "stopped": self.stopped,
            "last_healthy": self.last_healthy,
        }

    def restore_last_healthy(self, output_dir: str) -> str | None:
        """After a stop, put the last healthy checkpoint's model in place of the final one in `output_dir` (the main
        process copies; every process waits for it)."""
        if not self.stopped:
            return None
        if self.last_healthy is None or not os.path.isdir(self.last_healthy):
            logger.warning("watch: stopped with no healthy checkpoint saved; the final model is the stopped one")
            return None
        if process_state().is_main_process:
            copy_model(self.last_healthy, output_dir)
            logger.warning("watch: final model in %s = last healthy checkpoint %s", output_dir, self.last_healthy)
        process_state().wait_for_everyone()
        return self.last_healthy


def model_files(folder: str) -> list[str]:
    """The files of the model or adapter saved in `folder`: MODEL_FILES and every shard its index names."""
    names = [name for name in MODEL_FILES if os.path.exists(os.path.join(folder, name))]
    if SAFE_WEIGHTS_INDEX_NAME in names:
        names += sorted(set(read_json(os.path.join(folder, SAFE_WEIGHTS_INDEX_NAME))["weight_map"].values()))
    return names


def copy_model(source: str, target: str) -> None:
    """Replace the model saved in `target` by the one in `source`, removing the target's weight files that the
    source lacks first (a sharded final model over an unsharded checkpoint, or the reverse, would mix the two)."""
    keep = model_files(source)
    for name in model_files(target):
        if name not in keep:
            os.remove(os.path.join(target, name))
    for name in keep:
        shutil.copy2(os.path.join(source, name), os.path.join(target, name))
