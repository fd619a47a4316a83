"""Stage 3, pretrain: packed token blocks -> a small Llama-family base model, trained from scratch with Trainer.

    lmforge pretrain --config recipes/demo/pretrain.yaml
    accelerate launch -m lmforge.pretrain --config recipes/demo/pretrain.yaml --depth 12 --bf16 true \\
        --torch_compile true --optim adamw_torch_fused --output_dir runs/d12

One size knob, `depth` (layers): width is 64 per layer and heads are 64 wide, as in nanochat, so a
model grows in proportion. To reproduce a published shape, `hidden_size`, `num_attention_heads`,
`num_key_value_heads` (grouped-query attention) and `tie_word_embeddings` override what depth derives
(recipes/smollm-135m/pretrain.yaml: SmolLM-135M's 30 x 576). `global_batch_tokens` fixes the tokens per
optimizer step whatever the number of processes (lmforge.lib.batching). The rest of the options are
transformers' TrainingArguments (bf16, torch_compile, optim, lr_scheduler_type such as cosine or
warmup_stable_decay, save_steps, report_to, push_to_hub, ...). A rerun resumes from the last checkpoint
in `output_dir`.

Evaluation on the pack stage's validation split reports `eval_loss` and `eval_bits_per_byte` (the
metric module shipped in lmforge/metrics/). Training logs add `tokens_per_second`, and `mfu` on GPUs
whose bf16 peak is known. At the end: the model (safetensors) with its tokenizer and a model card in
`output_dir`, `eval_results.json`, and `memorization.json`: how often greedy decoding reproduces
training documents verbatim from their first tokens.
"""

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    LlamaConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from lmforge import LmforgeError
from lmforge.lib.batching import apply_global_batch
from lmforge.lib.configs import exit_launched, parse
from lmforge.lib.encoding import bits_per_byte, token_losses, utf8_lengths
from lmforge.lib.files import write_json
from lmforge.lib.loading import load_tokenizer
from lmforge.lib.metrics import load_metric

# Dense (not 2:4 sparse) bf16 tensor-core peaks with fp32 accumulation, FLOP/s, from the vendors' datasheets, by a
from lmforge.lib.models import last_checkpoint, process_state, whole_weights


# Dense (not 2:4 sparse) bf16 tensor-core peaks with fp32 accumulation, FLOP/s, from the vendors' datasheets, by a
# fragment of torch.cuda.get_device_name(); the first fragment found wins, so a name that contains another comes first
# ("GB200" holds "B200", "H200" holds "H20", "A100" holds "A10", "L40S" holds "L4").
GPU_BF16_PEAK = [
    ("GB200", 2500e12),
    ("B200", 2250e12),
    ("B100", 1750e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200", 989e12),  # SXM, and GH200's
    ("H800", 989e12),
    ("H20", 148e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 6000 Ada", 364e12),
    ("RTX A6000", 155e12),
    ("RTX 4090", 165e12),  # GeForce: 330 with fp16 accumulation, which PyTorch does not use
    ("RTX 3090", 71e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
]


@dataclass
class PretrainArguments:
    dataset: str = field(default="runs/demo/pack", metadata={"help": "Packed dataset (lmforge pack)."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer the dataset was packed with."})
    depth: int = field(default=4, metadata={"help": "Layers; width = 64 * depth, heads = depth (64 wide)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Width, instead of 64 * depth."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Heads, instead of width / 64."})
    num_key_value_heads: int | None = field(default=None, metadata={"help": "Key/value heads (GQA); default: all."})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "Share input and output embeddings."})
    global_batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per optimizer step over all processes; derives gradient "
            "accumulation (and a smaller micro batch if needed). learning_rate is for "
            "this batch. Default: per_device_train_batch_size x processes x blocks."
        },
    )
    context_length: int = field(default=1024, metadata={"help": "Positions the model supports."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager, flash_attention_2."})
    muon_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Train the hidden weight matrices with torch.optim.Muon at this learning "
            "rate (embeddings, head, norms: optim at learning_rate). Default: no Muon."
        },
    )
    memorization_probes: int = field(default=32, metadata={"help": "Training documents probed (0: skip)."})
    memorization_prefix: int = field(default=32, metadata={"help": "Tokens of each document given as prompt."})
    memorization_tokens: int = field(default=32, metadata={"help": "Tokens that must come back verbatim."})


def model_config(
    depth: int,
    tokenizer,
    context_length: int,
    hidden_size: int | None = None,
    num_attention_heads: int | None = None,
    num_key_value_heads: int | None = None,
    tie_word_embeddings: bool = False,
) -> LlamaConfig:
    width = hidden_size or 64 * depth
    heads = num_attention_heads or width // 64 or 1
    kv_heads = num_key_value_heads or heads
    if width % heads or heads % kv_heads:
        raise LmforgeError(
            f"hidden_size {width} must divide into num_attention_heads {heads}, "
            f"and those into num_key_value_heads {kv_heads}"
        )
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        # SwiGLU at 8/3 of the width has the parameters of a 4x MLP (Llama's choice), rounded for the kernels.
        intermediate_size=math.ceil(8 * width / 3 / 32) * 32,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=tie_word_embeddings,
        max_position_embeddings=context_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul weight plus attention scores (PaLM's appendix B)."""
    config, embeddings = model.config, model.get_input_embeddings().weight
    matmul_params = model.num_parameters() - embeddings.numel()  # a lookup is no matmul
    if model.get_output_embeddings().weight is embeddings:  # tied: the output projection still is one
        matmul_params += embeddings.numel()
    return 6 * matmul_params + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def peak_flops(name: str | None = None) -> float | None:
    """The bf16 peak of the GPU called `name` (default: this process's GPU), None for a CPU or an unknown GPU."""
    if name is None and not torch.cuda.is_available():
        return None
    name = name or torch.cuda.get_device_name()
    return next((peak for fragment, peak in GPU_BF16_PEAK if fragment in name), None)


def synchronize() -> None:
    """Wait for the accelerator's queued work: a GPU runs asynchronously, and a timer read without this measures
    how fast the kernels were launched."""
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()


class Throughput(TrainerCallback):
    """Adds tokens/s (and MFU where the GPU's peak is known) to each training log, timing only the steps, between
    synchronisations. The first `skip` steps of a run are not counted: they hold torch.compile's compilation and the
    allocator's warm-up, which would drag the first logged figures down."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, skip: int = 1):
        self.tokens_per_step, self.flops_per_token, self.peak = tokens_per_step, flops_per_token, peak_flops()
        self.skip, self.seen = skip, 0
        self.busy, self.steps = 0.0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.seen += 1
        if self.seen > self.skip:
            self.busy += time.perf_counter() - self.start
            self.steps += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or not self.steps:
            return
        tokens_per_second = self.steps * self.tokens_per_step / self.busy
        extra = {"tokens_per_second": round(tokens_per_second)}
        if self.peak:
            extra["mfu"] = round(tokens_per_second * self.flops_per_token / (self.peak * args.world_size), 4)
        logs.update(extra)
        state.log_history[-1].update(extra)
        self.busy, self.steps = 0.0, 0


class BlockCollator(DataCollatorForLanguageModeling):
    """Causal-LM batches of packed blocks, without an attention mask when no position is padding. With one, even all
    ones, SDPA gets a dense mask and cannot use its flash kernel whenever transformers cannot drop it, as under
    torch.compile before torch 2.14 (masking_utils._ignore_causal_mask_sdpa); without one it runs causal."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, mlm=False)

    def torch_call(self, examples):
        batch = super().torch_call(examples)
        if batch["attention_mask"].all():
            del batch["attention_mask"]
        return batch


class MuonWithAdamW(torch.optim.Optimizer):
    """Two optimizers stepped as one, so that Trainer's scheduler, accelerate and checkpoints see a single one.

    The param groups are the parts' own dictionaries, read from the parts each time (a part's
    load_state_dict replaces them, and accelerate calls it when it prepares the optimizer): the scheduler's
    learning rate reaches both parts, each scaled from its own start. AdamW's groups come first, so the
    logged learning rate is AdamW's. Optimizer.__init__ is not called: it would keep groups of its own.
    """

    def __init__(self, adamw: torch.optim.Optimizer, muon: torch.optim.Muon):
        self.parts = {"adamw": adamw, "muon": muon}
        self.defaults = {}

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    @property
    def state(self) -> dict:
        return {param: state for part in self.parts.values() for param, state in part.state.items()}

    def step(self, closure=None):
        for part in self.parts.values():
            part.step()

    def zero_grad(self, set_to_none: bool = True):
        for part in self.parts.values():
            part.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state_dict[name])


class PretrainTrainer(Trainer):
    """Trainer whose model card also names the training data and the tokenizer, with Muon as an option."""

    card_text = ""
    muon_learning_rate: float | None = None

    def create_optimizer(self, model=None):
        """With `muon_learning_rate`: Muon for the hidden layers' weight matrices; embeddings, head and norms
        keep the recipe's AdamW (`optim`, `learning_rate`), as in modded-nanogpt and nanochat: Muon
        orthogonalizes a matrix's update, which suits a linear map but not a lookup table or a gain vector."""
        if self.muon_learning_rate is None or self.optimizer is not None:
            return super().create_optimizer(model)
        if self.is_deepspeed_enabled:  # DeepSpeed builds and steps its own optimizer from its config
            raise LmforgeError(
                "muon_learning_rate: Muon is not supported under DeepSpeed; use DDP or FSDP "
                "(accelerate_configs/multi_gpu.yaml, fsdp2.yaml), or remove the key for AdamW"
            )
        model = model or self.model
        lookups = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
        decay = set(self.get_decay_parameter_names(model))
        matrices, decayed, other = [], [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                group = matrices if p.ndim == 2 and id(p) not in lookups else decayed if name in decay else other
                group.append(p)
        adamw_cls, adamw_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        adamw = adamw_cls(
            [{"params": decayed, "weight_decay": self.args.weight_decay}, {"params": other, "weight_decay": 0.0}],
            **adamw_kwargs,
        )
        muon = torch.optim.Muon(matrices, lr=self.muon_learning_rate, weight_decay=self.args.weight_decay)
        self.optimizer = MuonWithAdamW(adamw, muon)
        return self.optimizer

    def create_model_card(self, **kwargs):
        super().create_model_card(**kwargs)
        readme = Path(self.args.output_dir) / "README.md"
        if readme.exists():
            readme.write_text(readme.read_text() + self.card_text)


def load_blocks(args: PretrainArguments, tokenizer):
    """The packed dataset, checked against the tokenizer and the model's context."""
    path = Path(args.dataset)
    if not (path / "pack.json").exists():
        raise LmforgeError(f"dataset: {path} is not a finished `lmforge pack` output (no pack.json)")
    pack = json.loads((path / "pack.json").read_text())
    if pack["vocab_size"] != len(tokenizer):
        raise LmforgeError(
            f"tokenizer: {args.tokenizer} has {len(tokenizer)} tokens but {path} was packed with a "
            f"{pack['vocab_size']}-token tokenizer ({pack['settings']['tokenizer']})"
        )
    blocks = load_from_disk(str(path))
    for split in ("train", "validation"):
        if split not in blocks or len(blocks[split]) == 0:
            raise LmforgeError(f"dataset: {path} has no {split} blocks")
    seq_len = len(blocks["train"][0]["input_ids"])
    if seq_len > args.context_length:
        raise LmforgeError(f"context_length: {args.context_length} is shorter than the dataset's blocks ({seq_len})")
    return blocks, seq_len


def resume_checkpoint(output_dir: Path, tokenizer) -> str | None:
    """The last checkpoint in `output_dir` that can be resumed (lmforge.lib.models), checked against the tokenizer."""
    checkpoint = last_checkpoint(output_dir)
    if checkpoint is None:
        return None
    vocab_size = json.loads((Path(checkpoint) / "config.json").read_text())["vocab_size"]
    if vocab_size != len(tokenizer):
        raise LmforgeError(f"{checkpoint}: model vocabulary {vocab_size} != tokenizer's {len(tokenizer)}")
    return checkpoint


@torch.no_grad()
def memorization(model, blocks, tokenizer, args: PretrainArguments) -> dict:
    """Greedy continuations of training documents' first tokens: the share reproduced verbatim."""
    span = args.memorization_prefix + args.memorization_tokens
    probes = []  # document starts (<|bos|>) with a whole probe after them inside one block, from random blocks
    for ids in blocks.shuffle(seed=0)["input_ids"]:
        starts = [i for i, token in enumerate(ids[: len(ids) - span + 1]) if token == tokenizer.bos_token_id]
        probes += [ids[i : i + span] for i in starts]
        if len(probes) >= args.memorization_probes:
            break
    if not probes:
        return {"probes": 0}
    probes = torch.tensor(probes[: args.memorization_probes])
    model.eval()
    prompt = probes[:, : args.memorization_prefix].to(model.device)
    output = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=args.memorization_tokens,
        do_sample=False,
        eos_token_id=None,  # a document's end inside the window is part of what must be reproduced
    )
    generated = output[:, args.memorization_prefix :].cpu()
    target = probes[:, args.memorization_prefix :]
    same = generated[:, : target.shape[1]] == target[:, : generated.shape[1]]
    return {
        "probes": len(probes),
        "prefix_tokens": args.memorization_prefix,
        "continuation_tokens": args.memorization_tokens,
        "verbatim_share": same.all(dim=1).float().mean().item(),
        "token_match_share": same.float().mean().item(),
    }


def main(args: PretrainArguments, training_args: TrainingArguments, callbacks: tuple = ()) -> None:
    tokenizer = load_tokenizer(args.tokenizer, "bos_token", "eos_token")
    blocks, seq_len = load_blocks(args, tokenizer)
    output_dir = Path(training_args.output_dir)
    last_checkpoint = resume_checkpoint(output_dir, tokenizer)

    shape = model_config(
        args.depth,
        tokenizer,
        args.context_length,
        args.hidden_size,
        args.num_attention_heads,
        args.num_key_value_heads,
        args.tie_word_embeddings,
    )
    model = AutoModelForCausalLM.from_config(shape, attn_implementation=args.attn_implementation)
    say = process_state().print  # the main process prints; each rank would repeat the same line
    say(
        f"pretrain: depth {args.depth}, width {shape.hidden_size}, {model.num_parameters() / 1e6:.2f}M "
        f"parameters, blocks of {seq_len} tokens"
    )
    batch = apply_global_batch("pretrain", training_args, args.global_batch_tokens, seq_len)
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=blocks["train"],
        eval_dataset=blocks["validation"],
        data_collator=BlockCollator(tokenizer),
        processing_class=tokenizer,
        preprocess_logits_for_metrics=token_losses,
        compute_metrics=partial(
            bits_per_byte, metric=load_metric("bits_per_byte"), token_bytes=utf8_lengths(tokenizer)
        ),
        callbacks=[
            Throughput(batch.tokens, flops_per_token(model, seq_len), skip=3 if training_args.torch_compile else 1),
            *callbacks,
        ],
    )
    pack = json.loads((Path(args.dataset) / "pack.json").read_text())["settings"]
    trainer.card_text = (
        f"\n## Data and tokenizer\n\nTrained from scratch with lmforge on `{args.dataset}`, packed in blocks of "
        f"{seq_len} tokens from {pack['documents'] + pack['text_files']}, with the byte-level BPE tokenizer "
        f"`{args.tokenizer}` ({len(tokenizer)} tokens).\n"
    )
    trainer.muon_learning_rate = args.muon_learning_rate
    if last_checkpoint:
        say(f"pretrain: resuming from {last_checkpoint}")
    trainer.train(resume_from_checkpoint=last_checkpoint)

    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    trainer.save_model()
    trainer.save_state()
    if args.memorization_probes > 0:
        # Every rank generates (greedy: the same figures): under ZeRO-3 each holds a slice of each weight, and a
        # generate on rank 0 alone waited for the others.
        with whole_weights(model):
            probes = memorization(model, blocks["train"], tokenizer, args)
        if trainer.is_world_process_zero():
            write_json(output_dir / "memorization.json", probes)
    card = {"dataset": args.dataset, "tags": ["lmforge", "pretraining", "llama"]}
    if trainer.is_world_process_zero():
        trainer.create_model_card(**card)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    say(f"pretrain: eval_loss {metrics['eval_loss']:.4f}, bits/byte {metrics['eval_bits_per_byte']:.4f}")


CONFIGS = (PretrainArguments, TrainingArguments)  # what `--config recipes/*/pretrain*.yaml` is parsed into


def cli(argv=None):
    args, training_args = parse(CONFIGS, argv)
    main(args, training_args)
    exit_launched()


if __name__ == "__main__":
    cli()
