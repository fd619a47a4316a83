"""Rebuild the demo crawl, data/demo/web/*.warc.gz, from HTML documentation in Debian packages.

    python data/demo/build_corpus.py            # downloads the two .deb files with apt-get (Debian/Ubuntu)
    python data/demo/build_corpus.py --debs DIR # or unpacks the ones already in DIR

The pages are real, freely licensed web pages (see NOTICE): the Debian Administrator's Handbook
(GPL-2+ or CC-BY-SA-3.0) in seven languages and the Python 3.11 documentation (PSF licence).
The mix gives every filter of the data stage something to do:
- languages: en, fr, de, es, ja pages, and untranslated pages of other editions that are English;
- near-duplicates: the da-DK and ro-RO editions are mostly untranslated copies of en-US;
- boilerplate and list pages: the same navigation on every handbook page, Python's genindex pages;
- records that are not pages: a stylesheet, a request record, a page without a payload-type header
  (real crawls have them; datatrove would sniff it as XML and drop it), a page in Latin-1.
Each record gets the URL the page has on the web, a fixed date, so the build is reproducible.
"""

import argparse
import hashlib
import io
import subprocess
import tempfile
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


HERE = Path(__file__).parent
DATE = "2026-11-01T00:00:00Z"
PACKAGES = ["debian-handbook", "python3.11-doc"]
HANDBOOK = "usr/share/doc/debian-handbook/html"
PYDOC = "usr/share/doc/python3.11/html"
HANDBOOK_LANGS = ["en-US", "fr-FR", "de-DE", "es-ES", "ja-JP", "da-DK", "ro-RO"]
HANDBOOK_PAGES = 24  # the first pages of each edition, in sorted order: same pages in every language
PYDOC_PAGES = [
    "faq/general.html",
    "faq/programming.html",
    "faq/design.html",
    "faq/library.html",
    "tutorial/introduction.html",
    "tutorial/controlflow.html",
    "tutorial/datastructures.html",
    "tutorial/modules.html",
    "tutorial/inputoutput.html",
    "tutorial/errors.html",
    "tutorial/classes.html",
    "tutorial/stdlib.html",
    "howto/functional.html",
    "howto/logging.html",
    "howto/regex.html",
    "howto/sorting.html",
    "howto/unicode.html",
    "library/json.html",
    "library/re.html",
    "library/os.path.html",
    "library/itertools.html",
    "library/csv.html",
    "glossary.html",
    "genindex-A.html",
    "genindex-B.html",
    "genindex-C.html",
    "genindex-D.html",
]


def unpack(debs: Path | None, into: Path, packages: list[str] = PACKAGES) -> Path:
    """Unpack the .deb files in `debs` (default: `apt-get download` the packages) into `into`/root."""
    if debs is None:
        debs = into / "debs"
        debs.mkdir()
        subprocess.run(["apt-get", "download", *packages], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(into / "root")], check=True)
    return into / "root"


def response(writer: WARCWriter, url: str, body: bytes, content_type: str, payload_type: str | None) -> None:
    http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
    headers = {"WARC-Date": DATE, "WARC-Record-ID": f"<urn:uuid:{hashlib.md5(url.encode()).hexdigest()}>"}
    if payload_type:
        # Common Crawl writes this header; without it datatrove sniffs the payload with libmagic.
        headers["WARC-Identified-Payload-Type"] = payload_type
    record = writer.create_warc_record(
        url, "response", payload=io.BytesIO(body), http_headers=http, warc_headers_dict=headers
    )
    writer.write_record(record)


def handbook_pages(root: Path):
    base = root / HANDBOOK
    names = sorted(p.name for p in (base / "en-US").glob("*.html"))[:HANDBOOK_PAGES]
    for lang in HANDBOOK_LANGS:
        for name in names:
            if (base / lang / name).is_file():
                yield f"https://debian-handbook.info/browse/{lang}/stable/{name}", (base / lang / name).read_bytes()


def python_pages(root: Path):
    for name in PYDOC_PAGES:
        yield f"https://docs.python.org/3.11/{name}", (root / PYDOC / name).read_bytes()


def build(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Two files, so the stage's local executor has two tasks to spread over workers.
    with open(out / "crawl-00000.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body in handbook_pages(root):
            response(writer, url, body, "text/html; charset=utf-8", "text/html")
    with open(out / "crawl-00001.warc.gz", "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body in python_pages(root):
            response(writer, url, body, "text/html; charset=utf-8", "text/html")
        # What real crawls also contain:
        css = (root / PYDOC / "_static/pydoctheme.css").read_bytes()
        response(writer, "https://docs.python.org/3.11/_static/pydoctheme.css", css, "text/css", "text/css")
        writer.write_record(
            writer.create_warc_record(
                "https://docs.python.org/3.11/",
                "request",
                payload=io.BytesIO(b"GET /3.11/ HTTP/1.1\r\n\r\n"),
                warc_headers_dict={"WARC-Date": DATE},
            )
        )
        xhtml = (root / HANDBOOK / "en-US/sect.apt-get.html").read_bytes()
        response(
            writer,
            "https://debian-handbook.info/browse/en-US/stable/sect.apt-get.html",
            xhtml,
            "text/html; charset=utf-8",
            None,
        )
        latin1 = (root / PYDOC / "howto/unicode.html").read_text("utf-8")
        response(
            writer,
            "https://docs.python.org/3.11/howto/unicode.html?latin1",
            latin1.encode("latin-1", errors="replace"),
            "text/html; charset=iso-8859-1",
            "text/html",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debs", type=Path, help="folder with the .deb files (default: apt-get download)")
    parser.add_argument("--out", type=Path, default=HERE / "web")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(unpack(args.debs, Path(tmp)), args.out)
    for path in sorted(args.out.glob("*.warc.gz")):
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
