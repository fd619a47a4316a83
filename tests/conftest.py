"""Test settings: nothing may reach the network, and every cache but compiled ops lives in a temporary folder."""

import os
import sys
import tempfile


_cache = tempfile.mkdtemp(prefix="lmforge-test-cache-")
# DeepSpeed compiles its CPU communication op on first use (about 25 s). The build is kept with the environment it
# was built for, so both test workers, and later runs, share one build; torch rebuilds it when its sources change.
_extensions = os.path.join(sys.prefix if os.access(sys.prefix, os.W_OK) else _cache, "torch_extensions")
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
    "TORCH_EXTENSIONS_DIR": _extensions,
    "LMFORGE_NLTK_DATA": os.path.join(_cache, "nltk_data"),
}.items():
    os.environ[name] = value  # before any test imports huggingface_hub, which reads them at import time
