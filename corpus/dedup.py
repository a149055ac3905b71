"""Deduplication blocks: exact (hash of the normalised text) and near-duplicate MinHash on character n-grams."""
from datatrove.pipeline.dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups,
                                      MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                      MinhashDedupSignature)
from datatrove.utils.text import TextNormConfig
from datatrove.utils.word_tokenizers import WordTokenizer


class CharacterTokenizer(WordTokenizer):
    """Characters as MinHash's "words": Japanese has no spaces, so n-grams are character n-grams."""

    def word_tokenize(self, text):
        return [ch for ch in text if not ch.isspace()]

    def sent_tokenize(self, text):
        return text.split("\n")

    def span_tokenize(self, text):
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


def document_text(doc):
    return doc.text


EXACT_CONFIG = ExactDedupConfig(content_getter=document_text)


def minhash_config(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1):
    # digits stay: dates and sums that differ only in their numbers are different documents
    norm = TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=True, norm_numbers=False)
    return MinhashConfig(n_grams=n_grams, num_buckets=num_buckets, hashes_per_bucket=hashes_per_bucket, seed=seed,
                         norm_config=norm)


def exact_signature(folder):
    return ExactDedupSignature(output_folder=str(folder), config=EXACT_CONFIG)


def exact_find(signatures, duplicates):
    return ExactFindDedups(data_folder=str(signatures), output_folder=str(duplicates), config=EXACT_CONFIG)


def exact_filter(duplicates, exclusion_writer):
    return ExactDedupFilter(data_folder=str(duplicates), config=EXACT_CONFIG, exclusion_writer=exclusion_writer)


def minhash_signature(folder, config):
    return MinhashDedupSignature(output_folder=str(folder), config=config, language=CharacterTokenizer())


def minhash_buckets(signatures, buckets, config):
    return MinhashDedupBuckets(input_folder=str(signatures), output_folder=str(buckets), config=config)


def minhash_cluster(buckets, clusters, config):
    return MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=config)


def minhash_filter(clusters, exclusion_writer):
    return MinhashDedupFilter(input_folder=str(clusters), exclusion_writer=exclusion_writer)
