"""Small mirrors of the Hub datasets that the recipes name, for the loopback Hub (tests/hub_server.py).

Each mirror has the real dataset's configs, splits, file layout and columns (types included), with a
few dozen synthetic rows: enough for `load_dataset` to resolve it exactly as it resolves the real one,
and for a stage to train a step on it. The schemas come from the datasets' cards and file listings:

- HuggingFaceTB/smoltalk (Apache-2.0): one folder per config under data/ (`all`, `smol-magpie-ultra`,
  `everyday-conversations`, ... per huggingface.co/datasets/HuggingFaceTB/smoltalk/tree/main/data), each with
  `train-0000i-of-0000n.parquet` and `test-00000-of-00001.parquet` (tree/main/data/smol-magpie-ultra);
  columns `messages` (list of {content: string, role: string}) and `source` (string), as on the card of
  its subset HuggingFaceTB/smol-smoltalk. Only the `all` config is mirrored: it is the one the recipes read,
  and the other configs' extra columns are not documented where we looked.
- trl-lib/ultrafeedback_binarized (MIT): config `default`, splits `train` (62.1k rows) and `test` (1k),
  files data/train-* and data/test-* (huggingface.co/datasets/trl-lib/ultrafeedback_binarized/viewer);
  columns `chosen` and `rejected` (list of {content, role}: the user turn then the assistant turn),
  `score_chosen` and `score_rejected` (float64), as on the card of trl-internal-testing/tiny-ultrafeedback-binarized,
  which its script builds by filtering trl-lib/ultrafeedback_binarized.
- HuggingFaceTB/smol-smoltalk (Apache-2.0): config `default`, data/train-0000i-of-00004.parquet and
  data/test-00000-of-00001.parquet (huggingface.co/datasets/HuggingFaceTB/smol-smoltalk/tree/main/data), columns
  `messages` (list of {content, role}) and `source` (string), as in its card's dataset_info
  (huggingface.co/datasets/HuggingFaceTB/smol-smoltalk/blob/main/README.md). 100 training rows, so that the
  recipes' weight of 0.02 takes two.

One model, the base of recipes/smollm2-360m-instruct/: HuggingFaceTB/SmolLM2-360M-Instruct, as a tiny random
LlamaForCausalLM with the real one's tokenizer conventions (see `write_smollm2_instruct`).

    python tests/hub_mirrors.py DIR     # writes DIR/datasets/<owner>/<name>/{README.md,data/...}
                                        # and DIR/models/<owner>/<name>/{config.json,model.safetensors,...}

`tests/hub_server.py` serves such a folder: `HubServer(mirrors=DIR)`.
"""

import gzip
import json
import random
import shutil
import sys
from pathlib import Path

import torch
from datasets import Dataset, Features, List, Value, disable_progress_bars
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData, ModelCard, ModelCardData
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, GPT2Tokenizer, LlamaConfig, LlamaForCausalLM


MESSAGES = List({"content": Value("string"), "role": Value("string")})
SMOLTALK_SOURCES = ("smol-magpie-ultra", "everyday-conversations", "smol-rewrite", "metamathqa-50k", "systemchats-30k")


def question_and_answer(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    topic = rng.choice(["apples", "books", "trains", "stamps", "shells"])
    return (
        f"Sam has {a} {topic} and buys {b} more. How many {topic} does Sam have now?",
        f"Sam starts with {a} {topic} and adds {b}, so Sam has {a} + {b} = {a + b} {topic}.",
    )


def smoltalk_rows(count: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(count):
        source = rng.choice(SMOLTALK_SOURCES)
        system = [{"content": "You are a helpful assistant.", "role": "system"}]
        messages = system if source == "systemchats-30k" else []
        for _ in range(rng.randint(1, 2)):  # single- and multi-turn conversations, as in the real mix
            question, answer = question_and_answer(rng)
            messages += [{"content": question, "role": "user"}, {"content": answer, "role": "assistant"}]
        rows.append({"messages": messages, "source": source})
    return rows


def ultrafeedback_rows(count: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(count):
        question, answer = question_and_answer(rng)
        prompt = {"content": question, "role": "user"}
        rows.append(
            {
                "chosen": [prompt, {"content": answer, "role": "assistant"}],
                "rejected": [prompt, {"content": "I am not sure, maybe ask someone else.", "role": "assistant"}],
                "score_chosen": float(rng.randint(7, 10)),
                "score_rejected": float(rng.randint(1, 6)),
            }
        )
    return rows


# repo id -> config -> (features, split -> (rows, parquet files), data folder, row maker)
MIRRORS = {
    "HuggingFaceTB/smoltalk": {
        "all": (
            Features({"messages": MESSAGES, "source": Value("string")}),
            {"train": (48, 2), "test": (8, 1)},
            "data/all",
            smoltalk_rows,
        ),
    },
    "HuggingFaceTB/smol-smoltalk": {
        "default": (
            Features({"messages": MESSAGES, "source": Value("string")}),
            {"train": (100, 4), "test": (8, 1)},
            "data",
            smoltalk_rows,
        ),
    },
    "trl-lib/ultrafeedback_binarized": {
        "default": (
            Features(
                {
                    "chosen": MESSAGES,
                    "rejected": MESSAGES,
                    "score_chosen": Value("float64"),
                    "score_rejected": Value("float64"),
                }
            ),
            {"train": (48, 1), "test": (8, 1)},
            "data",
            ultrafeedback_rows,
        ),
    },
}


def write_repo(folder: Path, configs: dict, seed: int = 0) -> None:
    """Parquet shards named as the Hub names them, and a card whose YAML maps each config to its files and
    records its features and split sizes (written by the library's own card writers, as push_to_hub does)."""
    rng = random.Random(seed)
    infos, metadata = DatasetInfosDict(), MetadataConfigs()
    for name, (features, splits, data_dir, make_rows) in configs.items():
        metadata[name] = {"data_files": [{"split": split, "path": f"{data_dir}/{split}-*"} for split in splits]}
        infos[name] = DatasetInfo(features=features, config_name=name, splits=SplitDict())
        for split, (count, shards) in splits.items():
            dataset = Dataset.from_list(make_rows(count, rng), features=features)
            for shard in range(shards):
                path = folder / data_dir / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                dataset.shard(shards, shard, contiguous=True).to_parquet(path)
            infos[name].splits.add(SplitInfo(name=split, num_examples=count))
    card = DatasetCardData()
    infos.to_dataset_card_data(card)
    metadata.to_dataset_card_data(card)
    (folder / "README.md").write_text(f"---\n{card.to_yaml()}\n---\n\nA synthetic mirror for lmforge's tests.\n")


SMOLLM2_INSTRUCT = "HuggingFaceTB/SmolLM2-360M-Instruct"
# Its tokenizer_config.json (huggingface.co/HuggingFaceTB/SmolLM2-360M-Instruct/blob/main/tokenizer_config.json):
# ChatML whose first turn is a default system prompt when the conversation has none, and no {% generation %}
# markers; the same string is quoted from the model's GGUF and tokenizer_config by projects that test against it.
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM2_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Its vocabulary's first 17 ids, all special (tokenizer.json's added_tokens): <|im_start|> is the bos token,
# <|im_end|> the eos and pad token (special_tokens_map.json; config.json: bos 1, eos 2, pad 2).
SMOLLM2_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<repo_name>",
    "<reponame>",
    "<file_sep>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<jupyter_script>",
    "<empty_output>",
]


def write_smollm2_instruct(folder: Path, vocab_size: int = 512, seed: int = 0) -> None:
    """SmolLM2-360M-Instruct's files with a tiny random model: a byte-level BPE (GPT2Tokenizer, as the real one)
    trained here on synthetic text with the real special tokens, bos/eos/pad and chat template, in
    tokenizer_config.json as on the Hub; a LlamaForCausalLM config shaped like the real one (GQA 3:1, head_dim,
    rope_theta 100000, 8192 positions, tied embeddings, bfloat16 weights) but 2 layers of width 48."""
    rng = random.Random(seed)
    texts = [message["content"] for row in smoltalk_rows(200, rng) for message in row["messages"]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SMOLLM2_SPECIAL,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = GPT2Tokenizer(
        tokenizer_object=bpe,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        model_max_length=8192,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.save_pretrained(folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**tokenizer_config, "chat_template": SMOLLM2_TEMPLATE}, indent=2) + "\n"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(folder)
    card = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        language=["en"],
        pipeline_tag="text-generation",
        base_model="HuggingFaceTB/SmolLM2-360M",
    )
    ModelCard(f"---\n{card.to_yaml()}\n---\n\nA tiny random mirror of {SMOLLM2_INSTRUCT} for lmforge's tests.\n").save(
        folder / "README.md"
    )


def write_mirrors(root: str | Path) -> Path:
    """Every dataset mirror under root/datasets/<repo id>/ and the model under root/models/<repo id>/; returns root."""
    root = Path(root)
    for repo_id, configs in MIRRORS.items():
        write_repo(root / "datasets" / repo_id, configs)
    write_smollm2_instruct(root / "models" / SMOLLM2_INSTRUCT)
    return root


def write_common_crawl(root: str | Path, dump: str, warc_files: list[Path]) -> Path:
    """A local stand-in for data.commoncrawl.org: the dump's warc.paths.gz listing, and the WARC files it names
    at paths shaped like Common Crawl's. The data stage reads it with `--common_crawl_root root`."""
    root = Path(root)
    paths = [f"crawl-data/{dump}/segments/0/warc/{dump}-{i:05d}.warc.gz" for i in range(len(warc_files))]
    for path, warc in zip(paths, warc_files):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(warc, root / path)
    with gzip.open(root / f"crawl-data/{dump}/warc.paths.gz", "wt") as listing:
        listing.write("\n".join(paths) + "\n")
    return root


if __name__ == "__main__":
    disable_progress_bars()
    print(write_mirrors(sys.argv[1]))
