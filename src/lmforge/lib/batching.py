"""The global batch: tokens per optimizer step, the same on 1 process, 8 GPUs or many nodes.

A recipe states `global_batch_tokens`; the number of processes comes from the launcher (accelerate's
PartialState, the WORLD_SIZE of `accelerate launch`), and `per_device_train_batch_size` is the most
sequences one device holds at once. From them:

    world size x micro batch x sequence length x gradient accumulation = global batch tokens

The micro batch is the largest that divides each process's share (at most the recipe's
per_device_train_batch_size) and gradient accumulation makes up the rest, so a recipe trains with the
same batch, and so the same learning rate, on any hardware: `learning_rate` is for the global batch
and is never rescaled.
"""

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmforge import LmforgeError


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from transformers import TrainingArguments


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    micro_batch: int
    seq_len: int | None
    grad_accum: int

    @property
    def tokens(self) -> int:
        return self.world_size * self.micro_batch * self.seq_len * self.grad_accum

    def __str__(self) -> str:
        sequences = f"{self.world_size} processes x {self.micro_batch} sequences"
        if self.seq_len is None:  # SFT without max_length: sequences have no fixed size
            return f"{sequences} x {self.grad_accum} accumulation steps per optimizer step"
        return (
            f"{sequences} x {self.seq_len} tokens x {self.grad_accum} accumulation steps = "
            f"{self.tokens:,} tokens per optimizer step"
        )


def plan_batch(global_tokens: int, seq_len: int, world_size: int, max_micro_batch: int) -> BatchPlan:
    """Micro batch and gradient accumulation giving exactly `global_tokens` per step on `world_size` processes."""
    if global_tokens < 1 or not seq_len:
        raise LmforgeError(
            f"global_batch_tokens: {global_tokens} needs a positive value and a sequence length "
            f"(max_length / the packed blocks), got {seq_len}"
        )
    if global_tokens % seq_len:
        raise LmforgeError(
            f"global_batch_tokens: {global_tokens:,} is not a whole number of {seq_len}-token sequences"
        )
    sequences = global_tokens // seq_len
    if sequences % world_size:
        raise LmforgeError(
            f"global_batch_tokens: {global_tokens:,} tokens = {sequences} sequences of {seq_len} "
            f"cannot be shared evenly by {world_size} processes; use a multiple of "
            f"{world_size * seq_len:,}"
        )
    per_process = sequences // world_size
    micro = max(m for m in range(1, min(max_micro_batch, per_process) + 1) if per_process % m == 0)
    return BatchPlan(world_size, micro, seq_len, per_process // micro)


def apply_global_batch(
    stage: str, training_args: "TrainingArguments", global_tokens: int | None, seq_len: int | None
) -> BatchPlan:
    """Set the trainer's micro batch and accumulation from the recipe's global batch, and say so.

    Without `global_tokens`, the recipe's per_device_train_batch_size and gradient_accumulation_steps
    stand as given and the global batch grows with the number of processes.
    """
    world_size = training_args.world_size  # accelerate's PartialState: the processes `accelerate launch` started
    if global_tokens is not None:
        if training_args.gradient_accumulation_steps != 1:
            raise LmforgeError("gradient_accumulation_steps: derived from global_batch_tokens; leave it out")
        plan = plan_batch(global_tokens, seq_len, world_size, training_args.per_device_train_batch_size)
        training_args.per_device_train_batch_size = plan.micro_batch
        training_args.gradient_accumulation_steps = plan.grad_accum
    else:
        plan = BatchPlan(
            world_size, training_args.per_device_train_batch_size, seq_len, training_args.gradient_accumulation_steps
        )
    # One line per process: which hosts and devices joined is the first question on a multi-node run.
    print(
        f"{stage}: process {training_args.process_index} of {world_size} on {socket.gethostname()} "
        f"({training_args.device})",
        flush=True,
    )
    if training_args.process_index == 0:
        print(
            f"{stage}: global batch: {plan} (learning_rate {training_args.learning_rate} is for this batch)",
            flush=True,
        )
    return plan
