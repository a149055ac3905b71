"""WMT20 news translation, en→ja and ja→en: 4-shot, corpus BLEU (sacrebleu; ja-mecab tokens into Japanese).
Official SGML test sets, source and reference paired by document and segment id; exemplars from the
ja-en development set (newsdev2020), read in either direction."""
from functools import partial

from eval.data import read_parallel_sgml
from eval.metrics import bleu
from eval.tasks.base import Example, PromptTask, field_of, register

DEV_JA, DEV_EN = "WMT20/newsdev2020-jaen-src.ja.sgm", "WMT20/newsdev2020-jaen-ref.en.sgm"


def parse(row):
    return Example(input=field_of(row, "source"), target=field_of(row, "reference"))


def corpus_bleu(target_language, predictions, examples):
    return bleu(predictions, [ex.target for ex in examples], target_language)


EN_JA = register(PromptTask(
    name="wmt20_en_ja", metric="bleu", shots=4, max_new_tokens=64,
    instruction="与えられた英語の文章を日本語に翻訳してください。",
    test=("WMT20/newstest2020-enja-src.en.sgm", "WMT20/newstest2020-enja-ref.ja.sgm"), train=(DEV_EN, DEV_JA),
    read=read_parallel_sgml, parse=parse, score=partial(corpus_bleu, "ja"),
))

JA_EN = register(PromptTask(
    name="wmt20_ja_en", metric="bleu", shots=4, max_new_tokens=64,
    instruction="与えられた日本語の文章を英語に翻訳してください。",
    test=("WMT20/newstest2020-jaen-src.ja.sgm", "WMT20/newstest2020-jaen-ref.en.sgm"), train=(DEV_JA, DEV_EN),
    read=read_parallel_sgml, parse=parse, score=partial(corpus_bleu, "en"),
))
