"""The data-stage bench: its crawl builder writes what a crawl holds, the URL filter loads its lists once per
process, and the bench itself runs end to end on a few pages of the demo crawl."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import URLFilter as DatatroveURLFilter
from warcio.archiveiterator import ArchiveIterator

from lmforge.lib.blocks import URLFilter


ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import build_crawl  # noqa: E402 (a script of bench/, imported for its functions)


def test_bench_crawl_has_what_a_crawl_has(tmp_path):
    """Pages with request and metadata records, duplicates under a second URL, assets, header-less pages."""
    site = tmp_path / "root/usr/share/doc/git-doc"
    site.mkdir(parents=True)
    for i in range(120):
        (site / f"page{i}.html").write_text(f"<html><body><p>Page {i} of the manual.</p></body></html>")
    (site / "style.css").write_text("body { color: black }")
    (site / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    counts = build_crawl.build(tmp_path / "root", tmp_path / "crawl", pages_per_file=50)

    records = []
    for path in sorted((tmp_path / "crawl").glob("*.warc.gz")):
        with open(path, "rb") as f:
            records += [
                (r.rec_type, r.rec_headers.get("WARC-Target-URI"), r.rec_headers.get("WARC-Identified-Payload-Type"))
                for r in ArchiveIterator(f)
            ]
    responses = [r for r in records if r[0] == "response"]
    assert counts == {"files": 3, "pages": 126, "assets": 2}  # 120 pages + every 20th again, 2 assets
    assert [r[0] for r in records].count("warcinfo") == 3
    assert [r[0] for r in records].count("request") == [r[0] for r in records].count("metadata") == len(responses)
    assert sum("?utm_source=feed" in r[1] for r in responses) == 6
    assert {r[2] for r in responses} == {"text/html", None, "text/css", "image/png"}
    assert all(r[1].endswith(".html") for r in responses if r[2] is None)  # only pages lack the header


def test_url_filter_loads_its_lists_once_per_process():
    """Every task's copy of the filter shares one load of the block lists, and filters as datatrove's does."""
    urls = ["https://docs.python.org/3/tutorial/", "https://pornhub.com/video", "https://example.com/free-porn-xxx"]
    ours = URLFilter()
    first, second = copy.deepcopy(ours), copy.deepcopy(ours)  # what the executor does for each task
    first.download_data()
    second.download_data()
    assert second.block_listed_domains is first.block_listed_domains and len(first.block_listed_domains) > 10**6
    reference = DatatroveURLFilter()
    results = [second.filter(Document(text="", id=str(i), metadata={"url": url})) for i, url in enumerate(urls)]
    expected = [reference.filter(Document(text="", id=str(i), metadata={"url": url})) for i, url in enumerate(urls)]
    assert results == expected and results[0] is True and results[1] == (False, "domain")


@pytest.mark.slow
def test_data_bench_runs_on_a_few_pages(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/data_pipeline.py"), "--input", str(ROOT / "data/demo/web")]
        + ["--limit", "4", "--workers", "1", "--out", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ratio lmforge/bare, 1 worker(s)" in result.stdout
    for step in ("Url-filter (filter)", "Trafilatura (extract)", "MinHash stage 1 (dedup)", "PII (format)"):
        assert step in result.stdout, step
