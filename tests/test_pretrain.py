"""Pack, pretrain and generate on a tiny corpus: blocks, falling loss, kill-and-resume, seeded sampling, a base
model answering a question through the few-shot prompt."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_from_disk
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EvalPrediction,
    LlamaForCausalLM,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from lmforge import LmforgeError
from lmforge.generate import GenerateConfig, prompt_ids
from lmforge.generate import main as generate
from lmforge.lib.encoding import bits_per_byte
from lmforge.lib.fewshot import few_shot_ids, few_shot_prompt
from lmforge.lib.metrics import load_metric
from lmforge.pack import PackConfig
from lmforge.pack import main as pack
from lmforge.pretrain import GPU_BF16_PEAK, BlockCollator, PretrainArguments, Throughput, peak_flops
from lmforge.pretrain import main as pretrain
from lmforge.tokenizer import train_tokenizer
from tiny import memorize, tiny_llama_config


SEQ_LEN = 64
SENTENCES = [
    "the cat sat on the mat and the dog sat on the log.",
    "a bird sang in the tree while the sun rose over the hill.",
    "we walked to the river and watched the boats go by.",
    "she wrote a letter to her brother who lived by the sea.",
]


def documents(count: int) -> list[str]:
    # Repetitive on purpose: a tiny model must visibly learn it in a few dozen steps.
    return [" ".join(SENTENCES[(i + j) % 4] for j in range(6)) for i in range(count)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    texts = ["typed <|endoftext|> and <|bos|> are only text"] + documents(200)
    rows = [{"text": text, "id": f"doc{i}", "metadata": {"language": "en"}} for i, text in enumerate(texts)]
    pq.write_table(pa.Table.from_pylist(rows), root / "docs.parquet")
    train_tokenizer(texts, vocab_size=320).save_pretrained(root / "tokenizer")
    config = PackConfig(
        output_dir=str(root / "pack"),
        tokenizer=str(root / "tokenizer"),
        documents=[str(root / "docs.parquet")],
        seq_len=SEQ_LEN,
        heldout_fraction=0.1,
        batch_size=50,
    )
    pack(config)
    return root


def pretrain_arguments(root, **overrides):
    options = dict(dataset=str(root / "pack"), tokenizer=str(root / "tokenizer"), depth=1, context_length=SEQ_LEN)
    options["memorization_probes"] = 8
    options["memorization_prefix"] = 8
    options["memorization_tokens"] = 8
    return PretrainArguments(**{**options, **overrides})


def training_arguments(output_dir, **overrides):
    options = dict(
        output_dir=str(output_dir),
        max_steps=40,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=3e-3,
        warmup_steps=4,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=20,
        save_steps=20,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**options, **overrides})


def test_pack_writes_blocks_of_documents(packed):
    blocks = load_from_disk(str(packed / "pack"))
    tokenizer = AutoTokenizer.from_pretrained(packed / "tokenizer")
    report = json.loads((packed / "pack" / "pack.json").read_text())
    assert report["vocab_size"] == len(tokenizer)
    assert {len(ids) for ids in blocks["train"]["input_ids"]} == {SEQ_LEN}
    assert len(blocks["validation"]) > 0
    stream = [token for split in ("train", "validation") for ids in blocks[split]["input_ids"] for token in ids]
    assert stream[0] == tokenizer.bos_token_id
    # One <|bos|> and one <|endoftext|> per document at most (map batches' tails are dropped): the special-token
    # strings typed in a document were encoded as text.
    assert 150 < stream.count(tokenizer.bos_token_id) <= 201 and stream.count(tokenizer.eos_token_id) <= 201
    assert "typed <|endoftext|> and <|bos|> are only text" in tokenizer.decode(stream)
    pack(PackConfig(output_dir=str(packed / "pack")))  # done already: skipped


@pytest.mark.slow
def test_pretrain_loss_falls_and_saves_a_loadable_model(packed):
    output_dir = packed / "run"
    pretrain(pretrain_arguments(packed), training_arguments(output_dir))
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    evals = [entry["eval_loss"] for entry in history if "eval_loss" in entry]
    assert losses[-1] < losses[0] - 1.5, losses
    assert evals[-1] < evals[0], evals
    assert all("tokens_per_second" in entry for entry in history if "loss" in entry)
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0 < results["eval_bits_per_byte"] < 8
    assert (output_dir / "checkpoint-20" / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(output_dir / "checkpoint-20")
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(output_dir))
    assert model.generation_config.eos_token_id == AutoTokenizer.from_pretrained(output_dir).eos_token_id
    probe = json.loads((output_dir / "memorization.json").read_text())
    assert probe["probes"] == 8 and 0 <= probe["verbatim_share"] <= 1
    assert "tokenizer" in (output_dir / "README.md").read_text()


@pytest.mark.slow
def test_muon_trains_the_hidden_matrices_and_resumes(packed):
    output_dir = packed / "muon"
    arguments = pretrain_arguments(packed, muon_learning_rate=0.02, memorization_probes=0)
    pretrain(arguments, training_arguments(output_dir, eval_strategy="no"))
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0] - 1.5, losses
    # Muon holds the depth-1 model's seven projection matrices, AdamW the embeddings, head and norms.
    state = torch.load(output_dir / "checkpoint-20" / "optimizer.pt", weights_only=True)
    assert len(state["muon"]["state"]) == 7 and len(state["adamw"]["state"]) == 5
    assert state["muon"]["param_groups"][0]["initial_lr"] == 0.02
    assert state["adamw"]["param_groups"][0]["initial_lr"] == 3e-3
    # The scheduler reaches Muon: halfway through the cosine, its learning rate is about half.
    assert 0.008 < state["muon"]["param_groups"][0]["lr"] < 0.012
    # A longer rerun resumes from the last checkpoint, both optimizers' state loaded.
    pretrain(arguments, training_arguments(output_dir, max_steps=45, eval_strategy="no"))
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    resumed = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in resumed] == list(range(5, 50, 5))
    assert resumed[-1]["loss"] < losses[0] - 1.5


@pytest.mark.slow
def test_killed_run_resumes_at_its_last_checkpoint(packed):
    output_dir = packed / "killed"
    command = [
        sys.executable, "-m", "lmforge.pretrain",
        "--dataset", str(packed / "pack"), "--tokenizer", str(packed / "tokenizer"),
        "--depth", "1", "--context_length", str(SEQ_LEN), "--output_dir", str(output_dir),
        "--max_steps", "100000", "--save_steps", "10", "--logging_steps", "1", "--per_device_train_batch_size", "4",
        "--use_cpu", "true", "--report_to", "none", "--eval_strategy", "no", "--memorization_probes", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.time() + 90
        while not (output_dir / "checkpoint-10" / "trainer_state.json").exists():
            assert process.poll() is None and time.time() < deadline, "training died or saved no checkpoint"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    steps = sorted(int(path.name.split("-")[1]) for path in output_dir.glob("checkpoint-*"))
    (output_dir / "checkpoint-99999").mkdir()  # as if killed while saving: no trainer_state.json
    complete = max(step for step in steps if (output_dir / f"checkpoint-{step}" / "trainer_state.json").exists())

    pretrain(
        pretrain_arguments(packed, memorization_probes=0),
        training_arguments(output_dir, max_steps=complete + 5, logging_steps=1, eval_strategy="no", save_steps=10),
    )
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    # Steps before the checkpoint come from its saved history, the rest from the resumed run: no gap, no repeat.
    assert [entry["step"] for entry in history if "loss" in entry] == list(range(1, complete + 6))
    assert not (output_dir / "checkpoint-99999").exists()


def test_bad_inputs_are_named(packed, tmp_path):
    with pytest.raises(LmforgeError, match="context_length"):
        pretrain(pretrain_arguments(packed, context_length=32), training_arguments(tmp_path / "a"))
    with pytest.raises(LmforgeError, match="not a finished `lmforge pack`"):
        pretrain(pretrain_arguments(packed, dataset=str(tmp_path)), training_arguments(tmp_path / "b"))
    train_tokenizer(documents(10), vocab_size=300).save_pretrained(tmp_path / "other")
    with pytest.raises(LmforgeError, match="tokenizer"):
        pretrain(pretrain_arguments(packed, tokenizer=str(tmp_path / "other")), training_arguments(tmp_path / "c"))
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "", "id": "0"}]), empty)
    with pytest.raises(LmforgeError, match="no non-empty document"):
        pack(PackConfig(output_dir=str(tmp_path / "p"), tokenizer=str(packed / "tokenizer"), documents=[str(empty)]))


def test_generate_is_seeded_and_stops_at_eos(packed, tmp_path, capsys):
    # A random model on the pack's tokenizer, of its own: sampling and stopping do not need a trained one, and the
    # test must not wait for (or depend on the order of) the slow test that trains into the fixture's folder.
    tokenizer = AutoTokenizer.from_pretrained(packed / "tokenizer")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(tmp_path / "random")
    tokenizer.save_pretrained(tmp_path / "random")
    model = str(tmp_path / "random")
    options = dict(model=model, prompt="the cat", max_new_tokens=24, temperature=1.0, top_k=50, top_p=0.95)
    first = generate(GenerateConfig(**options, seed=1, num_samples=2))
    assert first == generate(GenerateConfig(**options, seed=1, num_samples=2, stream=False))
    assert first != generate(GenerateConfig(**options, seed=2, num_samples=2, stream=False))
    assert first[0] != first[1]  # each sample has its own seed
    assert first[0] in capsys.readouterr().out  # streamed to the terminal

    # Stopping: make a token that greedy decoding emits mid-way the model's end-of-text token.
    tokenizer = AutoTokenizer.from_pretrained(model)
    weights = AutoModelForCausalLM.from_pretrained(model)
    greedy = dict(model=model, prompt="the cat", max_new_tokens=24, temperature=0.0, stream=False)
    prompt = torch.tensor([prompt_ids(tokenizer, GenerateConfig(**greedy))])
    ids = weights.generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=None)[
        0, prompt.shape[1] :
    ].tolist()
    stop = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i])
    weights.generation_config.eos_token_id = ids[stop]
    weights.save_pretrained(tmp_path / "stopping")
    tokenizer.save_pretrained(tmp_path / "stopping")
    out_file = tmp_path / "samples.json"
    samples = generate(GenerateConfig(**{**greedy, "model": str(tmp_path / "stopping")}, output_file=str(out_file)))
    assert samples == [tokenizer.decode(ids[: stop + 1], skip_special_tokens=True)]
    assert json.loads(out_file.read_text())["samples"] == samples


@pytest.mark.slow
def test_generate_few_shot_chat_replies_up_to_the_next_user_turn(packed, capsys):
    tokenizer = AutoTokenizer.from_pretrained(packed / "tokenizer")
    question = "Who wrote Romeo and Juliet?"
    options = dict(prompt=question, few_shot_chat=True, temperature=0.0, max_new_tokens=40)
    prompt = prompt_ids(tokenizer, GenerateConfig(**options))
    assert prompt == few_shot_ids(tokenizer, question)
    assert prompt[0] == tokenizer.bos_token_id and tokenizer.decode(prompt[1:]) == few_shot_prompt(question)

    # A model taught to answer, then to write the user's next turn itself: the sample is the answer alone, and
    # generation stopped at "\nUser:" (the stream shows the raw continuation, without what follows it).
    continuation = " Shakespeare did.\nUser: and Hamlet?"
    model = memorize(tokenizer, [(prompt, tokenizer(continuation, add_special_tokens=False)["input_ids"])], steps=60)
    model.save_pretrained(packed / "few_shot")
    tokenizer.save_pretrained(packed / "few_shot")
    out_file = packed / "few_shot.json"
    samples = generate(GenerateConfig(**options, model=str(packed / "few_shot"), output_file=str(out_file)))
    assert samples == ["Shakespeare did."] == json.loads(out_file.read_text())["samples"]
    streamed = capsys.readouterr().out
    assert "Shakespeare did.\nUser:" in streamed and "Hamlet" not in streamed
    with pytest.raises(LmforgeError, match="chat and few_shot_chat: choose one"):
        generate(GenerateConfig(**options, chat=True))


def test_the_block_collator_leaves_sdpa_causal_unless_there_is_padding(packed):
    """Packed blocks have no padding: no attention mask, so SDPA may run causal on its flash kernel (under
    torch.compile transformers would otherwise keep even an all-ones mask). A padded batch keeps its mask."""
    tokenizer = AutoTokenizer.from_pretrained(packed / "tokenizer")
    collate = BlockCollator(tokenizer)
    blocks = collate([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [9, 10, 11, 12]}])
    assert "attention_mask" not in blocks and blocks["labels"].tolist() == blocks["input_ids"].tolist()
    padded = collate([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [9, 10]}])
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_throughput_leaves_out_the_warm_up_steps():
    """A slow first step (a compilation) does not reach the logged tokens/s; the steps after it do."""
    meter = Throughput(tokens_per_step=1000, flops_per_token=1.0, skip=1)
    args, state, control = TrainingArguments(output_dir="unused", use_cpu=True), TrainerState(), TrainerControl()
    for seconds in (0.3, 0.01, 0.01):
        meter.on_step_begin(args, state, control)
        time.sleep(seconds)
        meter.on_step_end(args, state, control)
    state.log_history.append(logs := {"loss": 1.0})
    meter.on_log(args, state, control, logs=logs)
    assert 30_000 < logs["tokens_per_second"] < 100_000  # 2 steps of ~0.01 s: not 2,000 tokens over 0.32 s


def test_every_gpu_of_the_peak_table_is_reachable():
    """Device names as torch reports them get their own datasheet peak (a shorter fragment listed first would
    take a longer name's: "H100" before "H100 NVL", "L4" before "L40S")."""
    names = {
        "NVIDIA H100 80GB HBM3": 989e12,
        "NVIDIA H100 NVL": 835e12,
        "NVIDIA H100 PCIe": 756e12,
        "NVIDIA H200": 989e12,
        "NVIDIA H200 NVL": 835e12,
        "NVIDIA GH200 480GB": 989e12,
        "NVIDIA B200": 2250e12,
        "NVIDIA GB200": 2500e12,
        "NVIDIA A100-SXM4-80GB": 312e12,
        "NVIDIA L40S": 362e12,
        "NVIDIA L4": 121e12,
        "NVIDIA GeForce RTX 4090": 165e12,
        "AMD Instinct MI300X": 1307e12,
    }
    assert {name: peak_flops(name) for name in names} == names
    # Each fragment, as a device name, finds its own entry: none is shadowed by one listed before it.
    assert all(peak_flops(f"NVIDIA {fragment}") == peak for fragment, peak in GPU_BF16_PEAK)
    assert peak_flops("Some Future Accelerator") is None


def test_bits_per_byte_sums_rows_as_the_per_token_definition_does():
    rows = torch.rand(3, 7, generator=torch.Generator().manual_seed(0)) * 4
    labels = torch.tensor([[1, 2, 3, 0, 4, -100, 2, 1]] * 3)  # token 0 is special (0 bytes), -100 is masked
    token_bytes = torch.tensor([0, 1, 2, 3, 4])
    sizes = token_bytes[labels[:, 1:].clamp(min=0)] * (labels[:, 1:] >= 0)
    by_token = (rows * (sizes > 0)).sum().item() / (math.log(2) * sizes.sum().item())
    prediction = EvalPrediction(predictions=rows.numpy(), label_ids=labels.numpy())
    result = bits_per_byte(prediction, load_metric("bits_per_byte"), token_bytes)["bits_per_byte"]
    assert result == pytest.approx(by_token, rel=1e-6)
