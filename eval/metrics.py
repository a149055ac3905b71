"""Swallow's metrics, each a small function over predictions and references; every score is in [0, 1].

- ``exact_match``: NFKC, surrounding whitespace stripped, then string equality (JCommonsenseQA, JMMLU).
- ``char_f1``: rapidfuzz's token-sort ratio / 100 after NFKC (JEMHopQA, NIILC, JSQuAD; llm-jp-eval's char_f1).
- ``number_match``: the last number in the generation equals the reference number (MGSM).
- ``rouge2``: ROUGE-2 F-measure over MeCab tokens (fugashi + unidic-lite), averaged over items (XL-Sum).
- ``bleu``: sacrebleu's corpus BLEU / 100, tokenised with ``ja-mecab`` for Japanese targets (WMT20).
"""
import re
import unicodedata
from collections import Counter
from functools import lru_cache

import sacrebleu
from rapidfuzz import fuzz

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(text):
    return unicodedata.normalize("NFKC", text).strip()


def exact_match(prediction, reference):
    return float(normalise(prediction) == normalise(reference))


def char_f1(prediction, reference):
    return fuzz.token_sort_ratio(normalise(prediction), normalise(reference)) / 100.0


def last_number(text):
    """The last number written in ``text`` (full-width digits and thousands separators allowed), or None."""
    numbers = _NUMBER.findall(normalise(text).replace(",", ""))
    return float(numbers[-1]) if numbers else None


def number_match(prediction, reference):
    predicted = last_number(prediction)
    return float(predicted is not None and predicted == float(str(reference).replace(",", "")))


@lru_cache(maxsize=1)
def _mecab():
    import fugashi  # imported late: the MeCab dictionary takes a moment to load
    return fugashi.Tagger()


def mecab_tokens(text):
    return [word.surface for word in _mecab()(normalise(text))]


def _bigrams(tokens):
    return Counter(zip(tokens, tokens[1:]))


def rouge2(prediction, reference):
    """ROUGE-2 F-measure of one prediction against one reference, over MeCab tokens."""
    predicted, expected = _bigrams(mecab_tokens(prediction)), _bigrams(mecab_tokens(reference))
    overlap = sum((predicted & expected).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(predicted.values()), overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def bleu(predictions, references, target_language):
    """Corpus BLEU in [0, 1]: sacrebleu's score / 100, ``ja-mecab`` tokens for Japanese, ``13a`` otherwise."""
    tokenize = "ja-mecab" if target_language == "ja" else "13a"
    return sacrebleu.corpus_bleu(list(predictions), [list(references)], tokenize=tokenize).score / 100.0


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# per-item metrics by name; corpus-level ones (BLEU) are computed by their task
ITEM_METRICS = {
    "exact_match": exact_match,
    "char_f1": char_f1,
    "number_match": number_match,
    "rouge2": rouge2,
}
