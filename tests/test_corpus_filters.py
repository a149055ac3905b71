"""Each corpus filter on hand-made documents whose shares are counted by hand in the comments."""
import re

import pytest
from datatrove.data import Document

from corpus.filters import (BlocklistFilter, JapaneseScriptFilter, LanguageFilter, LengthFilter, Normaliser,
                            RepetitionFilter)
from corpus.pipeline import quality_filters
from corpus.text import normalise_text


def doc(text):
    return Document(text=text, id="hand-made")


def test_length_keeps_the_bounds_and_drops_outside_them():
    length = LengthFilter(min_chars=10, max_chars=20)
    assert length.filter(doc("あいうえおかきくけこ")) is True                # 10 characters
    assert length.filter(doc("あいうえおかきくけ")) == (False, "length_too_short")   # 9
    assert length.filter(doc("あ" * 21)) == (False, "length_too_long")
    assert LengthFilter(min_chars=None, max_chars=None).filter(doc("")) is True


def test_script_shares_of_japanese_and_of_hiragana():
    script = JapaneseScriptFilter(min_ja_ratio=0.5, min_hiragana_ratio=0.2)
    # 東京 (2 kanji) タワー (3 katakana) はきれいです (6 hiragana): Japanese 11/11, hiragana 6/11 = 0.55
    assert script.filter(doc("東京タワーはきれいです")) is True
    # Hello world (10 Latin letters) です (2 hiragana), spaces not counted: Japanese 2/12 = 0.17
    assert script.filter(doc("Hello world です")) == (False, "script_ja_ratio")
    # 7 kanji and no kana: Japanese 7/7, hiragana 0/7 (Chinese-like text)
    assert script.filter(doc("東京大学工学部")) == (False, "script_hiragana_ratio")
    # Tokyo (5 Latin) はとても大きい (6 hiragana + 1 kanji): Japanese 7/12 = 0.58
    assert JapaneseScriptFilter(min_ja_ratio=0.6).filter(doc("Tokyo はとても大きい")) == (False, "script_ja_ratio")
    assert JapaneseScriptFilter(min_ja_ratio=0.55).filter(doc("Tokyo はとても大きい")) is True


def test_duplicate_lines_are_measured_in_characters():
    repetition = RepetitionFilter(max_dup_line_frac=0.2, max_dup_para_frac=None)
    # 4 lines of 3 characters, the third repeats the first: 3/12 = 0.25 > 0.2
    assert repetition.filter(doc("あいう\nかきく\nあいう\nさしす")) == (False, "repetition_dup_line_frac")
    # a fifth distinct line: 3/15 = 0.2, not above the limit
    assert repetition.filter(doc("あいう\nかきく\nあいう\nさしす\nたちつ")) is True


def test_duplicate_paragraphs_are_measured_in_characters():
    repetition = RepetitionFilter(max_dup_line_frac=None, max_dup_para_frac=0.2)
    # paragraphs of 5, 5, 5 characters, the third repeats the first: 5/15 = 0.33
    assert repetition.filter(doc("あいうえお\n\nかきくけこ\n\nあいうえお")) == (False, "repetition_dup_para_frac")
    assert repetition.filter(doc("あいうえお\n\nかきくけこ\n\nさしすせそ")) is True


def test_top_character_ngram_share():
    repetition = RepetitionFilter(max_dup_line_frac=None, max_dup_para_frac=None, max_top_ngram_frac={2: 0.3})
    # あいあいあいかきくけ: 10 characters, "あい" 3 times → 3 × 2 / 10 = 0.6
    assert repetition.filter(doc("あいあいあいかきくけ")) == (False, "repetition_top_2gram")
    # every 2-gram once: no repetition at all
    assert repetition.filter(doc("あいうえおかきくけこ")) is True


def test_blocklist_counts_occurrences_against_max_hits():
    assert BlocklistFilter(words=["禁止語"]).filter(doc("これは禁止語です")) == (False, "blocklist_word")
    assert BlocklistFilter(words=["禁止語"]).filter(doc("これは安全です")) is True
    once, twice = doc("禁止語がある"), doc("禁止語と禁止語")
    assert BlocklistFilter(words=["禁止語"], max_hits=1).filter(once) is True
    assert BlocklistFilter(words=["禁止語"], max_hits=1).filter(twice) == (False, "blocklist_word")


class FakeLanguageModel:
    def __init__(self, label, score):
        self.label, self.score = label, score

    def predict(self, text):
        assert "\n" not in text  # fastText predicts one line
        return [f"__label__{self.label}"], [self.score]


@pytest.mark.parametrize("label, score, expected", [("ja", 0.9, True), ("zh", 0.9, (False, "language_other")),
                                                     ("ja", 0.3, (False, "language_low_score"))])
def test_language_filter_reads_the_top_label_and_score(monkeypatch, label, score, expected):
    monkeypatch.setattr(LanguageFilter, "load_model", lambda self: FakeLanguageModel(label, score))
    assert LanguageFilter("lid.bin", language="ja", min_score=0.5).filter(doc("一行目\n二行目")) == expected


def test_language_identification_without_a_model_is_skipped_with_the_reason_stated(tmp_path):
    blocks, notes = quality_filters({"language": {"model": None}}, tmp_path)
    assert blocks == [] and "language identification skipped" in notes[0] and "no local fastText model" in notes[0]
    blocks, notes = quality_filters({"language": {"model": str(tmp_path / "lid.bin")}}, tmp_path)
    assert blocks == [] and "not found" in notes[0]


def test_unknown_filter_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown filter 'lenght'"):
        quality_filters({"lenght": {}}, tmp_path)


def test_normalisation_nfkc_invisible_characters_spaces_and_boilerplate():
    raw = "ＡＢＣ\u3000ｶﾀｶﾅ\x00\r\n\n\n\nトップへ戻る\n本文\u200bです。  "
    # full-width Latin and half-width katakana → NFKC; NUL and zero-width space removed; CR and the
    # ideographic space become spaces and are stripped; the boilerplate line goes; blank runs shrink to one
    assert normalise_text(raw, [re.compile("^トップへ戻る$")]) == "ABC カタカナ\n\n本文です。"


def test_normaliser_drops_documents_left_empty_and_counts_them():
    normaliser = Normaliser(boilerplate=["^Copyright"])
    kept = list(normaliser.run([doc("Copyright 2026"), doc("本文")]))
    assert [d.text for d in kept] == ["本文"]
    assert normaliser.stats["dropped_normalise_empty"].total == 1


def test_a_bad_boilerplate_pattern_is_named():
    with pytest.raises(ValueError, match=r"'\(unclosed'"):
        Normaliser(boilerplate=["(unclosed"])
