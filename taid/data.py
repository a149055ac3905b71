"""Packed token sequences: the format between the prepare stage and every training stage.

A split is one ``.npy`` array of int32 ``[n_sequences, seq_len]``: documents' tokens, each document
followed by EOS, laid end to end and cut every ``seq_len`` tokens. The last sequence is padded with
``PAD`` (-1, never a token id), so no token is lost and padding cannot be mistaken for a real id.
Row index = sample id. Chat data adds ``<split>.targets.npy``, bool ``[n_sequences, seq_len]``: True
on the tokens a model is trained to predict (assistant tokens); without it every real token is a target.
"""
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Split:
    """Some rows of one split: their tokens, their targets (None: all real tokens) and their sample ids."""
    tokens: np.ndarray
    targets: np.ndarray | None = None
    ids: np.ndarray | None = None      # sample id of each row; None: 0 .. n - 1
    name: str = "train"

    def __post_init__(self):
        if self.ids is None:
            self.ids = np.arange(len(self.tokens), dtype=np.int64)

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, rows):
        targets = None if self.targets is None else self.targets[rows]
        return Split(self.tokens[rows], targets, self.ids[rows], self.name)

    def kept_mask(self):
        """``[n, seq_len - 1]``: position s is trained to predict token s + 1 when both are real tokens
        and s + 1 is a target. The one definition of which positions count, for batches and token counts."""
        tokens = np.asarray(self.tokens)
        real = tokens != PAD
        kept = real[:, :-1] & real[:, 1:]
        return kept if self.targets is None else kept & np.asarray(self.targets, dtype=bool)[:, 1:]


def as_split(rows, name="train"):
    return rows if isinstance(rows, Split) else Split(rows, name=name)


def load_split(data_dir, name):
    """``<data_dir>/<name>.npy`` (memory-mapped) and its targets when the directory has them."""
    data_dir = Path(data_dir)
    targets_path = data_dir / f"{name}.targets.npy"
    targets = np.load(targets_path, mmap_mode="r") if targets_path.is_file() else None
    return Split(load_packed(data_dir / f"{name}.npy"), targets, name=name)


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
    """Packed rows ``[B, L]`` (an array or a ``Split``) → model inputs and next-token targets.

    ``labels[b, s]`` is the token at ``s + 1``; ``mask[b, s]`` is ``Split.kept_mask``. The rows' sample ids
    and split name travel along, for teachers read from a cache.
    """
    split = as_split(rows)
    tokens = torch.as_tensor(np.asarray(split.tokens, dtype=np.int64), device=device)
    real = tokens != PAD
    return {
        "input_ids": torch.where(real, tokens, 0),
        "attention_mask": real.long(),
        "labels": torch.where(real, tokens, 0)[:, 1:],
        "mask": torch.as_tensor(split.kept_mask(), device=device),
        "sample_ids": np.asarray(split.ids),
        "split": split.name,
    }
