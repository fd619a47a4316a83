"""lmforge.lib.sources: a user's rows from any place `datasets` reads, in TRL's formats, and one line when they are
wrong. Every source here is a real file or folder read through the same `datasets` calls a Hub id goes through."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from lmforge import LmforgeError
from lmforge.lib.sources import held_out, load_pairs, load_rows


# Text answers: a CSV column of bare numbers is read as numbers, which is no preference pair.
PAIRS = [
    {"prompt": f"What is {i} + 1?", "chosen": f"It is {i + 1}.", "rejected": f"It is {i + 7}."} for i in range(30)
]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture
def kinds(tmp_path):
    """The same 30 pairs as every kind of source a user brings."""
    write_jsonl(tmp_path / "folder/train.jsonl", PAIRS[:24])
    write_jsonl(tmp_path / "folder/test.jsonl", PAIRS[24:])
    Dataset.from_list(PAIRS).to_csv(tmp_path / "pairs.csv", index=False)
    pq.write_table(pa.Table.from_pylist(PAIRS[:15]), tmp_path / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(PAIRS[15:]), tmp_path / "part-1.parquet")
    (tmp_path / "array.json").write_text(json.dumps(PAIRS))
    DatasetDict({"train": Dataset.from_list(PAIRS)}).save_to_disk(tmp_path / "saved")
    Dataset.from_list(PAIRS).save_to_disk(tmp_path / "saved_one")
    return tmp_path


@pytest.mark.parametrize(
    "source, splits",
    [
        ("folder", {"train": 24, "test": 6}),
        ("pairs.csv", {"train": 30}),
        ("part-*.parquet", {"train": 30}),
        ("array.json", {"train": 30}),
        ("saved", {"train": 30}),
        ("saved_one", {"train": 30}),
    ],
)
def test_every_kind_of_source_gives_the_same_pairs(kinds, source, splits):
    pairs = load_pairs(str(kinds / source))
    assert {split: len(part) for split, part in pairs.items()} == splits
    assert sorted(pairs["train"]["chosen"]) == sorted(row["chosen"] for row in PAIRS[: splits["train"]])
    assert pairs["train"].column_names == ["prompt", "chosen", "rejected"]


def test_columns_are_renamed_and_an_implicit_prompt_is_split_out(tmp_path):
    conversational = [
        {
            "good": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}],
            "bad": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "go away"}],
        }
        for i in range(4)
    ]
    write_jsonl(tmp_path / "conv.jsonl", conversational)
    pairs = load_pairs({"path": str(tmp_path / "conv.jsonl"), "columns": {"good": "chosen", "bad": "rejected"}})
    row = pairs["train"][2]
    assert row["prompt"] == [{"role": "user", "content": "hi 2"}]
    assert row["chosen"] == [{"role": "assistant", "content": "hello"}]
    assert row["rejected"] == [{"role": "assistant", "content": "go away"}]


def test_the_held_out_split_is_the_same_rows_whatever_their_order(capsys):
    rows = [{"text": f"row {i}"} for i in range(400)]
    first = held_out(DatasetDict({"train": Dataset.from_list(rows)}), 0.1, "t")
    second = held_out(DatasetDict({"train": Dataset.from_list(rows[::-1])}), 0.1, "t")
    assert sorted(first["test"]["text"]) == sorted(second["test"]["text"])
    assert 20 < len(first["test"]) < 60 and len(first["train"]) + len(first["test"]) == 400
    assert f"{len(first['test'])} of 400 rows held out by a hash of the row" in capsys.readouterr().out
    assert not set(first["test"]["text"]) & set(first["train"]["text"])


def test_bad_sources_are_one_line_naming_what_is_wrong(tmp_path):
    (tmp_path / "empty").mkdir()
    write_jsonl(tmp_path / "ok/train.jsonl", PAIRS)
    write_jsonl(tmp_path / "other.jsonl", [{"question": "q", "answer": "a"}])
    write_jsonl(tmp_path / "typed.jsonl", PAIRS[:3] + [{"prompt": "p", "chosen": 5, "rejected": "r"}] + PAIRS[3:6])
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "caf\xe9"}\n'
    )
    cases = {
        str(tmp_path / "empty"): "empty folder",
        str(tmp_path / "missing.jsonl"): "missing.jsonl does not exist",
        str(tmp_path / "other.jsonl"): "columns question, answer are none of the formats taken here (preference: "
        "prompt, chosen, rejected; preference (implicit prompt): chosen, rejected)",
        str(tmp_path / "typed.jsonl"): "row 3: column 'chosen' holds int",
        str(tmp_path / "latin1.jsonl"): "latin1.jsonl line 2: not UTF-8",
    }
    for source, expected in cases.items():
        with pytest.raises(LmforgeError) as error:
            load_pairs(source)
        assert expected in str(error.value) and "\n" not in str(error.value), (source, str(error.value))
    with pytest.raises(LmforgeError, match=r"no split 'validation' \(splits: train\)"):
        load_rows({"path": str(tmp_path / "ok"), "split": "validation"})


def test_invalid_rows_drop_drops_and_counts(tmp_path, capsys):
    write_jsonl(tmp_path / "typed.jsonl", PAIRS[:3] + [{"prompt": "p", "chosen": 5, "rejected": "r"}] + PAIRS[3:6])
    pairs = load_pairs(str(tmp_path / "typed.jsonl"), invalid_rows="drop")
    assert len(pairs["train"]) == 6 and "dropped 1 invalid rows of 7" in capsys.readouterr().out
