"""bench/memory.py: the estimate of a recipe's peak memory adds up (parameters counted by hand and by peft) and is
near a training step's measured peak on this CPU."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


ROOT = Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("memory", ROOT / "bench/memory.py")
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)

SHAPE = LlamaConfig(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
# One training step of SHAPE in fp32 on CPU, in a fresh process: its peak resident memory (VmHWM, reset just before
# the model is built by writing 5 to clear_refs) above what the process held then. ru_maxrss cannot be reset: a
# transient peak while importing could hide the step's own (a delta of 0 was seen under load).
STEP = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM

def status(field):
    line = next(line for line in open("/proc/self/status") if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024

config = LlamaConfig.from_pretrained(sys.argv[1])
ids = torch.randint(config.vocab_size, (8, 512))
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa")
optimizer = torch.optim.AdamW(model.parameters())
for _ in range(2):
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
print(json.dumps({"peak": status("VmHWM") - base}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("shape")
    SHAPE.save_pretrained(path)
    return path


def write_recipe(folder: Path, name: str, **values) -> str:
    path = folder / name
    path.write_text(yaml.safe_dump({"model_name_or_path": "unused", **values}))
    return str(path)


def test_weights_gradients_and_adamw_are_counted_exactly(model_dir, tmp_path):
    parameters = LlamaForCausalLM(SHAPE).num_parameters()
    recipe = write_recipe(tmp_path, "sft.yaml", dtype="float32", per_device_train_batch_size=2, max_length=64)
    full = memory.estimate(memory.MemoryConfig(recipe=recipe, model_config=str(model_dir)))["parts"]
    assert (full["weights"], full["gradients"], full["optimizer"]) == (4 * parameters, 4 * parameters, 8 * parameters)

    # LoRA: peft's own count of the adapter; the base's weights in bfloat16, the adapter's states in fp32.
    targets = ["q_proj", "v_proj", "down_proj"]
    lora = LoraConfig(r=8, target_modules=targets)
    adapter = get_peft_model(LlamaForCausalLM(SHAPE), lora).get_nb_trainable_parameters()[0]
    recipe = write_recipe(
        tmp_path, "sft_lora.yaml", dtype="bfloat16", use_peft=True, lora_r=8, lora_target_modules=targets
    )
    parts = memory.estimate(memory.MemoryConfig(recipe=recipe, model_config=str(model_dir)))["parts"]
    assert (parts["weights"], parts["gradients"], parts["optimizer"]) == (2 * parameters, 4 * adapter, 8 * adapter)

    # DPO keeps a frozen reference and puts chosen and rejected through together; checkpointing shrinks activations.
    recipe = write_recipe(tmp_path, "dpo.yaml", per_device_train_batch_size=2, max_length=64)
    dpo = memory.estimate(memory.MemoryConfig(recipe=recipe, model_config=str(model_dir)))
    assert dpo["parts"]["weights"] == 2 * 4 * parameters and dpo["micro_batch"] == "4 x 64 tokens"
    recipe = write_recipe(
        tmp_path, "dpo_ckpt.yaml", per_device_train_batch_size=2, max_length=64, activation_checkpointing=True
    )
    saved = memory.estimate(memory.MemoryConfig(recipe=recipe, model_config=str(model_dir)))["parts"]
    assert saved["activations"] < dpo["parts"]["activations"] / 2


def test_the_estimate_is_near_a_measured_training_step_on_cpu(model_dir, tmp_path):
    recipe = write_recipe(tmp_path, "sft.yaml", dtype="float32", per_device_train_batch_size=8, max_length=512)
    config = memory.MemoryConfig(recipe=recipe, model_config=str(model_dir), overhead_gib=0, autocast_bf16=False)
    estimated = memory.estimate(config)["total"]
    step = subprocess.run(
        [sys.executable, "-c", STEP, str(model_dir)], capture_output=True, text=True, timeout=300, check=True
    )
    measured = json.loads(step.stdout.splitlines()[-1])["peak"]
    assert 0.7 < estimated / measured < 1.3, (estimated, measured)


def test_a_gpu_recipe_is_followed_to_its_model_and_fits_its_gpu(capsys):
    """recipes/smollm-135m/grpo.yaml starts from the SFT output, which starts from the pretrain recipe's shape."""
    result = memory.cli([str(ROOT / "recipes/smollm-135m/grpo.yaml"), "--gpu_gib", "80"])
    assert result["parameters"] == 134515008  # SmolLM-135M's 134.5M with the 49,152-token vocabulary
    assert "fits a 80 GiB GPU" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["pretrain", "sft", "reward", "grpo"])
def test_each_smollm_135m_recipe_header_quotes_its_estimate(name):
    """The first figure of the header's "Memory per GPU" line is what bench/memory.py says today (80 GB GPU)."""
    path = ROOT / f"recipes/smollm-135m/{name}.yaml"
    header = path.read_text().split("# Memory per GPU", 1)[1].split("GiB", 1)[0]
    quoted = float(header.split(":")[-1].split()[-1])
    result = memory.estimate(memory.MemoryConfig(recipe=str(path), gpu_gib=80))
    assert quoted == round(result["total"] / memory.GiB, 1)
