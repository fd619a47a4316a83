"""The library every stage shares: recipes (configs), files and atomic writes, model loading and devices, the
conversation convention (chat_format), generation with tools, tasks and their checkers (conversations, rewards),
metrics, and the stage registry (stages). A module here never imports a stage (lmforge.<stage>); a stage never
imports another stage. `make lint` checks both (import-linter contracts in setup.cfg).

Printing: the stages that run under `accelerate launch` (pretrain, sft, reward, ppo, grpo, dpo, eval, and this library
where they call it) print on the main process only, through `models.process_state().print` or inside a main-process
branch (`trainer.is_world_process_zero()`, `process_state().is_main_process`; eval measures on the main process
alone). The one line every rank prints on purpose is `batching.apply_global_batch`'s "STAGE: process i of n on
HOST". The single-process stages (data, tokenizer, pack, tokens, generate, chat, serve, label, rollouts, merge,
interrogate, report, run) use plain `print`."""
