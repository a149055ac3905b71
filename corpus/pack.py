"""Tokenize the deduplicated shards, split by document, and pack into the ``taid.data`` format.

Memory stays bounded by one shard: shards are visited in a seeded order, each shard's documents shuffled
with a seed, and tokens are streamed to disk before being laid out as ``[n, seq_len]`` rows.
"""
import math
from pathlib import Path

import numpy as np
import orjson
import xxhash
from numpy.lib.format import open_memmap

from taid.data import PAD

FLUSH_TOKENS = 1 << 20


def unit_hash(text, seed, salt):
    """A number in [0, 1) fixed by the text, the seed and a salt: the same document always lands alike."""
    return xxhash.xxh64_intdigest(f"{salt}\x00{text}", seed=seed) / 2 ** 64


def is_valid(text, seed, valid_fraction):
    return unit_hash(text, seed, "split") < valid_fraction


def copies(text, seed, weight):
    """How many times a training document is repeated: ⌊weight⌋, plus one with probability frac(weight)."""
    whole = math.floor(weight)
    return whole + (unit_hash(text, seed, "weight") < weight - whole)


class TokenStream:
    """Documents' tokens, each followed by EOS, appended to a raw int32 file and packed at the end."""

    def __init__(self, scratch, eos_id):
        self.scratch, self.eos_id = Path(scratch), eos_id
        self.file = self.scratch.open("wb")
        self.buffer, self.tokens, self.documents = [], 0, 0

    def add(self, tokens):
        self.buffer.extend(tokens)
        self.buffer.append(self.eos_id)
        self.tokens += len(tokens) + 1
        self.documents += 1
        if len(self.buffer) >= FLUSH_TOKENS:
            self._flush()

    def _flush(self):
        np.asarray(self.buffer, dtype=np.int32).tofile(self.file)
        self.buffer = []

    def pack(self, path, seq_len):
        """Write ``[ceil(tokens / seq_len), seq_len]`` int32 rows, the tail padded with PAD; return the rows."""
        self._flush()
        self.file.close()
        rows = -(-self.tokens // seq_len)
        if rows == 0:
            self.scratch.unlink()
            np.save(path, np.zeros((0, seq_len), dtype=np.int32))
            return 0
        stream = np.memmap(self.scratch, dtype=np.int32, mode="r")
        packed = open_memmap(path, mode="w+", dtype=np.int32, shape=(rows, seq_len))
        flat = packed.reshape(-1)
        for start in range(0, self.tokens, FLUSH_TOKENS):
            end = min(start + FLUSH_TOKENS, self.tokens)
            flat[start:end] = stream[start:end]
        flat[self.tokens:] = PAD
        packed.flush()
        del stream, packed
        self.scratch.unlink()
        return rows


def shard_documents(folder, seed):
    """(text, source) of every document, shards in a seeded order, documents shuffled within each shard."""
    shards = sorted(Path(folder).glob("*.jsonl"))
    for index in np.random.default_rng([seed, 0]).permutation(len(shards)):
        with shards[index].open("rb") as f:
            documents = [orjson.loads(line) for line in f]
        for i in np.random.default_rng([seed, 1, int(index)]).permutation(len(documents)):
            yield documents[i]["text"], documents[i].get("metadata", {}).get("source")


def assign(documents, seed, valid_fraction, weights):
    """(split, text) pairs: each document on one side only; training documents repeated by source weight."""
    for text, source in documents:
        if is_valid(text, seed, valid_fraction):
            yield "valid", text
        else:
            for _ in range(copies(text, seed, weights.get(source, 1.0))):
                yield "train", text


def tokenize(tokenizer, pairs, batch_size=256):
    """(split, token ids) for (split, text) pairs, batched for the fast tokenizer."""
    batch = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == batch_size:
            yield from _encode(tokenizer, batch)
            batch = []
    yield from _encode(tokenizer, batch)


def _encode(tokenizer, batch):
    if batch:
        ids = tokenizer([text for _, text in batch], add_special_tokens=False)["input_ids"]
        yield from zip((split for split, _ in batch), ids)


def pack_corpus(folder, tokenizer, out, seq_len, seed, valid_fraction, weights):
    """Write ``train.npy`` and ``valid.npy`` into ``out``; return per-split documents, tokens, sequences."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    streams = {split: TokenStream(out / f".{split}.tokens", tokenizer.eos_token_id) for split in ("train", "valid")}
    pairs = assign(shard_documents(folder, seed), seed, valid_fraction, weights)
    for split, tokens in tokenize(tokenizer, pairs):
        streams[split].add(tokens)
    counts = {}
    for split, stream in streams.items():
        rows = stream.pack(out / f"{split}.npy", seq_len)
        counts[split] = {"documents": stream.documents, "tokens": stream.tokens, "sequences": rows}
    return counts
