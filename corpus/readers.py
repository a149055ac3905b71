"""Readers for the corpus sources: JSON Lines, Parquet, plain text, WARC and Hugging Face datasets.

Each disk reader counts bad input per reason (``bad_<reason>`` in its stats) and skips it; the file and
line of the first few are written to ``<report_folder>/<source>-<rank>.json`` for the stage's report.
"""
import json

import orjson

from datatrove.io import get_datafolder
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.stats import Stats

from corpus.text import extract_html

EXAMPLES_KEPT = 5


class BadInputLog:
    """What a reader skipped, and where: counts go to the block's stats, the first few places to a file."""

    def __init__(self, block, report_folder, source):
        self.block, self.source, self.examples = block, source, []
        self.folder = get_datafolder(report_folder) if report_folder else None

    def skip(self, reason, where):
        self.block.stat_update(f"bad_{reason}")
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append({"reason": reason, "where": where})

    def save(self, rank):
        if self.folder is not None:
            with self.folder.open(f"{self.source}-{rank:05d}.json", "w") as f:
                json.dump(self.examples, f, ensure_ascii=False)


class _CountingReader:
    """Mixin: a reader of one named source that logs bad input and tags documents with the source name."""

    def _setup(self, source, report_folder):
        self.source, self.name = source, f"source {source}"
        self.stats = Stats(str(self))  # named after the source in the report
        self.default_metadata = {"source": source}
        self._report_folder = report_folder

    def run(self, data=None, rank=0, world_size=1):
        self.bad = BadInputLog(self, self._report_folder, self.source)
        yield from super().run(data, rank, world_size)
        self.bad.save(rank)

    def read_file(self, filepath):
        try:
            yield from self.read_records(filepath)
        except (OSError, EOFError, ValueError) as error:  # gzip/parquet/warc damage, permissions
            self.bad.skip("unreadable_file", f"{filepath}: {type(error).__name__}: {error}"[:300])

    def document(self, text, filepath, where, number, extra=None):
        """A Document for ``text``, or None (counted) when it is not a usable string."""
        if not isinstance(text, str):
            return self.bad.skip("missing_text_field", where)
        if not text.strip():
            return self.bad.skip("empty_document", where)
        return self.get_document_from_dict({self.text_key: text, **(extra or {})}, filepath, number)


class JsonlSource(_CountingReader, JsonlReader):
    """JSON Lines (gzip/zstd by extension), the text in ``text_key``; line numbers count from 1."""

    def __init__(self, data_folder, source, text_key="text", glob_pattern=None, report_folder=None):
        super().__init__(data_folder, text_key=text_key, glob_pattern=glob_pattern)
        self._setup(source, report_folder)

    def read_records(self, filepath):
        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for number, raw in enumerate(f, start=1):
                document = self._parse_line(raw, filepath, number)
                if document:
                    yield document

    def _parse_line(self, raw, filepath, number):
        where = f"{filepath}:{number}"
        if not raw.strip():
            return None
        try:
            record = orjson.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return self.bad.skip("invalid_utf8", where)
        except orjson.JSONDecodeError:
            return self.bad.skip("malformed_json", where)
        if not isinstance(record, dict):
            return self.bad.skip("missing_text_field", where)
        extra = {k: v for k, v in record.items() if k in (self.id_key,)}
        return self.document(record.get(self.text_key), filepath, where, number, extra)


class ParquetSource(_CountingReader, ParquetReader):
    """Parquet files, the text in column ``text_key``; rows number from 1."""

    def __init__(self, data_folder, source, text_key="text", glob_pattern=None, report_folder=None):
        super().__init__(data_folder, text_key=text_key, glob_pattern=glob_pattern, read_metadata=False)
        self._setup(source, report_folder)

    def read_records(self, filepath):
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as f, pq.ParquetFile(f) as table:
            if self.text_key not in table.schema_arrow.names:
                return self.bad.skip("missing_text_field", f"{filepath}: no column '{self.text_key}'")
            number = 0
            for batch in table.iter_batches(batch_size=self.batch_size, columns=[self.text_key]):
                for value in batch.column(0).to_pylist():
                    number += 1
                    document = self.document(value, filepath, f"{filepath}:row {number}", number)
                    if document:
                        yield document


class TextSource(_CountingReader, BaseDiskReader):
    """Plain UTF-8 text: one document per file (``split: file``) or per blank-line-separated block."""

    def __init__(self, data_folder, source, split="file", glob_pattern=None, report_folder=None):
        if split not in ("file", "paragraph"):
            raise ValueError(f"text source {source}: split must be 'file' or 'paragraph', got {split!r}")
        super().__init__(data_folder, glob_pattern=glob_pattern)
        self.split = split
        self._setup(source, report_folder)

    def read_records(self, filepath):
        with self.data_folder.open(filepath, "rb") as f:
            blocks = [(1, f.read())] if self.split == "file" else _paragraphs(f)
            for number, raw in blocks:
                where = f"{filepath}:{number}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.bad.skip("invalid_utf8", where)
                    continue
                document = self.document(text, filepath, where, number)
                if document:
                    yield document


def _paragraphs(lines):
    """(first line number, bytes) of each blank-line-separated block of a binary line iterator."""
    block, start = [], None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            start = start or number
            block.append(line)
        elif block:
            yield start, b"".join(block)
            block, start = [], None
    if block:
        yield start, b"".join(block)


class WarcSource(_CountingReader, BaseDiskReader):
    """WARC response records with an HTML payload; the main text is extracted with trafilatura. (Not datatrove's
    WarcReader, which also needs libmagic and cchardet to guess types and charsets this reader does not guess.)"""

    _requires_dependencies = ["warcio", "trafilatura"]
    compression = "infer"

    def __init__(self, data_folder, source, glob_pattern=None, report_folder=None):
        super().__init__(data_folder, glob_pattern=glob_pattern)
        self._setup(source, report_folder)

    def read_records(self, filepath):
        from warcio.archiveiterator import ArchiveIterator

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for number, record in enumerate(ArchiveIterator(f), start=1):
                if record.rec_type != "response":
                    continue
                document = self._html_document(record, filepath, number)
                if document:
                    yield document

    def _html_document(self, record, filepath, number):
        url = record.rec_headers.get_header("WARC-Target-URI")
        where = f"{filepath}:record {number} ({url})"
        content_type = (record.http_headers.get_header("Content-Type") if record.http_headers else "") or ""
        if "html" not in content_type:
            return None  # images, PDFs and the like are not documents
        try:
            html = record.content_stream().read().decode("utf-8")
        except UnicodeDecodeError:
            return self.bad.skip("invalid_utf8", where)
        return self.document(extract_html(html), filepath, where, number, {"url": url})


def hf_source(dataset, source, text_key="text", split="train", config=None):
    """A Hugging Face dataset by name (streamed); needs the `datasets` package and access to the hub."""
    from datatrove.pipeline.readers import HuggingFaceDatasetReader

    options = {"split": split, **({"name": config} if config else {})}
    return HuggingFaceDatasetReader(dataset, dataset_options=options, streaming=True, text_key=text_key,
                                    default_metadata={"source": source})
