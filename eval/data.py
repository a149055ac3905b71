"""Readers for the benchmarks' official distribution formats, with malformed rows counted, not fatal.

Every reader yields ``(where, row)`` pairs — ``where`` is ``file:line`` (or ``file:item``) for reports, ``row`` a
dict of the format's fields — so that one task's ``parse`` turns rows into examples whatever the format.
A file that does not exist is an error naming the task and the path; a row that cannot be read or parsed
is counted per reason in a ``LoadReport`` and skipped.
"""
import csv
import html
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path


class DataError(ValueError):
    """Input the user can fix (a missing file, a file that is not in the expected format)."""


class Malformed(Exception):
    """One row that does not hold what the format promises; the message is the reason counted."""


class LoadReport:
    """Rows read and malformed rows per reason, with the place of the first few."""

    def __init__(self, examples=5):
        self.rows, self.malformed, self.first, self._limit = 0, {}, [], examples

    def skip(self, reason, where):
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        if len(self.first) < self._limit:
            self.first.append(f"{where}: {reason}")

    @property
    def n_malformed(self):
        return sum(self.malformed.values())

    def to_dict(self):
        return {"rows": self.rows, "malformed": self.n_malformed, "malformed_reasons": dict(self.malformed),
                "malformed_first": list(self.first)}


def require_file(task, path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"task {task}: {path} not found")
    return path


def read_json_lines(path, report):
    """JSON Lines (JGLUE's ``*.json`` files, XL-Sum's ``*.jsonl``, MT-Bench's ``question.jsonl``)."""
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                report.skip("malformed JSON", where)
                continue
            if not isinstance(row, dict):
                report.skip("not a JSON object", where)
                continue
            yield where, row


def read_json_array(path, report):
    """One JSON document holding a list of objects (JEMHopQA)."""
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of questions")
    for index, row in enumerate(rows):
        if isinstance(row, dict):
            yield f"{path}:item {index}", row
        else:
            report.skip("not a JSON object", f"{path}:item {index}")


def read_squad(path, report):
    """SQuAD-style nested JSON (JSQuAD): one row per question, carrying its paragraph's context."""
    document = _load_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: expected a SQuAD-style object with a 'data' list")
    for a, article in enumerate(document["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            report.skip("article without paragraphs", f"{path}:data[{a}]")
            continue
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}:data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                report.skip("paragraph without qas", where)
                continue
            for q, qa in enumerate(paragraph["qas"]):
                if isinstance(qa, dict):
                    yield f"{where}.qas[{q}]", {**qa, "context": paragraph.get("context")}
                else:
                    report.skip("question is not an object", f"{where}.qas[{q}]")


def read_tsv(path, report, columns):
    """Tab-separated rows without a header (MGSM's ``mgsm_ja.tsv``: question, answer number)."""
    with open(path, encoding="utf-8", newline="") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(columns):
                report.skip(f"expected {len(columns)} tab-separated fields, got {len(fields)}", f"{path}:{line_number}")
                continue
            yield f"{path}:{line_number}", dict(zip(columns, fields))


def read_csv_folder(path, report, columns):
    """CSV files without a header, one per group, the group named by the file (JMMLU: one file per subject)."""
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .csv files")
    for file in files:
        with open(file, encoding="utf-8-sig", newline="") as f:
            for line_number, fields in enumerate(csv.reader(f), start=1):
                if len(fields) != len(columns):
                    report.skip(f"expected {len(columns)} fields, got {len(fields)}", f"{file}:{line_number}")
                    continue
                yield f"{file}:{line_number}", {**dict(zip(columns, fields)), "group": file.stem}


def read_niilc_xml(path, report):
    """NIILC-ECQA2015's XML: ``<questions><question id><text/><answers><answer/>…</answers>…</question>``."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(f"{path}: not well-formed XML ({error})") from None
    for index, question in enumerate(root.iter("question")):
        where = f"{path}:question {question.get('id', index)}"
        yield where, {"text": question.findtext("text"),
                      "answers": [answer.text for answer in question.iter("answer")]}


_SEG = re.compile(r'<seg id="?([^">]+)"?>(.*)</seg>')
_DOC = re.compile(r'<doc [^>]*docid="([^"]+)"')


def read_sgml_segments(path, report):
    """WMT's SGML test sets: ``{(docid, seg id): text}`` (entities unescaped); bad ``<seg`` lines counted."""
    segments, docid = {}, ""
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            doc = _DOC.search(line)
            docid = doc.group(1) if doc else docid
            if "<seg" not in line:
                continue
            match = _SEG.search(line)
            if match is None:
                report.skip("unreadable <seg> line", f"{path}:{line_number}")
                continue
            segments[(docid, match.group(1))] = html.unescape(match.group(2)).strip()
    return segments


def read_parallel_sgml(source_path, reference_path, report):
    """Source and reference SGML files paired by (document, segment id); unpaired segments are counted."""
    sources = read_sgml_segments(source_path, report)
    references = read_sgml_segments(reference_path, report)
    for key, source in sources.items():
        where = f"{source_path}:{key[0]}#{key[1]}"
        if key in references:
            yield where, {"source": source, "reference": references[key]}
        else:
            report.skip("segment missing from the reference file", where)
    for key in references.keys() - sources.keys():
        report.skip("segment missing from the source file", f"{reference_path}:{key[0]}#{key[1]}")


def read_hf_dataset(dataset, config=None, split="test"):
    """Rows of a Hugging Face dataset (used only when params name one; needs access to the hub)."""
    import datasets  # imported late: only this path needs it
    for index, row in enumerate(datasets.load_dataset(dataset, config, split=split)):
        yield f"{dataset}:{split}[{index}]", dict(row)


def _load_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
