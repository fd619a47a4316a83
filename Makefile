# `make demo` and `make test` work on a fresh machine: each builds .venv first if it is missing or stale.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
# torch is installed alone, first, at the version setup.cfg pins: pulled in by another package,
# pip would resolve a multi-GB CUDA build instead of the CPU wheel.
TORCH  := $(shell grep -o -m1 '^ *torch==[0-9.]*' setup.cfg)
# Nothing the demo or the tests run may reach the network.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_EVALUATE_OFFLINE=1 \
           TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false GRADIO_ANALYTICS_ENABLED=False

# Both cores: each test file runs whole in one worker, so its module fixtures are built once. One thread per process:
# two workers, and the two-process launches of a test, would otherwise oversubscribe the cores (pytest 876 s -> 726 s
# on the 2-core machine, BENCHMARKS.md "The test suite").
PARALLEL := -n 2 --dist loadfile
TEST_THREADS := OMP_NUM_THREADS=1

.PHONY: install browser sandbox demo test test-fast lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# an old pip silently skips lxml_html_clean, after which text extraction returns nothing
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	# DeepSpeed's ops are compiled just in time when first used, not at install (which would need CUDA)
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The page tests drive Debian's Chromium with Playwright (Playwright cannot download its own browser
# offline). Without root or apt the tests that need it are skipped, and say why.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

# The python tool runs snippets under bubblewrap and refuses to run without it (see README, "Tools in the
# conversation"). Without root or apt, install it another way or accept LMFORGE_UNSAFE_PYTHON_TOOL=1.
sandbox:
	@test -x /usr/bin/bwrap || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
		|| echo "bubblewrap could not be installed: the python tool will refuse to run"

# The whole pipeline on the shipped demo data, then a short chat with the final model (GRPO's): who it is, and a sum.
# No tools: the demo assistant is not taught tool calls (README, "The demo"). A model the RL watch flagged is not
# chatted with (lmforge chat says why).
demo: install
	$(OFFLINE) $(BIN)/lmforge run recipes/demo
	@echo "\nReport: runs/demo/report.md\n"
	$(OFFLINE) $(BIN)/lmforge chat --config recipes/demo/chat.yaml --model_name_or_path runs/demo/grpo \
		--do_sample false --repetition_penalty 1.0 --max_new_tokens 48 < data/demo/chat_input.txt

test: install browser sandbox
	$(OFFLINE) $(TEST_THREADS) $(BIN)/pytest -q $(PARALLEL)

test-fast: install sandbox
	$(OFFLINE) $(TEST_THREADS) $(BIN)/pytest -q $(PARALLEL) -m "not slow"

# ruff (lint and format, configured in ruff.toml as TRL configures it) and the import contracts of setup.cfg.
# .ci/run runs it before the tests; `pre-commit install` runs the same on each commit (.pre-commit-config.yaml).
lint: install
	$(BIN)/ruff check src tests bench data
	$(BIN)/ruff format --check src tests bench data
	$(BIN)/lint-imports

bench: install
	$(OFFLINE) $(BIN)/python bench/data_pipeline.py
	$(OFFLINE) $(BIN)/python bench/tokenizer_pack.py
	$(OFFLINE) $(BIN)/python bench/startup.py

clean:
	rm -rf runs .pytest_cache
