"""Test settings: nothing may reach the network, and every cache lives in a temporary folder."""

import os
import tempfile


_cache = tempfile.mkdtemp(prefix="lmforge-test-cache-")
for name, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
    "HF_HOME": os.path.join(_cache, "hf"),
    "TLDEXTRACT_CACHE": os.path.join(_cache, "tldextract"),
    "TORCHINDUCTOR_CACHE_DIR": os.path.join(_cache, "inductor"),
    "TORCH_EXTENSIONS_DIR": os.path.join(_cache, "torch_extensions"),
    "LMFORGE_NLTK_DATA": os.path.join(_cache, "nltk_data"),
}.items():
    os.environ[name] = value  # before any test imports huggingface_hub, which reads them at import time
