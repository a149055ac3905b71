"""Chat data in the common formats, read into one normal form: a list of ``{"role", "content"}`` messages.

  messages  OpenAI style: {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
  sharegpt  {"conversations": [{"from": "system" | "human" | "gpt" | "user" | "assistant", "value": "..."}, ...]}
  alpaca    {"instruction": "...", "input": "..." (optional), "output": "..."}
  auto      one of the above, recognised row by row by its keys

Files are JSON Lines (``.jsonl``, ``.jsonl.gz``) or Parquet, or a folder of them. Every content goes through
the corpus normalisation (``corpus.text.normalise_text``: NFKC, invisible characters removed, spaces collapsed).
A malformed row is counted per reason, the place (file:line) of the first few kept, and skipped.
"""
import gzip
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

from corpus.text import normalise_text

FORMATS = ("messages", "sharegpt", "alpaca", "auto")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MESSAGE_ROLES = {role: role for role in ("system", "user", "assistant")}
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
EXAMPLES_KEPT = 5


class ChatDataError(ValueError):
    """Input the stage cannot read at all (a missing file): a clear message, no traceback."""


class MalformedRow(ValueError):
    """A row that is skipped and counted under ``reason``."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Conversation:
    messages: list          # [{"role": ..., "content": ...}], system first if any, ending with an answer
    source: str
    where: str              # file:line (or file:row n) it came from


class SourceReport:
    """What reading one source found: rows, well-formed conversations per format, malformed rows per reason."""

    def __init__(self, name, path, fmt):
        self.name, self.path, self.format = name, str(path), fmt
        self.rows, self.formats, self.malformed, self.examples = 0, Counter(), Counter(), []
        self.trailing_user_dropped = 0

    def skip(self, reason, where, detail=""):
        self.malformed[reason] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append({"reason": reason, "where": where, "detail": detail})

    def as_dict(self):
        return {"path": self.path, "format": self.format, "rows": self.rows,
                "conversations": sum(self.formats.values()), "formats": dict(self.formats),
                "malformed": dict(self.malformed), "malformed_examples": self.examples,
                "trailing_user_dropped": self.trailing_user_dropped}


# -- one row → messages

def to_messages(row, fmt):
    """(format, messages, trailing user turn dropped?) of one row; raises MalformedRow."""
    if not isinstance(row, dict):
        raise MalformedRow("not_an_object", type(row).__name__)
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt == "messages":
        messages = _turns(row, "messages", "role", "content", MESSAGE_ROLES)
    elif fmt == "sharegpt":
        messages = _turns(row, "conversations", "from", "value", SHAREGPT_ROLES)
    else:
        messages = _alpaca(row)
    trimmed = len(messages) > 1 and messages[-1]["role"] == "user" and messages[-2]["role"] == "assistant"
    messages = messages[:-1] if trimmed else messages
    check_order(messages)
    return fmt, messages, trimmed


def detect_format(row):
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise MalformedRow("unknown_format", f"keys {sorted(map(str, row))[:8]}")


def _turns(row, key, role_key, text_key, roles):
    turns = row.get(key)
    if not isinstance(turns, list):
        raise MalformedRow("missing_field", f"'{key}' is missing or not a list")
    messages = []
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise MalformedRow("missing_field", f"turn {number} has no '{role_key}' or '{text_key}'")
        role = roles.get(turn[role_key]) if isinstance(turn[role_key], str) else None
        if role is None:
            raise MalformedRow("unknown_role", f"turn {number}: {turn[role_key]!r}")
        messages.append({"role": role, "content": _content(turn[text_key], f"turn {number}")})
    return messages


def _alpaca(row):
    if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
        raise MalformedRow("missing_field", "'instruction' and 'output' must be strings")
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise MalformedRow("content_not_text", f"'input' is a {type(extra).__name__}")
    instruction = _content(row["instruction"], "instruction")
    extra = normalise_text(extra or "")
    user = instruction + "\n\n" + extra if extra else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _content(row["output"], "output")}]


def _content(value, where):
    if not isinstance(value, str):
        raise MalformedRow("content_not_text", f"{where} is a {type(value).__name__}")
    text = normalise_text(value)
    if not text:
        raise MalformedRow("empty_content", where)
    return text


def check_order(messages):
    """An optional system message first, then user and assistant turns alternating, user first, at least one
    answer."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not any(m["role"] == "assistant" for m in body):
        raise MalformedRow("no_assistant_turn")
    for number, message in enumerate(body, start=1):
        expected = "user" if number % 2 else "assistant"
        if message["role"] != expected:
            raise MalformedRow("roles_out_of_order", f"{message['role']} as message {number} where {expected} "
                                                     "was expected")


# -- files → rows

def source_files(path, name):
    """The files a source names: one file, or a folder's JSON Lines and Parquet files in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(FILE_SUFFIXES))
        if not files:
            raise ChatDataError(f"chat source '{name}': folder {path} holds no {'/'.join(FILE_SUFFIXES)} file")
        return files
    if not path.is_file():
        raise ChatDataError(f"chat source '{name}': file {path} not found")
    if not path.name.endswith(FILE_SUFFIXES):
        raise ChatDataError(f"chat source '{name}': {path} is not {' or '.join(FILE_SUFFIXES)}")
    return [path]


def jsonl_rows(path, report):
    """(place, row) of each non-blank line; undecodable lines are counted on ``report`` and skipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            report.rows += 1
            where = f"{path}:{number}"
            try:
                yield where, orjson.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                report.skip("invalid_utf8", where)
            except orjson.JSONDecodeError as error:
                report.skip("malformed_json", where, str(error)[:120])


def parquet_rows(path, report, batch_size=1024):
    import pyarrow.parquet as pq

    number = 0
    with pq.ParquetFile(path) as table:
        for batch in table.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                number += 1
                report.rows += 1
                yield f"{path}:row {number}", row


def read_source(name, path, fmt, report):
    """Conversations of one source, in file order; bad rows and unreadable files are counted on ``report``."""
    if fmt not in FORMATS:
        raise ChatDataError(f"chat source '{name}': format must be one of {list(FORMATS)}, got {fmt!r}")
    for file in source_files(path, name):
        rows = parquet_rows(file, report) if file.name.endswith(".parquet") else jsonl_rows(file, report)
        try:
            for where, row in rows:
                conversation = _conversation(row, fmt, name, where, report)
                if conversation:
                    yield conversation
        except (OSError, EOFError, ValueError, zlib.error) as error:  # damaged gzip, not Parquet, permissions
            report.skip("unreadable_file", str(file), f"{type(error).__name__}: {error}"[:200])


def _conversation(row, fmt, name, where, report):
    try:
        detected, messages, trimmed = to_messages(row, fmt)
    except MalformedRow as error:
        return report.skip(error.reason, where, error.detail)
    report.formats[detected] += 1
    report.trailing_user_dropped += trimmed
    return Conversation(messages, name, where)
