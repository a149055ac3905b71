"""Japanese quality filters, after the Swallow corpus (Okazaki et al., 2024) and Gopher (Rae et al., 2021).

Each filter implements only ``filter(doc)``: True keeps the document, ``(False, reason)`` drops it; the reason
is prefixed with the filter's short name, and datatrove's BaseFilter counts it (``dropped_<reason>``) and
sends the document to the filter's exclusion folder. Thresholds are keywords; None switches a rule off.
"""
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from corpus.text import compile_patterns, duplicate_fraction, normalise_text, script_shares, top_ngram_fraction


class Normaliser(PipelineStep):
    """NFKC, control characters and whitespace cleaned, boilerplate lines removed; empty results dropped."""

    name = "normalise"
    type = "✂️ - FORMAT"

    def __init__(self, boilerplate=()):
        super().__init__()
        self.boilerplate = compile_patterns(boilerplate)

    def run(self, data, rank=0, world_size=1):
        for doc in data:
            self.stat_update("total")
            doc.text = normalise_text(doc.text, self.boilerplate)
            if not doc.text:
                self.stat_update("dropped", "dropped_normalise_empty")
                continue
            self.stat_update("forwarded")
            yield doc


class LengthFilter(BaseFilter):
    name = "length"

    def __init__(self, min_chars=200, max_chars=100_000, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc):
        if self.min_chars is not None and len(doc.text) < self.min_chars:
            return False, "length_too_short"
        if self.max_chars is not None and len(doc.text) > self.max_chars:
            return False, "length_too_long"
        return True


class JapaneseScriptFilter(BaseFilter):
    """Share of Japanese characters (hiragana, katakana, kanji) and of hiragana among non-space characters.
    Hiragana marks running Japanese prose: Chinese text has kanji but none, lists and tables few."""

    name = "script"

    def __init__(self, min_ja_ratio=0.5, min_hiragana_ratio=0.2, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_ja_ratio, self.min_hiragana_ratio = min_ja_ratio, min_hiragana_ratio

    def filter(self, doc):
        japanese, hiragana = script_shares(doc.text)
        if self.min_ja_ratio is not None and japanese < self.min_ja_ratio:
            return False, "script_ja_ratio"
        if self.min_hiragana_ratio is not None and hiragana < self.min_hiragana_ratio:
            return False, "script_hiragana_ratio"
        return True


class RepetitionFilter(BaseFilter):
    """Gopher's repetition rules on characters: duplicate lines and paragraphs, top character n-grams."""

    name = "repetition"

    def __init__(self, max_dup_line_frac=0.2, max_dup_para_frac=0.2, max_top_ngram_frac=None,
                 exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.max_dup_line_frac, self.max_dup_para_frac = max_dup_line_frac, max_dup_para_frac
        self.max_top_ngram_frac = {int(n): frac for n, frac in (max_top_ngram_frac or {}).items()}

    def filter(self, doc):
        lines = [line for line in doc.text.split("\n") if line.strip()]
        if self.max_dup_line_frac is not None and duplicate_fraction(lines) > self.max_dup_line_frac:
            return False, "repetition_dup_line_frac"
        paragraphs = [p for p in doc.text.split("\n\n") if p.strip()]
        if self.max_dup_para_frac is not None and duplicate_fraction(paragraphs) > self.max_dup_para_frac:
            return False, "repetition_dup_para_frac"
        for n, limit in sorted(self.max_top_ngram_frac.items()):
            if top_ngram_fraction(doc.text, n) > limit:
                return False, f"repetition_top_{n}gram"
        return True


class BlocklistFilter(BaseFilter):
    """Drops a document containing more than ``max_hits`` occurrences of the listed words."""

    name = "blocklist"

    def __init__(self, words=(), max_hits=0, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.words, self.max_hits = list(words), max_hits

    def filter(self, doc):
        hits = sum(doc.text.count(word) for word in self.words)
        return True if hits <= self.max_hits else (False, "blocklist_word")


class LanguageFilter(BaseFilter):
    """fastText language identification with a model file on local disk (e.g. lid.176.bin): keeps documents
    whose top label is ``language`` with at least ``min_score``."""

    name = "language"

    def __init__(self, model_path, language="ja", min_score=0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.model_path, self.language, self.min_score = model_path, language, min_score
        self._model = None

    def load_model(self):
        import fasttext

        return fasttext.load_model(str(self.model_path))

    def filter(self, doc):
        if self._model is None:
            self._model = self.load_model()
        labels, scores = self._model.predict(doc.text.replace("\n", " "))
        if labels[0].removeprefix("__label__") != self.language:
            return False, "language_other"
        return True if scores[0] >= self.min_score else (False, "language_low_score")
