"""The library every stage shares: recipes (configs), files and atomic writes, model loading and devices, the
conversation convention (chat_format), generation with tools, tasks and their checkers (conversations, rewards),
metrics, and the stage registry (stages). A module here never imports a stage (lmforge.<stage>); a stage never
imports another stage. `make lint` checks both (import-linter contracts in setup.cfg)."""
