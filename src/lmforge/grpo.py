"""Stage 6, GRPO: the SFT assistant improved on verifiable tasks with TRL's GRPOTrainer.

    lmforge grpo --config recipes/demo/grpo.yaml
    accelerate launch -m lmforge.grpo --config recipes/demo/grpo.yaml   # several processes or machines

For each prompt the policy samples `num_generations` replies; each reply is scored by the reward functions the
recipe names (`rewards`, see lmforge.lib.rewards: answer correctness on lmforge's arithmetic and counting and on
reasoning-gym tasks, math-verify, <think> format, length and repetition penalties, a cost per tool call, and
optionally the reward model), and the policy moves toward the replies that beat their group's mean. `beta` > 0 keeps
it near the SFT model with a KL penalty (the reference is reloaded from `model_name_or_path`, so that must be a saved
directory or Hub id). With `tools` (recipes/demo/grpo_tools.yaml) the policy's tool calls run while it samples, the
results are kept out of the loss, and `accuracy` with `tool_cost` makes a call worth it only where it gets the answer
right: RL learns when a call pays off.
With `use_vllm: true, vllm_mode: colocate` (the GPU recipes; the `vllm` extra) TRL samples with a vLLM engine inside
each training process, and the tool loop runs each of its rounds on that engine too.
The watch (lmforge.lib.watch) samples held-out prompts during training and stops a run that degenerates; held-out
accuracy, reward-model score, KL to the SFT model and repetition are measured before and after (lmforge.lib.rl_eval).
Killed, the stage resumes from the last checkpoint.

Outputs under `output_dir`: the policy and tokenizer, `checkpoint-*/`, `watch.json`, `eval_before.json` and
`grpo_results.json` (written last: rewards logged at the start and end, the before/after table, the watch's report).
"""

import os
from dataclasses import dataclass, field
from functools import partial

from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from lmforge import LmforgeError
from lmforge.lib.cards import RightCard, datasets_of
from lmforge.lib.configs import exit_launched, from_json, parse
from lmforge.lib.models import generates_together
from lmforge.lib.rewards import reward_functions, verifiable_prompts
from lmforge.lib.rl_eval import (
    HeldoutConfig,
    chat_tokenizer,
    evaluate_sft,
    evaluate_trained,
    heldout_prompts,
    push,
    restore_sft_settings,
    without_heldout,
    write_results,
)
from lmforge.lib.tools import load_tools
from lmforge.lib.tools.generation import Generate, engine_generate, generate_with_tools, model_generate, prompt_tools
from lmforge.lib.trl_logs import GRPO_KL, GRPO_REWARD, logged
from lmforge.lib.watch import WatchCallback, WatchConfig


@dataclass
class GRPOScriptArguments:
    model_name_or_path: str = field(default="runs/demo/sft", metadata={"help": "The SFT model: policy and reference."})
    tasks: dict | str | None = field(
        default=None,
        metadata={
            "help": "Training prompts, task -> count: `arithmetic` (lmforge) or a reasoning-gym "
            "dataset name such as basic_arithmetic, gsm_symbolic."
        },
    )
    rewards: dict | str | None = field(
        default=None,
        metadata={
            "help": "Reward name -> options (and weight), see lmforge.lib.rewards.REWARDS; "
            "`reward_model: {path: DIR}` adds a reward model."
        },
    )
    tools: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Tools the policy's calls run with while it samples (lib.tools): "
            "python, search. Their results are kept out of the loss."
        },
    )
    max_tool_calls: int = field(default=4, metadata={"help": "Tool calls allowed in one completion."})
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel of the models trained and the reference: sdpa, eager, flash_attention_2 "
            "(needs the flash-attn package); None: transformers' default (sdpa)."
        },
    )

    def __post_init__(self):
        self.tasks = from_json(self.tasks, "tasks") or {"arithmetic": 512}
        self.rewards = from_json(self.rewards, "rewards") or {"accuracy": {}}


CONFIGS = (GRPOScriptArguments, GRPOConfig, WatchConfig, HeldoutConfig)


# Why not TRL's own tool loop (GRPOTrainer(tools=[...]), GRPOConfig.max_tool_calling_iterations, TRL 1.12): it takes
# tools as Python functions whose JSON schema the chat template renders into the prompt, finds calls by parsing the
# reply with the tokenizer's response schema (known for the families TRL ships templates for), and sends results
# back as `tool` role messages in a new turn. lmforge's tools speak another protocol, the one SFT taught: calls and
# results inside the assistant's own turn between <|tool_call|> and <|tool_result|> markers, no schema in the prompt,
# sandboxed tool objects (lib.tools). Its loop would neither see these calls nor render results as the model learnt
# them, so the stage passes this rollout_func, which runs the same loop as rollouts, eval and chat do.
def tool_rollouts(tools: dict, max_calls: int):
    """A GRPOTrainer `rollout_func` that samples with the tools run (lmforge.lib.tools.generation): a completion is
    the model's tokens and the results, `env_mask` marks the results so that the loss and the KL skip them, and
    each completion's number of calls reaches the reward functions as `tool_calls`."""

    def rollout(prompts: list, trainer) -> dict:
        tokenizer = trainer.processing_class
        prompt_ids = [
            tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tools=prompt_tools(tokenizer, tools))[
                "input_ids"
            ]
            for prompt in prompts
        ]  # one per completion: the trainer has repeated each prompt already
        loop = (tokenizer, prompt_ids, tools, [tokenizer.eos_token_id], trainer.max_completion_length, max_calls)
        if trainer.use_vllm:  # TRL synced the engine's weights to the policy's before calling this
            turns = generate_with_tools(vllm_generate(trainer.vllm_generation), *loop)
        else:
            sampling = {
                key: value
                for key, value in trainer.generation_kwargs.items()
                if key not in ("max_new_tokens", "eos_token_id", "pad_token_id")
            }
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ) as model:
                # Under ZeRO-3 or FSDP each generation step waits for every process, and each process's prompts need
                # their own number of rounds: the processes go round together.
                synced = generates_together(model)
                turns = generate_with_tools(model_generate(model, tokenizer, **sampling), *loop, synced=synced)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [turn.ids for turn in turns],
            "logprobs": None,
            "env_mask": [turn.mask for turn in turns],
            "tool_calls": [turn.calls for turn in turns],
        }

    return rollout


def vllm_generate(engine) -> Generate:
    """TRL's colocated vLLM engine (`trainer.vllm_generation`) as the tool loop's generate, with the sampling settings
    TRL itself passes it (trainer.generation_kwargs is set only without vLLM)."""
    from vllm import SamplingParams  # the `vllm` extra, on GPU machines only

    sampling = {
        "n": 1,
        "temperature": engine.temperature,
        "top_p": engine.top_p,
        "top_k": engine.top_k,
        "min_p": engine.min_p or 0.0,
        "repetition_penalty": engine.repetition_penalty,
        **engine.generation_kwargs,
    }
    return engine_generate(engine.llm, partial(SamplingParams, **sampling))


def check_tool_engine(training_args: GRPOConfig) -> None:
    """The tool loop samples each round on this process's own engine. A vLLM server serves all processes in one call
    (TRL gathers the prompts), tensor parallelism splits one engine over several, and a sleeping engine has dropped
    its weights: rounds that differ between processes cannot go through those."""
    if training_args.use_vllm and (
        training_args.vllm_mode != "colocate"
        or training_args.vllm_tensor_parallel_size > 1
        or training_args.vllm_enable_sleep_mode
    ):
        raise LmforgeError(
            "tools: with use_vllm the tool loop needs vllm_mode: colocate, vllm_tensor_parallel_size: 1 and "
            "vllm_enable_sleep_mode: false"
        )


class PolicyTrainer(RightCard, GRPOTrainer):
    """GRPOTrainer whose model card names the SFT model and the data as they are (lib.cards.training_card)."""


def main(
    script_args: GRPOScriptArguments,
    training_args: GRPOConfig,
    watch_config: WatchConfig,
    heldout_config: HeldoutConfig,
) -> dict:
    output_dir = training_args.output_dir
    tokenizer = chat_tokenizer(script_args.model_name_or_path)
    heldout = heldout_prompts(heldout_config)
    train = without_heldout(verifiable_prompts(script_args.tasks, training_args.seed), heldout)
    functions, processing_classes, training_args.reward_weights = reward_functions(script_args.rewards)
    if script_args.tools:
        check_tool_engine(training_args)

    before = evaluate_sft(script_args.model_name_or_path, tokenizer, heldout, heldout_config, output_dir)
    training_args.model_init_kwargs = {  # TRL loads the policy and the reference with these
        **(training_args.model_init_kwargs or {}),
        "attn_implementation": script_args.attn_implementation,
    }
    watch = WatchCallback(watch_config, heldout["prompt"], tokenizer, output_dir)
    trainer = PolicyTrainer(
        model=script_args.model_name_or_path,  # a path, so that TRL can load the frozen reference from it too
        reward_funcs=functions,
        reward_processing_classes=processing_classes,
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[watch],
        base_model=script_args.model_name_or_path,
        datasets=datasets_of(script_args.tasks),
        rollout_func=tool_rollouts(load_tools(script_args.tools), script_args.max_tool_calls)
        if script_args.tools
        else None,
    )
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    trainer.train(resume_from_checkpoint=last)

    sft_path = script_args.model_name_or_path
    trainer.save_model(output_dir)
    final_model = watch.restore_last_healthy(output_dir) or "last step"  # after a stop: the last healthy checkpoint
    restore_sft_settings(sft_path, output_dir)
    after = evaluate_trained(output_dir, sft_path, tokenizer, heldout, heldout_config)

    reward_first, reward_last = logged(trainer.state.log_history, GRPO_REWARD)
    results = {
        "tasks": script_args.tasks,
        "rewards": script_args.rewards,
        "tools": script_args.tools,
        "train_prompts": len(train),
        "reward_first": reward_first,
        "reward_last": reward_last,
        "kl_last": logged(trainer.state.log_history, GRPO_KL)[1],
        "resumed_from": last,
        "attn_implementation": trainer.model.config._attn_implementation,
        "eval": {"before": before, "after": after},
        "watch": watch.report(),
        "final_model": final_model,
    }
    write_results(output_dir, "grpo", results)
    if training_args.push_to_hub:
        push(trainer, "grpo")
    return results


def cli(argv=None):
    main(*parse(CONFIGS, argv))
    exit_launched()


if __name__ == "__main__":
    cli()
