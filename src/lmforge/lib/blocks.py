"""Three datatrove blocks, adapted where datatrove's own fail offline or lose data silently.

- `AuditedWarcReader`: datatrove's WarcReader drops records it cannot use without saying why or how
  many, gives up on a whole task at the first truncated or non-WARC file, passes over an empty file
  in silence, and takes an XHTML page without a payload-type header for XML. This reader counts every
  record it does not turn into a document, by reason, counts and names every empty, truncated or
  non-WARC file (`bad_files`), and skips a bad file's remainder.
- `LanguageFilter` with a `py3langid` backend: datatrove's backends (ft176, glotlid) download their
  model at run time; py3langid's model ships inside the package, so the stage works offline.
- `URLFilter` that uses the public-suffix list bundled with tldextract instead of fetching the live one
  from the web at first use: offline, and the same domains parse the same way on every run.
The URL block lists and the language model are loaded once per process, not once per task: datatrove
copies the pipeline for every task, and a worker runs many tasks.
"""

import re
from functools import cache
from typing import TYPE_CHECKING

from datatrove.data import Document
from datatrove.pipeline.filters import LanguageFilter as DatatroveLanguageFilter
from datatrove.pipeline.filters import URLFilter as DatatroveURLFilter
from datatrove.pipeline.readers import WarcReader
from datatrove.utils.lid import LID
from datatrove.utils.logging import logger


if TYPE_CHECKING:  # types of the hints only: importing them here would slow every import of this module
    from warcio.recordloader import ArcWarcRecord

HTML_TYPES = {"text/html", "application/xhtml+xml"}
ARC_DATE = re.compile(r"\d{14}")
CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


class AuditedWarcReader(WarcReader):
    """WarcReader that accounts for every record: `total` = `forwarded` + the `dropped_<reason>` counts."""

    name = "🕷 Warc (audited)"

    def read_file(self, filepath: str):
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        index = -1
        try:
            with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
                for index, record in enumerate(ArchiveIterator(f)):
                    arc_date = record.rec_headers.get_header("archive-date") or ""
                    if record.format == "arc" and not ARC_DATE.fullmatch(arc_date):
                        # warcio reads any line of five words as an old ARC header: this file is neither
                        raise ArchiveLoadFailed("its first line is no WARC or ARC header")
                    self.stat_update("total")
                    with self.track_time():
                        data, reason = record_to_dict(record)
                    if data is None:
                        self.stat_update("dropped", f"dropped_{reason}")
                        if reason == "undecodable":  # the other reasons are records that are not pages
                            logger.warning(f"{filepath}: record {index} ({data_url(record)}): {reason}, skipped")
                        continue
                    document = self.get_document_from_dict(data, filepath, index)
                    if document is None:
                        self.stat_update("dropped", "dropped_adapter")
                        continue
                    self.stat_update("forwarded")
                    yield document
            if index == -1:  # an empty file (or an empty gzip stream) reads as a WARC without records
                self.stat_update("bad_files")
                logger.error(f"{filepath}: empty, no WARC record; skipped the file")
        except ArchiveLoadFailed as error:
            self.stat_update("bad_files")
            logger.error(f"{filepath}: not a WARC file ({error}); skipped the file")
        except (EOFError, OSError, ValueError) as error:
            # gzip, zstd and warcio raise these on a file cut short mid-record.
            self.stat_update("bad_files")
            logger.error(f"{filepath}: truncated or corrupt after record {index} ({error!r}); skipped the rest")


def data_url(record: "ArcWarcRecord") -> str:
    return record.rec_headers.get("WARC-Target-URI", "no URL")


def record_to_dict(record: "ArcWarcRecord") -> tuple[dict | None, str | None]:
    """The page of a WARC record as a document dict, or None and the reason it is not one."""
    import cchardet
    import magic

    if record.rec_type not in ("response", "conversion"):  # request, metadata, warcinfo: no page
        return None, f"{record.rec_type}_record"
    payload_type = record.rec_headers.get("WARC-Identified-Payload-Type")
    if record.rec_type == "conversion":  # WET files: already text
        payload_type = "text/plain"
    body = record.content_stream().read()
    if payload_type is None:
        # Older crawls lack the header: sniff, and take XML that is an XHTML page for what it is.
        payload_type = magic.from_buffer(body[:4096], mime=True)
        if payload_type in ("text/xml", "application/xml") and b"<html" in body[:4096].lower():
            payload_type = "application/xhtml+xml"
    if payload_type not in HTML_TYPES and record.rec_type != "conversion":
        return None, "not_html"

    http_type = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
    declared = CHARSET.search(http_type or "")
    text = None
    for charset in [declared.group(1) if declared else None, "utf-8", cchardet.detect(body)["encoding"]]:
        if charset:
            try:
                text = body.decode(charset)
                break
            except (UnicodeDecodeError, LookupError):
                continue
    if text is None:
        return None, "undecodable"
    headers = dict(record.rec_headers.headers)
    return {
        "text": text,
        "id": record.rec_headers.get("WARC-Record-ID"),
        "url": record.rec_headers.get("WARC-Target-URI") or headers.get("uri"),
        "date": record.rec_headers.get("WARC-Date") or headers.get("archive-date"),
    }, None


@cache
def py3langid_model():
    """py3langid's model, loaded at its first use in each worker process (not pickled across processes)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class Py3LangidLID(LID):
    """Language identification with py3langid, whose model is inside the package (no download)."""

    @property
    def model(self):
        return py3langid_model()

    def predict(self, doc: Document) -> tuple[tuple[str, float], dict[str, float]]:
        ranked = self.model.rank(doc.text.replace("\n", " "))  # [(lang, prob), ...], best first
        scores = {lang: float(prob) for lang, prob in ranked}
        best = ranked[0][0], float(ranked[0][1])
        return best, ({lang: scores.get(lang, 0.0) for lang in self.languages} if self.languages else scores)


class LanguageFilter(DatatroveLanguageFilter):
    """datatrove's LanguageFilter, plus `backend="py3langid"`; drops are counted with the reason `language`."""

    _requires_dependencies = ["py3langid"]

    def __init__(self, languages=None, language_threshold=0.65, exclusion_writer=None, backend="py3langid", **kwargs):
        offline = backend == "py3langid"
        super().__init__(languages, language_threshold, exclusion_writer, "ft176" if offline else backend, **kwargs)
        if offline:
            self.backend = backend
            self.model = Py3LangidLID(self.languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return super().filter(doc) or (False, "language")


# What URLFilter.download_data loads, by the lists given to the filter: one load per process, where
# datatrove loads them again in every task (4.5 million domains: about 4 s on the project's machine).
URL_LISTS = ("block_listed_domains", "block_listed_url", "banned_words", "banned_subwords", "soft_banned_words")
LOADED_URL_LISTS = {}


class Listed(set):
    """A loaded block list that prints as its size. datatrove writes each executor, and the executors it depends on,
    to executor.json, printing every set in full: the 4.5 million loaded domains made each later executor's file
    138 MB (550 MB and 8 s per run of the data stage)."""

    def __str__(self) -> str:
        return f"<{len(self)} entries>"


class URLFilter(DatatroveURLFilter):
    """datatrove's URLFilter on tldextract's bundled public-suffix snapshot (no fetch at run time), with its
    block lists and suffix list loaded once per process."""

    def __init__(self, **kwargs):
        from tldextract import TLDExtract

        super().__init__(**kwargs)
        self.tldextractor = TLDExtract(suffix_list_urls=())

    def download_data(self):
        if self._downloaded or not self.use_integrated_lists:
            return
        key = tuple(frozenset(getattr(self, name)) for name in URL_LISTS)
        if key not in LOADED_URL_LISTS:
            super().download_data()
            self.tldextractor("https://example.com")  # parses the suffix list now, to be shared too
            shared = (*URL_LISTS, "banned_subwords_automaton", "tldextractor")
            LOADED_URL_LISTS[key] = {name: getattr(self, name) for name in shared}
            LOADED_URL_LISTS[key] |= {name: Listed(getattr(self, name)) for name in URL_LISTS}
        self.__dict__.update(LOADED_URL_LISTS[key])
        self._downloaded = True
