"""Deduplication blocks: exact (hash of the normalised text) and near-duplicate MinHash on character n-grams."""
from datatrove.pipeline.dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups,
                                      MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                      MinhashDedupSignature)
from datatrove.utils.text import TextNormConfig, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

from corpus.text import char_ngram_keys


class CharacterTokenizer(WordTokenizer):
    """Characters as MinHash's "words": Japanese has no spaces, so n-grams are character n-grams."""

    def word_tokenize(self, text):
        return [ch for ch in text if not ch.isspace()]

    def sent_tokenize(self, text):
        return text.split("\n")

    def span_tokenize(self, text):
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


class CharMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signatures over character n-grams, hashed in numpy rather than one Python call
    per n-gram (the signature step's hot loop)."""

    def __init__(self, output_folder, config):
        super().__init__(output_folder=output_folder, config=config, language=CharacterTokenizer())

    def get_shingles(self, text):
        simplified = "".join(simplify_text(text, self.config.norm_config).split())
        return char_ngram_keys(simplified, self.config.n_grams).reshape((-1, 1))


def document_text(doc):
    return doc.text


EXACT_CONFIG = ExactDedupConfig(content_getter=document_text)


def minhash_config(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1):
    # digits stay: dates and sums that differ only in their numbers are different documents; diacritics
    # stay: stripping combining marks after NFD would merge が into か
    norm = TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=True, norm_numbers=False,
                          norm_unicode_diacritics=False)
    return MinhashConfig(n_grams=n_grams, num_buckets=num_buckets, hashes_per_bucket=hashes_per_bucket, seed=seed,
                         norm_config=norm)


def exact_signature(folder):
    return ExactDedupSignature(output_folder=str(folder), config=EXACT_CONFIG)


def exact_find(signatures, duplicates):
    return ExactFindDedups(data_folder=str(signatures), output_folder=str(duplicates), config=EXACT_CONFIG)


def exact_filter(duplicates, exclusion_writer):
    return ExactDedupFilter(data_folder=str(duplicates), config=EXACT_CONFIG, exclusion_writer=exclusion_writer)


def minhash_signature(folder, config):
    return CharMinhashSignature(output_folder=str(folder), config=config)


def minhash_buckets(signatures, buckets, config):
    return MinhashDedupBuckets(input_folder=str(signatures), output_folder=str(buckets), config=config)


def minhash_cluster(buckets, clusters, config):
    return MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=config)


def minhash_filter(clusters, exclusion_writer):
    return MinhashDedupFilter(input_folder=str(clusters), exclusion_writer=exclusion_writer)
