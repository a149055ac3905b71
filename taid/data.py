"""Packed token sequences: the format between the prepare stage and every training stage.

A split is one ``.npy`` array of int32 ``[n_sequences, seq_len]``: documents' tokens, each document
followed by EOS, laid end to end and cut every ``seq_len`` tokens. The last sequence is padded with
``PAD`` (-1, never a token id), so no token is lost and padding cannot be mistaken for a real id.
Row index = sample id.
"""
import numpy as np
import torch

PAD = -1


def pack_documents(documents, eos_id, seq_len):
    """Token lists → ``[n, seq_len]`` int32 array (EOS after each document, tail padded with PAD)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    stream = []
    for tokens in documents:
        stream.extend(tokens)
        stream.append(eos_id)
    n_rows = -(-len(stream) // seq_len)
    packed = np.full(n_rows * seq_len, PAD, dtype=np.int32)
    packed[: len(stream)] = stream
    return packed.reshape(n_rows, seq_len)


def unpack(packed):
    """The token stream a packed array holds, padding removed."""
    flat = np.asarray(packed).reshape(-1)
    return flat[flat != PAD]


def load_packed(path):
    return np.load(path, mmap_mode="r")


def sample_order(n_rows, seed, start, count):
    """Row ids ``start .. start + count`` of an endless stream of seeded per-epoch permutations."""
    if n_rows < 1:
        raise ValueError("no rows to sample from: the training split is empty")
    rows = []
    position = start
    while len(rows) < count:
        epoch, offset = divmod(position, n_rows)
        permutation = np.random.default_rng([seed, epoch]).permutation(n_rows)
        taken = permutation[offset: offset + count - len(rows)]
        rows.extend(taken.tolist())
        position += len(taken)
    return np.asarray(rows, dtype=np.int64)


def to_batch(rows, device=None):
    """Packed rows ``[B, L]`` → model inputs and next-token targets.

    ``labels[b, s]`` is the token at ``s + 1``; ``mask[b, s]`` keeps a position when both it and its
    target are real tokens (not PAD).
    """
    tokens = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
    real = tokens != PAD
    return {
        "input_ids": torch.where(real, tokens, 0),
        "attention_mask": real.long(),
        "labels": torch.where(real, tokens, 0)[:, 1:],
        "mask": real[:, :-1] & real[:, 1:],
    }
