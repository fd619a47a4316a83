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

    python tests/hub_mirrors.py DIR     # writes DIR/datasets/<owner>/<name>/{README.md,data/...}

`tests/hub_server.py` serves such a folder: `HubServer(mirrors=DIR)`.
"""

import gzip
import random
import shutil
import sys
from pathlib import Path

from datasets import Dataset, Features, List, Value, disable_progress_bars
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

MESSAGES = List({"content": Value("string"), "role": Value("string")})
SMOLTALK_SOURCES = ("smol-magpie-ultra", "everyday-conversations", "smol-rewrite", "metamathqa-50k", "systemchats-30k")


def question_and_answer(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    topic = rng.choice(["apples", "books", "trains", "stamps", "shells"])
    return (f"Sam has {a} {topic} and buys {b} more. How many {topic} does Sam have now?",
            f"Sam starts with {a} {topic} and adds {b}, so Sam has {a} + {b} = {a + b} {topic}.")


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
        rows.append({"chosen": [prompt, {"content": answer, "role": "assistant"}],
                     "rejected": [prompt, {"content": "I am not sure, maybe ask someone else.", "role": "assistant"}],
                     "score_chosen": float(rng.randint(7, 10)), "score_rejected": float(rng.randint(1, 6))})
    return rows


# repo id -> config -> (features, split -> (rows, parquet files), data folder, row maker)
MIRRORS = {
    "HuggingFaceTB/smoltalk": {
        "all": (Features({"messages": MESSAGES, "source": Value("string")}), {"train": (48, 2), "test": (8, 1)},
                "data/all", smoltalk_rows),
    },
    "trl-lib/ultrafeedback_binarized": {
        "default": (Features({"chosen": MESSAGES, "rejected": MESSAGES, "score_chosen": Value("float64"),
                              "score_rejected": Value("float64")}), {"train": (48, 1), "test": (8, 1)},
                    "data", ultrafeedback_rows),
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


def write_mirrors(root: str | Path) -> Path:
    """Every mirror under root/datasets/<repo id>/; returns root."""
    root = Path(root)
    for repo_id, configs in MIRRORS.items():
        write_repo(root / "datasets" / repo_id, configs)
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
