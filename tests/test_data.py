"""The data stage on real pages: which documents each filter keeps and why, the funnel, bad input, resume."""

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from lmforge import LmforgeError
from lmforge.data import DataConfig, main


ROOT = Path(__file__).parent.parent
DEMO_WARCS = sorted((ROOT / "data/demo/web").glob("*.warc.gz"))
HANDBOOK = "https://debian-handbook.info/browse/{}/stable/{}"


def demo_pages() -> dict[str, bytes]:
    """URL -> HTML of every page of the shipped demo crawl."""
    pages = {}
    for path in DEMO_WARCS:
        with open(path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type == "response":
                    pages[record.rec_headers.get("WARC-Target-URI")] = record.content_stream().read()
    return pages


def write_warc(path: Path, pages: dict[str, bytes], payload_type: str | None = "text/html") -> Path:
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body in pages.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            # A record id derived from the URL (warcio draws a random one): document ids, and so the held-out
            # split that hashes them, are the same on every run.
            headers = {"WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>"}
            headers |= {"WARC-Identified-Payload-Type": payload_type} if payload_type else {}
            writer.write_record(
                writer.create_warc_record(
                    url, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict=headers
                )
            )
    return path


def documents(output_dir: Path) -> list[dict]:
    return [row for f in sorted((output_dir / "documents").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def removed(output_dir: Path, step: str) -> dict[str, str]:
    """URL -> drop reason, from the step's exclusion files."""
    out = {}
    for f in (output_dir / "removed" / step).glob("*"):
        for line in gzip.open(f, "rt"):
            doc = json.loads(line)
            out[doc["metadata"]["url"]] = doc["metadata"].get("filter_reason")
    return out


def config(tmp_path, **overrides) -> DataConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"), tasks=1, workers=1, step_options={"gopher_quality": {"min_doc_words": 30}}
    )
    return DataConfig(**{**defaults, **overrides})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo recipe's stage on the shipped crawl, run once for the tests that read its output."""
    out = tmp_path_factory.mktemp("demo") / "data"
    result = main(
        DataConfig(
            warc_paths=[str(p) for p in DEMO_WARCS],
            output_dir=str(out),
            tasks=2,
            workers=2,
            step_options={"gopher_quality": {"min_doc_words": 30}},
        )
    )
    return out, result


@pytest.mark.slow
def test_funnel_reconciles_end_to_end(demo_run):
    out, result = demo_run
    steps = result["steps"]
    assert [row["step"] for row in steps] == [
        "read_warc",
        "url_filter",
        "extract",
        "language_filter",
        "gopher_repetition",
        "gopher_quality",
        "c4_quality",
        "fineweb_quality",
        "minhash",
        "pii",
    ]
    records = sum(1 for p in DEMO_WARCS for _ in ArchiveIterator(open(p, "rb")))
    assert steps[0]["in"] == records
    for row in steps:
        assert row["in"] == row["kept"] + sum(row["reasons"].values()), row
    for before, after in zip(steps, steps[1:]):
        assert before["kept"] == after["in"], (before["step"], after["step"])
    assert steps[-1]["kept"] == result["documents_out"] == len(documents(out)) > 20
    assert json.loads((out / "funnel.json").read_text()) == result
    # datatrove writes each executor, with the executors it depends on, to executor.json: the URL filter's loaded
    # block lists (4.5 million domains) are written as their size, not in full (138 MB per file before)
    logs = sorted((out / "logs").glob("*/executor.json"))
    assert len(logs) == 5 and max(path.stat().st_size for path in logs) < 1_000_000


@pytest.mark.slow
def test_demo_filters_drop_what_they_should(demo_run):
    out, result = demo_run
    reader = result["steps"][0]
    # the stylesheet and the request record are the only records that are not pages; the page without a
    # payload-type header and the Latin-1 page are read like the others
    assert reader["reasons"] == {"not_html": 1, "request_record": 1}
    assert removed(out, "language_filter")[HANDBOOK.format("fr-FR", "advanced-administration.html")] == "language"
    assert removed(out, "gopher_repetition")["https://docs.python.org/3.11/genindex-A.html"].startswith("duplicated_")
    assert removed(out, "fineweb_quality")[HANDBOOK.format("en-US", "basic-configuration.html")] == "char_dup_ratio"
    kept = {doc["metadata"]["url"]: doc for doc in documents(out)}
    assert HANDBOOK.format("en-US", "apt.html") in kept
    assert {doc["metadata"]["language"] for doc in kept.values()} == {"en"}
    # untranslated pages of the other editions are English copies: MinHash keeps one of each
    assert removed(out, "minhash")
    assert result["steps"][8]["reasons"] == {"near_duplicate": len(removed(out, "minhash"))}


@pytest.mark.slow
def test_each_document_kept_or_dropped_for_its_reason(tmp_path):
    pages = demo_pages()
    preface = pages[HANDBOOK.format("en-US", "preface.html")]
    near_copy = preface.replace(b"Debian", b"Debian GNU/Linux", 3)
    with_email = pages[HANDBOOK.format("en-US", "foreword.html")].replace(
        b"Linux has been garnering", b"Write to jane.doe@lists.example.net with questions. Linux has been garnering"
    )
    warc = write_warc(
        tmp_path / "mix.warc.gz",
        {
            "https://a.example/preface": preface,
            "https://b.example/preface-copy": near_copy,
            "https://a.example/foreword": with_email,
            "https://a.example/french": pages[HANDBOOK.format("fr-FR", "advanced-administration.html")],
            "https://a.example/index": pages["https://docs.python.org/3.11/genindex-B.html"],
        },
    )
    out = tmp_path / "out"
    main(config(tmp_path, warc_paths=[str(warc)]))
    kept = {doc["metadata"]["url"]: doc["text"] for doc in documents(out)}
    assert len({"https://a.example/preface", "https://b.example/preface-copy"} & set(kept)) == 1
    assert set(removed(out, "minhash")) & {"https://a.example/preface", "https://b.example/preface-copy"}
    assert removed(out, "language_filter") == {"https://a.example/french": "language"}
    assert "https://a.example/index" in removed(out, "gopher_repetition")
    assert "jane.doe@lists.example.net" not in kept["https://a.example/foreword"]
    assert "@example.com" in kept["https://a.example/foreword"] or "@example.org" in kept["https://a.example/foreword"]


@pytest.mark.slow
def test_page_without_payload_type_is_not_dropped(tmp_path):
    # The XHTML handbook pages sniff as text/xml; datatrove's own reader drops them silently.
    page = demo_pages()[HANDBOOK.format("en-US", "apt.html")]
    warc = write_warc(tmp_path / "noheader.warc.gz", {"https://a.example/apt": page}, payload_type=None)
    result = main(config(tmp_path, warc_paths=[str(warc)], minhash=False))
    assert result["steps"][0] == {"step": "read_warc", "in": 1, "kept": 1, "dropped": 0, "reasons": {}}
    assert result["documents_out"] == 1


def test_page_in_declared_non_utf8_encoding_is_decoded(tmp_path):
    text = "<html><body><p>Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e. " * 40 + "</p></body></html>"
    path = tmp_path / "latin1.warc.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=iso-8859-1")], protocol="HTTP/1.1")
        writer.write_record(
            writer.create_warc_record(
                "https://a.example/cafe",
                "response",
                payload=io.BytesIO(text.encode("latin-1")),
                http_headers=http,
                warc_headers_dict={"WARC-Identified-Payload-Type": "text/html"},
            )
        )
    result = main(
        config(
            tmp_path,
            warc_paths=[str(path)],
            minhash=False,
            url_filter=False,
            language_filter=False,
            gopher_repetition=False,
            gopher_quality=False,
            c4_quality=False,
            fineweb_quality=False,
        )
    )
    assert result["documents_out"] == 1
    assert "Café crème brûlée" in documents(tmp_path / "out")[0]["text"]


@pytest.mark.slow
def test_bad_files_are_named_counted_and_skipped(tmp_path, capfd):
    page = demo_pages()[HANDBOOK.format("en-US", "apt.html")]
    write_warc(tmp_path / "good.warc.gz", {"https://a.example/apt": page})
    (tmp_path / "notes.warc.gz").write_bytes(gzip.compress(b'{"text": "a JSON line, not a WARC record"}\n' * 10))
    big = DEMO_WARCS[1].read_bytes()
    (tmp_path / "truncated.warc.gz").write_bytes(big[: len(big) // 2])
    result = main(
        config(
            tmp_path,
            warc_paths=[str(tmp_path / "*.warc.gz")],
            minhash=False,
            gopher_quality=False,
            c4_quality=False,
            fineweb_quality=False,
            gopher_repetition=False,
            language_filter=False,
        )
    )
    assert result["bad_files"] == 2
    read = result["steps"][0]
    assert read["kept"] > 1  # the good file and the records before the cut
    err = capfd.readouterr().err
    assert "notes.warc.gz: not a WARC file" in err
    assert "truncated.warc.gz: truncated or corrupt after record" in err


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(LmforgeError, match="warc_paths: '.*nothing-here/\\*.warc.gz' matches no file"):
        main(config(tmp_path, warc_paths=[str(tmp_path / "nothing-here/*.warc.gz")]))
    with pytest.raises(LmforgeError, match="warc_paths: '.*missing.warc.gz' matches no file"):
        main(config(tmp_path, warc_paths=[str(tmp_path / "missing.warc.gz")]))
    with pytest.raises(LmforgeError, match="no input"):
        DataConfig()


@pytest.mark.slow
def test_common_crawl_dump_listing(tmp_path):
    # A local mirror of Common Crawl's layout exercises the same code that reads the real dump listing.
    segment = tmp_path / "crawl-data/CC-TEST/segments/1/warc"
    segment.mkdir(parents=True)
    write_warc(segment / "a.warc.gz", {"https://a.example/apt": demo_pages()[HANDBOOK.format("en-US", "apt.html")]})
    with gzip.open(tmp_path / "crawl-data/CC-TEST/warc.paths.gz", "wt") as f:
        f.write("crawl-data/CC-TEST/segments/1/warc/a.warc.gz\ncrawl-data/CC-TEST/segments/1/warc/b.warc.gz\n")
    result = main(config(tmp_path, common_crawl_dump="CC-TEST", common_crawl_root=str(tmp_path), minhash=False))
    assert result["steps"][0]["in"] == 1 and result["documents_out"] == 1


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates(tmp_path, demo_run):
    out = tmp_path / "data"
    args = [
        sys.executable,
        "-m",
        "lmforge.data",
        "--config",
        str(ROOT / "recipes/demo/data.yaml"),
        "--output_dir",
        str(out),
        "--workers",
        "1",
        "--warc_paths",
        *map(str, DEMO_WARCS),
    ]
    process = subprocess.Popen(
        args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    completions = out / "logs/filter/completions"
    deadline = time.time() + 240
    while not (completions.is_dir() and any(completions.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # mid-run: one filter task done, the other not
    process.wait()
    assert not (out / "funnel.json").exists()

    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Skipping" in rerun.stderr or "skipping" in rerun.stderr  # datatrove skipped the finished task
    ids = [doc["id"] for doc in documents(out)]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(doc["id"] for doc in documents(demo_run[0]))


@pytest.mark.slow
def test_ray_executor_gives_the_local_result(tmp_path):
    ray = pytest.importorskip("ray")
    pages = demo_pages()
    urls = list(pages)
    warcs = [write_warc(tmp_path / f"{i}.warc.gz", {url: pages[url] for url in urls[i::2][:10]}) for i in (0, 1)]
    # Two tasks per stage and two MinHash buckets (not the default 14): each task of a stage is a new Ray actor, a
    # fresh process importing datatrove's steps, and 14 of them cost more than the rest of the test.
    options = {"gopher_quality": {"min_doc_words": 30}, "minhash": {"num_buckets": 2}}
    inputs = dict(warc_paths=[str(w) for w in warcs], tasks=2, step_options=options)
    local = main(config(tmp_path / "local", **inputs))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = main(
            config(
                tmp_path / "ray",
                **inputs,
                executor="ray",
                executor_options={"cpus_per_task": 1, "mem_per_cpu_gb": 1},
            )
        )
    finally:
        ray.shutdown()
    assert on_ray == local and local["documents_out"] > 0
