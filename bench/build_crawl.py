"""Build the data-stage bench crawl: about 6,000 real HTML pages from Debian documentation packages, as WARC.

    python bench/build_crawl.py                     # apt-get download the packages (Debian/Ubuntu), build
    python bench/build_crawl.py --debs DIR          # or unpack the .deb files already in DIR
    python bench/build_crawl.py --out runs/bench/crawl --pages-per-file 1000

Writes `crawl-NNNNN.warc.gz` files of about `--pages-per-file` HTML pages each (default 1,000) under
`--out` (default runs/bench/crawl, not committed). The pages, their licences in NOTICE:
- the Debian Administrator's Handbook in its 26 languages (3,302 pages; untranslated pages are
  English, and the da-DK and ro-RO editions are near-copies of en-US: near-duplicates);
- the Python 3.11 documentation (530 pages, with the genindex list pages);
- the PostgreSQL 15 manual (1,169 pages), Git's HTML documentation (242 pages);
- the Debian Reference in 10 languages and the Debian FAQ in 10 (337 pages).
And what a crawl has besides pages, as Common Crawl writes it:
- a request and a metadata record beside every response, a warcinfo record at the head of each file;
- exact duplicates: every 20th page fetched a second time under a tracking query, and the Debian
  FAQ's language-negotiated aliases (`basic-defs.html` and `basic-defs.en.html`, the same bytes);
- non-HTML payloads: stylesheets, scripts and images of the same sites (about 3% of responses);
- every 50th page without a `WARC-Identified-Payload-Type` header (older crawls lack it).
Records are shuffled with a fixed seed, so each file mixes sites and languages as a crawl's does,
and the build is reproducible. Shares the demo crawl's writer (data/demo/build_corpus.py).
"""

import argparse
import io
import random
import sys
import tempfile
from pathlib import Path

from warcio.warcwriter import WARCWriter


sys.path.insert(0, str(Path(__file__).parent.parent / "data/demo"))
from build_corpus import DATE, response, unpack  # noqa: E402 (the demo crawl's writer, reused)


PACKAGES = [
    "debian-handbook",
    "python3.11-doc",
    "postgresql-doc-15",
    "git-doc",
    *(f"debian-reference-{lang}" for lang in ("en", "de", "es", "fr", "id", "it", "ja", "pt", "zh-cn", "zh-tw")),
    "debian-faq",
    *(f"debian-faq-{lang}" for lang in ("de", "fr", "it", "ja", "ko", "nl", "pt", "ru", "zh-cn")),
]
# Folder in the unpacked packages -> the URL the same files have on the web.
SITES = {
    "usr/share/doc/debian-handbook/html": "https://debian-handbook.info/browse",
    "usr/share/doc/python3.11/html": "https://docs.python.org/3.11",
    "usr/share/doc/postgresql-doc-15/html": "https://www.postgresql.org/docs/15",
    "usr/share/doc/git-doc": "https://git-scm.com/docs",
    "usr/share/debian-reference": "https://www.debian.org/doc/manuals/debian-reference",
    "usr/share/doc/debian/FAQ": "https://www.debian.org/doc/manuals/debian-faq",
}
ASSETS = {".css": "text/css", ".js": "application/javascript", ".png": "image/png", ".svg": "image/svg+xml"}
DUPLICATE_EVERY, NO_PAYLOAD_TYPE_EVERY, ASSET_SHARE = 20, 50, 0.03


def fetches(root: Path) -> list[tuple[str, Path, str]]:
    """(url, file, content type) of every page and asset of the sites, pages' duplicates included."""
    pages, assets = [], []
    for folder, site in SITES.items():
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or "_sources" in path.parts:  # symlinks to files are kept: aliases
                continue
            url = f"{site}/{path.relative_to(root / folder).as_posix()}"
            if path.suffix == ".html":
                pages.append((url, path, "text/html"))
            elif path.suffix in ASSETS:
                assets.append((url, path, ASSETS[path.suffix]))
    duplicates = [(f"{url}?utm_source=feed", path, kind) for url, path, kind in pages[::DUPLICATE_EVERY]]
    rng = random.Random(0)
    assets = rng.sample(assets, min(len(assets), int(ASSET_SHARE * len(pages))))
    everything = pages + duplicates + assets
    rng.shuffle(everything)
    return everything


def write_fetch(writer: WARCWriter, n: int, url: str, path: Path, kind: str) -> None:
    """Request, response and metadata records of one fetch, as Common Crawl writes them."""
    host = url.split("/")[2]
    request = f"GET /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    writer.write_record(
        writer.create_warc_record(url, "request", payload=io.BytesIO(request), warc_headers_dict={"WARC-Date": DATE})
    )
    payload_type = None if kind == "text/html" and n % NO_PAYLOAD_TYPE_EVERY == 0 else kind
    charset = "; charset=utf-8" if kind.startswith("text/") else ""
    response(writer, url, path.read_bytes(), kind + charset, payload_type)
    metadata = f"fetchTimeMs: {50 + n % 400}\r\n".encode()
    writer.write_record(
        writer.create_warc_record(
            url,
            "metadata",
            payload=io.BytesIO(metadata),
            warc_content_type="application/warc-fields",
            warc_headers_dict={"WARC-Date": DATE},
        )
    )


def build(root: Path, out: Path, pages_per_file: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("crawl-*.warc.gz"):
        old.unlink()
    counts = {"files": 0, "pages": 0, "assets": 0}
    f = writer = None
    for n, (url, path, kind) in enumerate(fetches(root)):
        if writer is None or counts["pages"] >= pages_per_file * counts["files"]:
            if f:
                f.close()
            f = open(out / f"crawl-{counts['files']:05d}.warc.gz", "wb")
            writer = WARCWriter(f, gzip=True)
            writer.write_record(writer.create_warcinfo_record(f.name, {"software": "lmforge bench/build_crawl.py"}))
            counts["files"] += 1
        write_fetch(writer, n, url, path, kind)
        counts["pages" if kind == "text/html" else "assets"] += 1
    f.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debs", type=Path, help="folder with the .deb files (default: apt-get download)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/crawl"))
    parser.add_argument("--pages-per-file", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counts = build(unpack(args.debs, Path(tmp), PACKAGES), args.out, args.pages_per_file)
    size = sum(p.stat().st_size for p in args.out.glob("crawl-*.warc.gz"))
    print(
        f"{args.out}: {counts['files']} WARC files, {counts['pages']} HTML pages and {counts['assets']} other "
        f"payloads (3 records per fetch), {size / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
