"""Stage 4, supervised fine-tuning: base model -> assistant, with TRL's SFTTrainer.

    lmforge sft --config recipes/demo/sft.yaml
    lmforge sft --config recipes/demo/sft_lora.yaml             # LoRA adapter instead of full weights
    accelerate launch -m lmforge.sft --config recipes/demo/sft.yaml   # several processes or machines

With `global_batch_tokens`, the tokens per optimizer step stay the same on any number of processes
(lmforge.lib.batching derives gradient accumulation); otherwise the batch grows with the processes.

Conversations come from generators, Hub datasets and local files (lmforge.lib.conversations, lib.sources), in TRL's
conversational (`messages`) or prompt-completion format. Each source's rows are taken by `weight` first, then
checked one by one (roles, order, empty content, length; in `dataset_num_proc` processes), held out (the source's
test split, or `eval_fraction` of its rows by a hash of each), mixed and rendered with the tokenizer's chat template;
the loss covers assistant tokens only (assistant_only_loss).
The conversation convention (end of turn, training template) comes from the model (lmforge.lib.chat_format): a
template without {% generation %} markers is swapped for a marked one that renders identically (TRL's or
lmforge's), `chat_template_path` gives a base model without a template one (chatml, mistral, llama3, gemma,
qwen2_5, a .jinja file or a chat model's tokenizer), and a template that would inject its own default system
prompt into rows without one is reported: the recipe's `system_prompt` decides what they carry.
With `use_peft: true` the trainer wraps the model in a LoRA adapter (trl.ModelConfig's lora_* keys);
`lmforge merge` folds it back into the base. Killed, the stage resumes from the last checkpoint.

Outputs under `output_dir`: the model (or adapter) and tokenizer, a generation config that stops at
the model's end of turn, README.md (model card naming the base's Hub id), `checkpoint-*/`, and
`sft_results.json` (written last: rows per
source, invalid rows dropped, validation loss before and after training on at most `eval_max_rows` rows,
the chat template used and its end of turn).
"""

import json
import os
import warnings
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import IntervalStrategy
from trl import ModelConfig, SFTConfig, SFTTrainer

from lmforge import LmforgeError
from lmforge.lib.batching import apply_global_batch
from lmforge.lib.cards import RightCard, datasets_of
from lmforge.lib.chat_format import chat_format, end_of_turn_ids, set_chat_template, training_template
from lmforge.lib.configs import exit_launched, parse
from lmforge.lib.conversations import load_conversations
from lmforge.lib.files import write_json
from lmforge.lib.loading import load
from lmforge.lib.models import last_checkpoint, peft_config
from lmforge.lib.sources import named_sources


@dataclass
class SFTScriptArguments(ModelConfig):
    """trl.ModelConfig (model path, dtype, use_peft and lora_* keys) plus where the conversations come from."""

    model_name_or_path: str = field(
        default="runs/demo/pretrain", metadata={"help": "The base model: the pretrain stage's output or a Hub id."}
    )
    datasets: dict | str | None = field(
        default=None,
        metadata={
            "help": "Name -> source: {generator: NAME, ...options} or load_dataset keywords, "
            "each with an optional weight (fraction of its rows, above 1 repeats)."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "Prepended as a system message to every conversation that has none. Set it "
            "when the model's template injects its own default system prompt (the "
            "stage warns): rows then carry this one instead."
        },
    )
    invalid_rows: str = field(
        default="stop", metadata={"help": "stop: a malformed conversation is an error; drop: skip and count it."}
    )
    eval_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Conversations held out for validation loss: a source's test split, or this share of its rows "
            "by a hash of each (0: none)."
        },
    )
    eval_max_rows: int | None = field(
        default=None,
        metadata={
            "help": "At most this many held-out conversations are evaluated (before, during and "
            "after training), so a short run spends its time training. None: all."
        },
    )
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model for the model card (default: read from a Hub "
            "cache folder, the folder's config or its lmforge card)."
        },
    )
    global_batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per optimizer step over all processes, counting max_length per "
            "sequence (exact with packing, a ceiling without); derives gradient "
            "accumulation. learning_rate is for this batch."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.datasets = named_sources(self.datasets, "datasets")
        if self.invalid_rows not in ("stop", "drop"):
            raise LmforgeError(f"invalid_rows: {self.invalid_rows!r} is not one of ['stop', 'drop']")


CONFIGS = (SFTScriptArguments, SFTConfig)


class AssistantTrainer(RightCard, SFTTrainer):
    """SFTTrainer whose model card names the base model and each dataset as they are (lib.cards.training_card)."""


def main(script_args: SFTScriptArguments, training_args: SFTConfig) -> dict:
    source = script_args.model_name_or_path
    tokenizer = load(AutoTokenizer, source, "model_name_or_path")  # a folder not there yet: one line
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=script_args.dtype, attn_implementation=script_args.attn_implementation
    )
    context = getattr(model.config, "max_position_embeddings", None)
    if training_args.max_length and context and training_args.max_length > context:
        raise LmforgeError(f"max_length {training_args.max_length} is longer than the model's context {context}")
    # The recipe's template wins, and is applied here (not by TRL) so that every check below sees it.
    if training_args.chat_template_path:
        model, tokenizer = set_chat_template(model, tokenizer, training_args.chat_template_path)
        training_args.chat_template_path = None
    convention = chat_format(tokenizer, source)
    template_source = "model"
    if training_args.assistant_only_loss:
        tokenizer.chat_template, template_source = training_template(tokenizer, source)
    conversations, heldout, sources = load_conversations(
        script_args.datasets,
        tokenizer,
        training_args.max_length,
        script_args.invalid_rows,
        script_args.system_prompt,
        training_args.seed,
        heldout_fraction=script_args.eval_fraction or None,
        num_proc=training_args.dataset_num_proc,
    )
    without_system = sum(messages[0]["role"] != "system" for messages in conversations["messages"])
    if convention.default_system_prompt and without_system:
        warnings.warn(
            f"{source}: the chat template puts its own system prompt "
            f"{convention.default_system_prompt!r} into the {without_system} of {len(conversations)} "
            "training conversations that have none; set `system_prompt:` in the recipe to choose theirs"
        )
    splits = {"train": conversations, "test": heldout}
    if heldout is not None and script_args.eval_max_rows is not None:
        splits["test"] = heldout.select(range(min(script_args.eval_max_rows, len(heldout))))
    if heldout is None:
        training_args.eval_strategy = IntervalStrategy.NO  # nothing held out, nothing to evaluate

    # Generation stops at the model's end of turn; a base model's generation only stopped at end of text.
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer, eos)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    apply_global_batch("sft", training_args, script_args.global_batch_tokens, training_args.max_length)
    trainer = AssistantTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["test"],
        processing_class=tokenizer,
        peft_config=peft_config(script_args, model),
        base_model=script_args.base_model_id or source,
        datasets=datasets_of(script_args.datasets),
    )

    last = last_checkpoint(training_args.output_dir)
    # Validation loss before training says what SFT changed; on resume the starting point is gone. Trainer measures
    # it at step 0 (`eval_on_start`), inside train(), once the model is wrapped for training: an evaluate() before
    # train() prepares it a first time, for inference, which DeepSpeed refuses under ZeRO-2 and which under ZeRO-3
    # leaves training an engine without an optimizer (accelerate's backward then fails on None).
    trainer.args.eval_on_start = splits["test"] is not None and last is None
    train = trainer.train(resume_from_checkpoint=last)
    before = next((e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e), None)
    before = before if trainer.args.eval_on_start else None
    after = trainer.evaluate()["eval_loss"] if splits["test"] is not None else None

    trainer.model.config.use_cache = True
    trainer.save_model(training_args.output_dir)  # with an adapter, only the adapter and tokenizer
    if trainer.is_world_process_zero():
        model.generation_config.save_pretrained(training_args.output_dir)
    trainer.create_model_card(
        model_name=os.path.basename(os.path.normpath(training_args.output_dir)),
        dataset_name=", ".join(sources),
        tags=["lmforge", "sft"],
    )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=", ".join(sources), tags=["lmforge", "sft"])
    results = {
        "sources": sources,
        "train_rows": len(splits["train"]),
        "eval_rows": len(splits["test"]) if splits["test"] is not None else 0,
        "eval_loss_before": before,
        "eval_loss_after": after,
        "train_loss": train.training_loss,
        "resumed_from": last,
        "lora": script_args.use_peft,
        "attn_implementation": model.config._attn_implementation,
        "chat_template": {
            "source": template_source,
            "end_of_turn": convention.end_of_turn,
            "default_system_prompt": convention.default_system_prompt,
            "rows_without_system_prompt": without_system,
        },
    }
    if trainer.is_world_process_zero():
        write_json(os.path.join(training_args.output_dir, "sft_results.json"), results)
        print(json.dumps(results, indent=2))
    return results


def cli(argv=None):
    script_args, training_args = parse(CONFIGS, argv)
    main(script_args, training_args)
    exit_launched()


if __name__ == "__main__":
    cli()
