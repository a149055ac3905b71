"""Pure text helpers: HTML extraction, normalisation, Japanese character classes and repetition measures."""
import re
import unicodedata
from collections import Counter

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


def is_hiragana(ch):
    return "\u3041" <= ch <= "\u309f"


def is_katakana(ch):
    return "\u30a0" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff"


def is_kanji(ch):
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or ch in "々〆"


def script_shares(text):
    """(Japanese share, hiragana share) among the non-whitespace characters of ``text``."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0, 0.0
    hiragana = sum(map(is_hiragana, chars))
    japanese = hiragana + sum(is_katakana(ch) or is_kanji(ch) for ch in chars)
    return japanese / len(chars), hiragana / len(chars)


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
    characters since Japanese has no spaces): count × n / characters."""
    chars = "".join(text.split())
    if len(chars) < n:
        return 0.0
    counts = Counter(chars[i: i + n] for i in range(len(chars) - n + 1))
    _, top = counts.most_common(1)[0]
    return top * n / len(chars) if top > 1 else 0.0
