"""Each metric on hand-computed cases; BLEU against sacrebleu called directly."""
import pytest
import sacrebleu

from eval import metrics


@pytest.mark.parametrize("prediction, reference, expected", [
    ("東京", "東京都", 0.8),            # indel similarity: 2·2 / (2 + 3)
    ("ＡＢＣ", "ABC", 1.0),              # NFKC makes full-width letters plain
    ("京都 大阪", "大阪 京都", 1.0),     # token sort: word order does not matter
    ("猫", "犬", 0.0),
    ("", "犬", 0.0),
])
def test_char_f1_is_token_sort_ratio_over_100_after_nfkc(prediction, reference, expected):
    assert metrics.char_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, reference, expected", [
    (" ３\n", "3", 1.0),      # full-width digit and surrounding whitespace
    ("Ａ", "A", 1.0),
    ("3", "4", 0.0),
    ("3.", "3", 0.0),         # only normalisation, no fuzzy matching
])
def test_exact_match_normalises_nfkc_and_whitespace_only(prediction, reference, expected):
    assert metrics.exact_match(prediction, reference) == expected


@pytest.mark.parametrize("text, expected", [
    ("答えは１，２００円です。", 1200.0),
    ("3個と5個で8個になります", 8.0),
    ("気温は-3.5度", -3.5),
    ("わかりません", None),
])
def test_mgsm_takes_the_last_number(text, expected):
    assert metrics.last_number(text) == expected


def test_mgsm_number_match_compares_values_not_strings():
    assert metrics.number_match("よって答えは18です", "18") == 1.0
    assert metrics.number_match("18.0", "18") == 1.0
    assert metrics.number_match("答えは17", "18") == 0.0
    assert metrics.number_match("", "18") == 0.0


def test_rouge2_over_mecab_tokens_hand_computed():
    # unidic-lite: 今日|は|良い|天気|です (4 bigrams) vs 今日|は|良い|天気|でし|た (5 bigrams); 3 shared
    assert metrics.mecab_tokens("今日は良い天気です") == ["今日", "は", "良い", "天気", "です"]
    precision, recall = 3 / 4, 3 / 5
    expected = 2 * precision * recall / (precision + recall)
    assert metrics.rouge2("今日は良い天気です", "今日は良い天気でした") == pytest.approx(expected)
    assert metrics.rouge2("今日は良い天気です", "今日は良い天気です") == pytest.approx(1.0)
    assert metrics.rouge2("猫", "今日は良い天気です") == 0.0


def test_bleu_equals_sacrebleu_with_the_japanese_tokenizer():
    predictions = ["猫が庭で寝ています。", "明日は雨でしょう。", "りんごを5個買った。"]
    references = ["猫が庭で寝ています。", "明日は雨が降るでしょう。", "りんごを5個買いました。"]
    direct = sacrebleu.corpus_bleu(predictions, [references], tokenize="ja-mecab").score
    assert 0 < direct < 100
    assert metrics.bleu(predictions, references, "ja") == pytest.approx(direct / 100)
    # the 13a tokenizer would see each Japanese sentence as one word: a different, much lower score
    assert sacrebleu.corpus_bleu(predictions, [references], tokenize="13a").score < direct


def test_bleu_into_english_uses_13a():
    predictions, references = ["the cat sleeps in the garden"], ["the cat is sleeping in the garden"]
    direct = sacrebleu.corpus_bleu(predictions, [references]).score
    assert metrics.bleu(predictions, references, "en") == pytest.approx(direct / 100)
    assert metrics.bleu(references, references, "en") == pytest.approx(1.0)
