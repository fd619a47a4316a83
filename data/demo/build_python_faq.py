"""Rebuild data/demo/python_faq.jsonl, known-answer questions, from the Python FAQ's reStructuredText.

    python data/demo/build_python_faq.py            # downloads python3.11-doc with apt-get (Debian/Ubuntu)
    python data/demo/build_python_faq.py --faq DIR  # or reads DIR/*.rst.txt (html/_sources/faq of that package)

A question is a section heading that ends in "?"; its answer is the section's first paragraph with the
reStructuredText markup taken out, split into `answer` (the first sentence) and `detail` (the rest).
Sections whose first paragraph introduces a code block (ends in ":") or only points elsewhere ("See ...")
are left out.
The FAQ is part of Python's documentation (PSF licence, see NOTICE).
"""

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path


HERE = Path(__file__).parent
FAQ = "usr/share/doc/python3.11/html/_sources/faq"
UNDERLINE = re.compile(r"^([=\-~^*+#])\1+$")
MARKUP = [
    (re.compile(r":[a-z:]+:`~?([^`<]*?)\s*(<[^>]*>)?`"), r"\1"),  # :ref:`text <target>`, :func:`name`
    (re.compile(r"`([^`<]*?)\s*<[^>]*>`_+"), r"\1"),  # `text <url>`_
    (re.compile(r"``([^`]*)``"), r"\1"),
    (re.compile(r"\*\*?([^*]+)\*\*?"), r"\1"),
    (re.compile(r"`([^`]*)`_?"), r"\1"),
]
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def plain(text: str) -> str:
    text = " ".join(text.split())
    for pattern, replacement in MARKUP:
        text = pattern.sub(replacement, text)
    return text


def sections(rst: str):
    """(heading, body) for every section of a reStructuredText file."""
    lines = rst.splitlines()
    starts = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip() and UNDERLINE.match(lines[i + 1]) and len(lines[i + 1]) >= len(lines[i].rstrip())
    ]
    for start, end in zip(starts, starts[1:] + [len(lines)]):
        yield lines[start].strip(), "\n".join(lines[start + 2 : end])


def first_paragraph(body: str) -> str:
    for paragraph in re.split(r"\n\s*\n", body):
        if paragraph.strip() and not paragraph.lstrip().startswith(".."):
            return paragraph
    return ""


def pairs(faq_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(faq_dir.glob("*.rst.txt")):
        for heading, body in sections(path.read_text(encoding="utf-8")):
            paragraph = plain(first_paragraph(body))
            if not heading.endswith("?") or not paragraph or paragraph.endswith(":"):
                continue
            answer, *rest = SENTENCE_END.split(paragraph, maxsplit=1)
            if answer.startswith("See "):  # a pointer to another section is no answer to check against
                continue
            rows.append(
                {
                    "question": plain(heading),
                    "answer": answer,
                    "detail": " ".join(rest),
                    "source": f"faq/{path.name.removesuffix('.rst.txt')}",
                }
            )
    return rows


def download_faq(work: Path) -> Path:
    subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=work, check=True)
    (deb,) = work.glob("python3.11-doc_*.deb")
    subprocess.run(["dpkg", "-x", str(deb), str(work / "x")], check=True)
    return work / "x" / FAQ


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", type=Path, help="folder of the FAQ's .rst.txt sources")
    parser.add_argument("--output", type=Path, default=HERE / "python_faq.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = pairs(args.faq or download_faq(Path(work)))
    args.output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} questions -> {args.output}")


if __name__ == "__main__":
    main()
