"""The one loader of the rows users bring (lmforge.lib.sources): every kind of source, every format, the held-out
split, and every bad case as one line. Tiny data, no model: fast."""

import gzip
import json
import os
import re
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from hub_mirrors import MIRRORS, write_repo
from hub_server import HubServer
from lmforge import LmforgeError
from lmforge.lib.sources import FORMATS, load_checked, load_pairs, load_questions, load_rows, named_sources


# Answers in words: datasets' JSON reader turns a text "1." into the number 1.0 in a column of mixed types.
PAIRS = [{"prompt": f"What is {i} + 1?", "chosen": f"It is {i + 1}.", "rejected": "No idea."} for i in range(20)]
PREFERENCE = ["preference", "preference (implicit prompt)"]


def chat(prompt: str, reply: str | None = None) -> list[dict]:
    return [{"role": "user", "content": prompt}] + ([{"role": "assistant", "content": reply}] if reply else [])


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows_of(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


# --- every kind of source gives the same rows (the same kinds feed every stage in test_stage_sources) ---


def folder_of_jsonl(rows, root):
    write_jsonl(root / "pairs" / "train.jsonl", rows)
    return str(root / "pairs")


def jsonl_file(rows, root):
    return str(write_jsonl(root / "pairs.jsonl", rows))


def gzipped_jsonl(rows, root):
    path = root / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    return str(path)


def json_array(rows, root):
    (root / "pairs.json").write_text(json.dumps(rows))
    return str(root / "pairs.json")


def csv_file(rows, root):
    Dataset.from_list(rows).to_csv(root / "pairs.csv", index=False)
    return str(root / "pairs.csv")


def parquet_file(rows, root):
    Dataset.from_list(rows).to_parquet(root / "pairs.parquet")
    return str(root / "pairs.parquet")


def parquet_glob(rows, root):
    (root / "parts").mkdir()
    for part in range(2):
        Dataset.from_list(rows[part::2]).to_parquet(root / "parts" / f"part-{part}.parquet")
    return str(root / "parts" / "*.parquet")


def folder_of_parquet(rows, root):
    parquet_glob(rows, root)
    return str(root / "parts")


def arrow_file(rows, root):
    Dataset.from_list(rows).save_to_disk(root / "saved")
    return next(str(path) for path in (root / "saved").glob("*.arrow"))


def saved_dataset(rows, root):
    Dataset.from_list(rows).save_to_disk(root / "saved")
    return str(root / "saved")


def saved_dataset_dict(rows, root):
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(root / "saved")
    return str(root / "saved")


def load_dataset_keywords(rows, root):
    return {"path": "json", "data_files": jsonl_file(rows, root)}


SOURCES = [
    folder_of_jsonl,
    jsonl_file,
    gzipped_jsonl,
    json_array,
    csv_file,
    parquet_file,
    parquet_glob,
    folder_of_parquet,
    arrow_file,
    saved_dataset,
    saved_dataset_dict,
    load_dataset_keywords,
]


@pytest.mark.parametrize("make", SOURCES, ids=[make.__name__ for make in SOURCES])
def test_every_kind_of_local_source_reads_the_same_rows(make, tmp_path):
    rows = load_checked(make(PAIRS, tmp_path), "preferences", PREFERENCE)
    assert rows.format == "preference" and not rows.conversational and rows.heldout is None
    assert sorted(rows_of(rows.train), key=str) == sorted(PAIRS, key=str)


def test_a_hub_dataset_with_config_split_and_revision(tmp_path):
    """A Hub id resolves through `datasets` against the loopback Hub's mirror of trl-lib/ultrafeedback_binarized
    (a subprocess: huggingface_hub reads HF_ENDPOINT when it is imported)."""
    write_repo(
        tmp_path / "datasets" / "trl-lib" / "ultrafeedback_binarized", MIRRORS["trl-lib/ultrafeedback_binarized"]
    )
    script = (
        "from lmforge.lib.sources import load_checked\n"
        "spec = {'path': 'trl-lib/ultrafeedback_binarized', 'name': 'default', 'split': 'train', 'revision': 'main'}\n"
        "rows = load_checked(spec, 'prefs', ['preference', 'preference (implicit prompt)'], heldout_fraction=0.1)\n"
        "print(rows.format, rows.conversational, len(rows.train), len(rows.heldout), rows.report['heldout_from'])\n"
    )
    with HubServer(mirrors=tmp_path) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "preference (implicit prompt) True 48 8 split test", result.stdout


# --- formats ---

FORMAT_ROWS = {
    "language modeling": {"text": "The sky is blue."},
    "conversational": {"messages": chat("Sky?", "Blue.")},
    "prompt-only": {"prompt": "The sky is"},
    "prompt-completion": {"prompt": "The sky is", "completion": " blue."},
    "preference": {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    "preference (implicit prompt)": {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    "unpaired preference": {"prompt": "The sky is", "completion": " blue.", "label": True},
    "question-answer": {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
    "question": {"question": "What did I eat today?"},
    "rollouts": {"prompt": "The sky is", "responses": [" blue.", " green."]},
}
CONVERSATIONAL = {
    "prompt-only": {"prompt": chat("Sky?")},
    "prompt-completion": {"prompt": chat("Sky?"), "completion": [{"role": "assistant", "content": "Blue."}]},
    "preference": {
        "prompt": chat("Sky?"),
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    },
    "preference (implicit prompt)": {"chosen": chat("Sky?", "Blue."), "rejected": chat("Sky?", "Green.")},
    "unpaired preference": {
        "prompt": chat("Sky?"),
        "completion": [{"role": "assistant", "content": "Blue."}],
        "label": True,
    },
}
CASES = [(name, row, name == "conversational") for name, row in FORMAT_ROWS.items()] + [
    (name, row, True) for name, row in CONVERSATIONAL.items()
]


def test_every_format_has_an_example():
    assert set(FORMAT_ROWS) == set(FORMATS)


@pytest.mark.parametrize("name, row, conversational", CASES, ids=[f"{n}-{c}" for n, _, c in CASES])
def test_every_format_is_recognised_standard_or_conversational(name, row, conversational, tmp_path):
    rows = load_checked(str(write_jsonl(tmp_path / "rows.jsonl", [row, row])), "data", list(FORMATS))
    assert (rows.format, rows.conversational) == (name, conversational)
    assert rows_of(rows.train) == [row, row]


def test_columns_are_renamed_and_sharegpt_conversations_converted(tmp_path):
    rows = [{"instruction": "Say hi", "output": "Hi!", "prompt": "ignored"}]
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    loaded = load_checked(
        {"path": str(path), "columns": {"instruction": "prompt", "output": "completion"}},
        "data",
        ["prompt-completion"],
    )
    assert rows_of(loaded.train) == [{"prompt": "Say hi", "completion": "Hi!"}]
    # ShareGPT's speakers (human, gpt) become the roles chat templates know; TRL's converter renames only the keys,
    # and SFT then dropped every row for its "unknown role 'human'".
    turns = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
    ]
    loaded = load_checked(
        str(write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": turns}])), "data", list(FORMATS)
    )
    assert loaded.format == "conversational" and loaded.conversational
    assert loaded.train[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


# --- held-out rows ---


def test_without_a_heldout_split_a_hash_of_each_row_holds_some_out(tmp_path, capsys):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS + PAIRS[:5]))  # five rows twice
    first = load_checked(path, "preferences", PREFERENCE, heldout_fraction=0.3)
    printed = capsys.readouterr().out
    assert f"{len(first.heldout)} of 25 rows held out by a hash of each row (30%)" in printed
    assert 0 < len(first.heldout) < 25 and len(first.train) + len(first.heldout) == 25
    train, heldout = rows_of(first.train), rows_of(first.heldout)
    assert not any(row in heldout for row in train)  # copies of a row fall on the same side
    write_jsonl(tmp_path / "shuffled.jsonl", (PAIRS + PAIRS[:5])[::-1])
    again = load_checked(str(tmp_path / "shuffled.jsonl"), "preferences", PREFERENCE, heldout_fraction=0.3)
    assert sorted(rows_of(again.heldout), key=str) == sorted(heldout, key=str)  # by content, not by position
    assert load_checked(path, "preferences", PREFERENCE, heldout_fraction=0).heldout is None


def test_the_sources_own_test_split_is_the_heldout_one(tmp_path):
    write_jsonl(tmp_path / "pairs" / "train.jsonl", PAIRS[:15])
    write_jsonl(tmp_path / "pairs" / "test.jsonl", PAIRS[15:])
    write_jsonl(tmp_path / "pairs" / "validation.jsonl", PAIRS[:2])
    rows = load_checked(str(tmp_path / "pairs"), "preferences", PREFERENCE, heldout_fraction=0.5)
    assert (len(rows.train), len(rows.heldout), rows.report["heldout_from"]) == (15, 5, "split test")
    spec = {"path": str(tmp_path / "pairs"), "heldout_split": "validation"}
    assert len(load_checked(spec, "preferences", PREFERENCE, heldout_fraction=0.5).heldout) == 2


def test_weight_takes_a_share_or_repeats(tmp_path):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    assert len(load_checked({"path": path, "weight": 0.25}, "p", PREFERENCE).train) == 5
    doubled = load_checked({"path": path, "weight": 2}, "p", PREFERENCE).train
    assert len(doubled) == 40 and sorted(rows_of(doubled), key=str) == sorted(PAIRS * 2, key=str)


def test_named_sources_take_a_path_for_a_source_and_a_lone_path_on_the_command_line():
    """`{chats: chats.jsonl}` in a recipe gave `dict('chats.jsonl')`'s ValueError traceback in SFT and rollouts."""
    assert named_sources({"chats": "data/chats.jsonl", "gen": {"generator": "identity"}}, "datasets") == {
        "chats": {"path": "data/chats.jsonl"},
        "gen": {"generator": "identity"},
    }
    assert named_sources("data/chats.jsonl", "datasets") == {"chats.jsonl": {"path": "data/chats.jsonl"}}
    assert named_sources('{"hub": "org/name"}', "prompts") == {"hub": {"path": "org/name"}}
    assert named_sources(None, "prompts") is None
    with pytest.raises(
        LmforgeError, match=r"^datasets.x: give a path, or a mapping with `path` or `generator`, not 3$"
    ):
        named_sources({"x": 3}, "datasets")
    with pytest.raises(LmforgeError, match=r"^datasets: give a mapping of names to sources, not \['a'\]$"):
        named_sources(["a"], "datasets")


def test_a_misspelt_key_of_a_source_mapping_is_named_with_the_key_meant(tmp_path):
    """The keys lmforge does not take go to datasets.load_dataset, whose builder refuses an unknown one."""
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    with pytest.raises(LmforgeError, match=r"unexpected keyword argument 'wieght'; did you mean 'weight'\?\)$"):
        load_checked({"path": path, "wieght": 0.5}, "p", PREFERENCE)


@pytest.mark.parametrize("weight", [-1, "half", True, float("nan")])
def test_a_weight_that_is_no_share_is_named_with_its_source(tmp_path, weight):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    with pytest.raises(LmforgeError, match=rf"^p: {re.escape(path)}: weight .* is not a number of at least 0$"):
        load_checked({"path": path, "weight": weight}, "p", PREFERENCE)


def test_a_small_weight_can_leave_a_small_test_split_empty(tmp_path):
    """smol-smoltalk's weight 0.02 on a test split of a few rows takes none of them: no held-out rows from that
    source, and no crash in the checks (datasets' map over no rows gives no columns)."""
    write_jsonl(tmp_path / "pairs" / "train.jsonl", PAIRS)
    write_jsonl(tmp_path / "pairs" / "test.jsonl", PAIRS[:3])
    rows = load_checked({"path": str(tmp_path / "pairs"), "weight": 0.1}, "p", PREFERENCE, heldout_fraction=0.1)
    assert (len(rows.train), len(rows.heldout), rows.report["heldout_from"]) == (2, 0, "split test")


# --- bad data: one line naming source, split, row or column ---


def bad(tmp_path, rows=None, text=None, name="rows.jsonl", **options) -> str:
    path = tmp_path / name
    if rows is not None:
        write_jsonl(path, rows)
    elif text is not None:
        path.write_bytes(text)
    with pytest.raises(LmforgeError) as error:
        load_checked(str(path), "preferences", options.pop("formats", PREFERENCE), **options)
    message = str(error.value)
    assert "\n" not in message and message.startswith("preferences: "), message
    return message


def test_missing_columns_list_the_formats_the_stage_takes(tmp_path):
    message = bad(tmp_path, [{"question": "q", "good": "a", "bad": "b"}])
    assert "columns question, good, bad are the question format, not one taken here" in message
    assert "(preference: prompt, chosen, rejected; preference (implicit prompt): chosen, rejected)" in message
    assert "columns:" in message
    assert "columns good, bad are none of the formats, not one taken here" in bad(
        tmp_path, [{"good": "a", "bad": "b"}]
    )


def test_unpaired_preferences_are_refused_where_the_stage_takes_only_pairs(tmp_path):
    message = bad(tmp_path, [FORMAT_ROWS["unpaired preference"]])
    assert "columns prompt, completion, label are the unpaired preference format, not one taken here" in message


def test_an_empty_source_is_named(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        LmforgeError, match="folder: an empty folder, or one without .jsonl/.json/.csv/.parquet/.arrow files"
    ):
        load_checked(str(tmp_path / "folder"), "preferences", PREFERENCE)
    assert "rows.jsonl is empty" in bad(tmp_path, text=b"")
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(LmforgeError, match="none.parquet: no rows"):
        load_checked(str(tmp_path / "none.parquet"), "preferences", PREFERENCE)


def test_a_missing_split_or_file_is_named(tmp_path):
    path = str(write_jsonl(tmp_path / "pairs" / "train.jsonl", PAIRS))
    with pytest.raises(LmforgeError, match=r"pairs: no split 'dev' \(splits: train\)"):
        load_checked({"path": str(tmp_path / "pairs"), "split": "dev"}, "preferences", PREFERENCE)
    with pytest.raises(LmforgeError, match="no heldout_split 'test'"):
        load_checked({"path": path, "heldout_split": "test"}, "preferences", PREFERENCE, heldout_fraction=0.1)
    for missing in ("nope/pairs.jsonl", "./nope", str(tmp_path / "x*.parquet")):
        with pytest.raises(LmforgeError, match="does not exist|matches no file"):
            load_checked(missing, "preferences", PREFERENCE)
    (tmp_path / "pairs.xlsx").write_text("x")
    with pytest.raises(LmforgeError, match="cannot read .xlsx files; give JSONL, JSON, CSV, Parquet or Arrow"):
        load_checked(str(tmp_path / "pairs.xlsx"), "preferences", PREFERENCE)


def test_mixed_standard_and_conversational_rows_are_named(tmp_path):
    rows = [FORMAT_ROWS["preference"], CONVERSATIONAL["preference"]]
    message = bad(tmp_path, rows)
    assert "rows.jsonl split train row 1: conversational (messages) where row 0 is standard (text): mixed" in message
    mixed_in_a_row = {**FORMAT_ROWS["preference"], "chosen": [{"role": "assistant", "content": "x"}]}
    assert "row 0: text and messages mixed in columns" in bad(tmp_path, [mixed_in_a_row])


@pytest.mark.parametrize(
    "row, expected",
    [
        (
            {"prompt": "p", "chosen": 3, "rejected": "r"},
            "row 1: column 'chosen' holds int '3': text or a list of messages expected",
        ),
        ({"prompt": "p", "chosen": "c", "rejected": ""}, "row 1: column 'rejected' is empty"),
        ({"prompt": "p", "chosen": [{"content": "c"}], "rejected": "r"}, "message 0 is not a mapping with a role"),
        ({"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}, "message 0 has no text content"),
    ],
)
def test_values_of_the_wrong_type_are_named(tmp_path, row, expected):
    assert expected in bad(tmp_path, [PAIRS[0], row])


def test_wrong_label_and_text_only_columns(tmp_path):
    row = {**FORMAT_ROWS["unpaired preference"], "label": "yes"}
    assert "column 'label' holds str 'yes': true or false expected" in bad(
        tmp_path, [row], formats=["unpaired preference"]
    )
    row = {"question": ["a list"], "answer": "4"}
    assert "column 'question' holds list" in bad(tmp_path, [row], formats=["question-answer"])


def test_bytes_that_are_not_utf8_and_broken_json_name_file_and_line(tmp_path):
    good = json.dumps(PAIRS[0]).encode()
    assert "rows.jsonl line 2: not UTF-8" in bad(tmp_path, text=good + b"\n" + good.replace(b"No", b"N\xff"))
    assert "rows.jsonl line 2: not valid JSON" in bad(tmp_path, text=good + b'\n{"prompt": oops\n')
    assert "rows.csv line 3: not UTF-8" in bad(
        tmp_path, text=b"prompt,chosen,rejected\na,b,c\nd\xff,e,f\n", name="rows.csv"
    )


def too_long(row: dict) -> str | None:
    length = len(row["prompt"]) + len(row["chosen"])
    return f"{length} characters, longer than max_length 12" if length > 12 else None


def test_a_stage_check_stops_or_drops_and_counts(tmp_path, capsys):
    path = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    with pytest.raises(LmforgeError, match=r"pairs.jsonl split train row 0: 22 characters, longer than max_length 12"):
        load_checked(path, "preferences", PREFERENCE, check=too_long)
    short = [{"prompt": "1+1", "chosen": "2", "rejected": "3"}] * 3
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS + short)
    rows = load_checked(path, "preferences", PREFERENCE, check=too_long, invalid_rows="drop")
    assert len(rows.train) == 3 and rows.report["invalid_dropped"] == 20
    assert "dropped 20 invalid rows of 23 (first: row 0: 22 characters" in capsys.readouterr().out
    with pytest.raises(LmforgeError, match="no training rows left"):
        write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
        load_checked(path, "preferences", PREFERENCE, check=too_long, invalid_rows="drop")


def test_checks_run_in_several_processes(tmp_path):
    rows = [{"prompt": f"{i}", "chosen": "a", "rejected": "b"} for i in range(1500)] + [PAIRS[0]]
    path = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    loaded = load_checked(path, "preferences", PREFERENCE, check=too_long, invalid_rows="drop", num_proc=2)
    assert len(loaded.train) == 1500 and loaded.report["invalid_dropped"] == 1


# --- preference pairs, as dpo and reward read them ---


def test_pairs_keep_the_sources_splits_and_split_an_implicit_prompt_out(tmp_path):
    write_jsonl(tmp_path / "folder" / "train.jsonl", PAIRS[:15])
    write_jsonl(tmp_path / "folder" / "test.jsonl", PAIRS[15:])
    pairs, report = load_pairs(str(tmp_path / "folder"))
    assert {split: len(part) for split, part in pairs.items()} == {"train": 15, "test": 5}
    assert report["heldout_from"] == "split test" and report["format"] == "preference"
    assert (
        "test" not in load_pairs(jsonl_file(PAIRS, tmp_path))[0]
        and len(load_pairs(jsonl_file(PAIRS, tmp_path), 0.5)[0]["test"]) > 0
    )
    conversational = [
        {
            "good": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}],
            "bad": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "go away"}],
        }
        for i in range(4)
    ]
    write_jsonl(tmp_path / "conv.jsonl", conversational)
    pairs, _ = load_pairs({"path": str(tmp_path / "conv.jsonl"), "columns": {"good": "chosen", "bad": "rejected"}})
    assert pairs["train"][2] == {
        "prompt": [{"role": "user", "content": "hi 2"}],
        "chosen": [{"role": "assistant", "content": "hello"}],
        "rejected": [{"role": "assistant", "content": "go away"}],
    }


def test_load_rows_gives_every_split_or_the_one_named(tmp_path):
    write_jsonl(tmp_path / "folder" / "train.jsonl", PAIRS[:15])
    write_jsonl(tmp_path / "folder" / "test.jsonl", PAIRS[15:])
    assert {split: len(part) for split, part in load_rows(str(tmp_path / "folder")).items()} == {
        "train": 15,
        "test": 5,
    }
    assert len(load_rows({"path": str(tmp_path / "folder"), "split": "test"})["train"]) == 5
    with pytest.raises(LmforgeError, match=r"no split 'validation' \(splits: train, test\)"):
        load_rows({"path": str(tmp_path / "folder"), "split": "validation"})


# --- questions, as interrogate and eval ask them ---


def test_questions_come_from_question_files_prompt_completion_rows_or_conversations(tmp_path):
    expected = [{"question": "What is 2 + 2?", "answer": "4"}]
    write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "What is 2 + 2?", "answer": "4", "detail": "x"}])
    Dataset.from_list([{"prompt": "What is 2 + 2?", "completion": "4"}]).to_parquet(tmp_path / "pc.parquet")
    write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat("What is 2 + 2?", "4")}])
    for name in ("gsm8k.jsonl", "pc.parquet", "chats.jsonl"):
        assert load_questions(str(tmp_path / name), "questions") == expected, name
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": chat("What did I eat?")}])
    assert load_questions(str(tmp_path / "prompts.jsonl"), "unknowable", answers=False) == [
        {"question": "What did I eat?"}
    ]
    with pytest.raises(
        LmforgeError, match="questions: .*prompts.jsonl split train: columns prompt are the prompt-only"
    ):
        load_questions(str(tmp_path / "prompts.jsonl"), "questions")
    write_jsonl(tmp_path / "blank.jsonl", [{"question": "Why?", "answer": " "}])
    with pytest.raises(LmforgeError, match="blank.jsonl split train row 0: column 'answer' is empty"):
        load_questions(str(tmp_path / "blank.jsonl"), "questions")
