"""The stage registry: every `lmforge` command, what it reads, and where its artifact goes, in one place.

The CLI's usage (lmforge.cli), the runner's order and rerun decisions (lmforge.run), the Hub lineage
cards (lmforge.lib.hub) and the report's defaults (lmforge.report) all read this table.
"""

from dataclasses import dataclass


# `lmforge run` names its run folder (absolute) to each stage it starts in this environment variable: where a stage's
# caches go when its recipe names no place for them (the search tool's index).
RUN_DIR = "LMFORGE_RUN_DIR"


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    pipeline: bool = False  # a step of `lmforge run`, which runs the steps in the order of STAGES below
    # Pipeline stages whose output this stage's recipe points at (as the recipes in recipes/demo/ wire them):
    # when one of them reruns, this stage's output is stale.
    reads: tuple[str, ...] = ()
    repo_type: str | None = None  # "model" or "dataset": the Hub repo its artifact is pushed to (None: not pushed)
    # The stage keeps what its output_dir already holds (skips when it exists, or resumes from its checkpoints),
    # so redoing it means starting from an empty output_dir.
    keeps_output: bool = False
    trains: bool = False  # a Trainer leaves trainer_state.json in its output_dir (the report's training curves)
    # The `lmforge` command that runs it, when the step is another stage's command on a recipe of its own (a second
    # SFT pass); None: the stage's own name.
    command: str | None = None
    # The key figures of its artifact that `lmforge run` prints when it finishes: (label, "FILE:KEY.KEY"), a value in a
    # JSON file of its output_dir (a mapping is shown as its number of entries).
    figures: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return f"lmforge.{self.command or self.name}"


STAGES = {
    stage.name: stage
    for stage in (
        Stage("run", "every stage of a recipe folder in order, rerunning what is stale: lmforge run recipes/demo"),
        Stage(
            "launch", "accelerate launch's arguments, a failed process told in one line: lmforge launch -m lmforge.sft"
        ),
        Stage(
            "data",
            "WARC -> clean text with datatrove (URL, language, quality filters, MinHash dedup, PII)",
            pipeline=True,
            repo_type="dataset",
            keeps_output=True,
            figures=(("documents", "funnel.json:documents_out"),),
        ),
        Stage(
            "tokenizer",
            "clean text -> byte-level BPE tokenizer with special tokens and chat template (tokenizers)",
            pipeline=True,
            reads=("data",),
            repo_type="model",
            keeps_output=True,
            figures=(
                ("tokens", "compression.json:vocab_size"),
                ("held-out bytes/token", "compression.json:heldout.overall.bytes_per_token"),
            ),
        ),
        Stage(
            "tokens",
            "how a text or conversation splits into tokens: ids, bytes, special tokens, loss mask (ANSI, HTML)",
        ),
        Stage(
            "pack",
            "documents -> fixed-length blocks of token ids, train/validation, saved with datasets",
            pipeline=True,
            reads=("data", "tokenizer"),
            keeps_output=True,
            figures=(("training blocks", "pack.json:splits.train.blocks"),),
        ),
        Stage(
            "pretrain",
            "packed blocks -> Llama-family base model from scratch (transformers Trainer)",
            pipeline=True,
            reads=("tokenizer", "pack"),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("held-out bits/byte", "eval_results.json:eval_bits_per_byte"),),
        ),
        Stage("generate", "sample from a saved model: temperature, top-k/top-p, seeds, streaming"),
        Stage(
            "sft",
            "base model -> assistant on validated, mixed conversations; full or LoRA (TRL SFTTrainer)",
            pipeline=True,
            reads=("pretrain",),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("validation loss", "sft_results.json:eval_loss_after"),),
        ),
        Stage("merge", "fold a LoRA adapter into its base model (peft)"),
        Stage(
            "interrogate",
            "ask known-answer questions; write refusals for what the model does not know",
            pipeline=True,
            reads=("sft",),
            keeps_output=True,
            figures=(("questions it cannot answer", "report.json:unknown"),),
        ),
        Stage(
            "sft_refusals",
            "SFT retrained from the base with interrogate's refusals mixed in: an assistant that "
            "says when it does not know (`lmforge sft` on recipes/demo/sft_refusals.yaml)",
            pipeline=True,
            reads=("pretrain", "interrogate"),
            repo_type="model",
            keeps_output=True,
            trains=True,
            command="sft",
            figures=(("validation loss", "sft_results.json:eval_loss_after"),),
        ),
        Stage("chat", "multi-turn terminal chat with a saved assistant model, streamed"),
        Stage("serve", "a local chat page (Gradio) for a saved assistant model: streamed, settings, tools"),
        Stage(
            "rollouts",
            "K sampled responses per prompt from a chat model, resumable, saved with datasets",
            pipeline=True,
            reads=("sft",),
            keeps_output=True,
        ),
        Stage(
            "label",
            "rank rollouts on a local page (Gradio) or with judges; export pairwise preferences",
            pipeline=True,
            reads=("rollouts",),
            repo_type="dataset",
            keeps_output=True,
            figures=(("pairs", "export.json:pairs"),),
        ),
        Stage(
            "reward",
            "preference pairs -> reward model with a scalar head (TRL RewardTrainer)",
            pipeline=True,
            reads=("sft", "label"),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("held-out pairwise accuracy", "rewards.json:heldout_accuracy"),),
        ),
        Stage(
            "ppo",
            "SFT model -> policy optimised against the reward model, KL-penalised (TRL experimental PPOTrainer)",
            pipeline=True,
            reads=("sft", "reward"),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("reward-model score change (SD)", "ppo_results.json:eval.reward_model_change_sd"),),
        ),
        Stage(
            "grpo",
            "SFT model -> policy trained on verifiable tasks with registered rewards (TRL GRPOTrainer)",
            pipeline=True,
            reads=("sft",),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("held-out accuracy change", "grpo_results.json:eval.accuracy_change.change"),),
        ),
        # DPO trains on the pairs alone; the reward model scores its held-out replies before and after.
        Stage(
            "dpo",
            "SFT model -> policy trained directly on the preference pairs (TRL DPOTrainer)",
            pipeline=True,
            reads=("sft", "label", "reward"),
            repo_type="model",
            keeps_output=True,
            trains=True,
            figures=(("test pair accuracy", "dpo_results.json:test_accuracy"),),
        ),
        # eval reuses a model's results only while its settings and the model's files are unchanged (its fingerprint),
        # and report rewrites report.md: both redo their work by themselves.
        Stage(
            "eval",
            "every model of a run in one table: bits/byte, chat compliance, accuracy, refusals, pairwise accuracy",
            pipeline=True,
            reads=("data", "pretrain", "sft", "sft_refusals", "label", "reward", "ppo", "grpo", "dpo"),
            figures=(("models", "results.json:models"),),
        ),
        Stage(
            "report",
            "the run's report card: report.md with plots of data, tokenizer, training, evaluation and cost",
            pipeline=True,
            reads=("data", "tokenizer", "pretrain", "sft", "sft_refusals", "reward", "ppo", "grpo", "dpo", "eval"),
        ),
    )
}

PIPELINE = tuple(name for name, stage in STAGES.items() if stage.pipeline)
TRAINING = tuple(name for name, stage in STAGES.items() if stage.trains)


def pushed_parents(name: str) -> list[str]:
    """The nearest stages upstream of `name` that push an artifact, in pipeline order: the repos its Hub card links
    (pack and rollouts push nothing, so the base model links the web text and the tokenizer, the labels the SFT
    model)."""
    parents = set()
    for parent in STAGES[name].reads:
        parents |= {parent} if STAGES[parent].repo_type else set(pushed_parents(parent))
    return [stage for stage in PIPELINE if stage in parents]
