"""Pure text helpers: HTML extraction, normalisation, Japanese character classes and repetition measures."""
import re
import unicodedata

import numpy as np

# invisible characters, removed: C0/C1 controls other than tab, newline and the like; zero-width and bidi marks
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")   # any run of whitespace but newlines (tabs, CR, ideographic space) → " "
_BLANK_RUNS = re.compile(r"\n{3,}")


def extract_html(html):
    """Main text of an HTML page (trafilatura, no comments or tables), '' when it finds none."""
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True) or ""


def normalise_text(text, boilerplate=()):
    """NFKC; invisible characters removed; runs of spaces collapsed, lines stripped; lines matching a
    boilerplate pattern dropped; at most one blank line between paragraphs."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    kept = [line for line in lines if not any(pattern.search(line) for pattern in boilerplate)]
    return _BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()


def compile_patterns(patterns):
    """Boilerplate regular expressions, refused with the bad one named."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ValueError(f"boilerplate pattern {pattern!r} is not a regular expression: {error}") from None
    return compiled


HIRAGANA = "\u3041-\u309f"
KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff"
KANJI = "\u3400-\u4dbf\u4e00-\u9fff々〆"
_NOT_HIRAGANA = re.compile(f"[^{HIRAGANA}]+")
_NOT_JAPANESE = re.compile(f"[^{HIRAGANA}{KATAKANA}{KANJI}]+")
_WHITESPACE = re.compile(r"\s+")


def script_shares(text):
    """(Japanese share, hiragana share) among the non-whitespace characters of ``text``."""
    chars = len(_WHITESPACE.sub("", text))  # counting by deletion: the regex engine runs in C
    if not chars:
        return 0.0, 0.0
    return len(_NOT_JAPANESE.sub("", text)) / chars, len(_NOT_HIRAGANA.sub("", text)) / chars


def char_ngram_keys(text, n):
    """One uint64 key per character n-gram of ``text`` (a polynomial hash of the code points, wrapping
    around 2**64), computed in numpy: the same n-gram always gets the same key."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) < n:
        return np.zeros(0, dtype=np.uint64)
    keys = np.zeros(len(points) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):
            keys = keys * np.uint64(0x100000001B3) + points[offset: len(points) - n + 1 + offset]
    return keys


def duplicate_fraction(parts):
    """Share of characters in ``parts`` that belong to a part seen before (Gopher's dup_*_char_frac)."""
    seen, duplicated, total = set(), 0, 0
    for part in parts:
        total += len(part)
        if part in seen:
            duplicated += len(part)
        seen.add(part)
    return duplicated / total if total else 0.0


def top_ngram_fraction(text, n):
    """Share of characters covered by the most frequent character n-gram (Gopher's top n-gram rule, on
    characters since Japanese has no spaces): count × n / characters; 0 when no n-gram repeats."""
    chars = _WHITESPACE.sub("", text)
    keys = char_ngram_keys(chars, n)
    if len(keys) == 0:
        return 0.0
    top = int(np.unique(keys, return_counts=True)[1].max())
    return top * n / len(chars) if top > 1 else 0.0
