"""The teacher cache on disk: its layout, constants, encoding and sidecar (used by ``taid.cache``).

Layout of a cache directory::

    cache.json                       sidecar: format, version, identity, k, vocab_size, logprob_dtype,
                                     shard_rows, complete, splits {name: {n_rows}}, stats
    <split>/shard-00000.parquet      sample ids 0 .. shard_rows - 1 of the split, one Parquet row each
    <split>/shard-00001.parquet      ...

Parquet columns (zstd, no dictionary, row groups of about ``row_group_bytes`` raw bytes so that one
sample is read without decoding its whole shard): ``sample_id`` int64, ``n_positions`` int32, and three
binary blobs per sample, each a little-endian array written as byte planes (byte 0 of every element,
then byte 1, ...; zstd compresses the near-constant high bytes to almost nothing):

- ``ids``: uint32 ``[n, k]`` (Qwen's 151,665 ids need 18 bits);
- ``logprobs``: the float16 (or float32) bit patterns ``[n, k]``, each row stored as differences from the
  previous entry, modulo 2^16 (2^32). Sorted log-probs make small differences; the transform is lossless;
- ``log_rest``: float32 ``[n]``.

Precision: ids and ``log_rest`` are exact. ``logprob_dtype="float32"`` stores log-probs exactly;
``"float16"`` (the default) rounds each to the nearest half: |error| <= 2^-11 * |log p| (relative
error 2^-11 ~ 4.9e-4), and <= 2^-25 absolute for |log p| < 2^-14 (subnormals); log-probs below -65504
(probability < e^-65504) become -inf.

Why this encoding (k = 64, zstd level 3, teacher-like log-probs: Gaussian logits, a Zipf prior over ids,
one peaked token; V = 151,936, and V = 8,000 within 2 bytes), bytes per cached position: ids as uint32
114, 24-bit packed 107, uint32 or 24-bit byte planes 89; float16 log-probs 79, byte planes 72, deltas and
planes 47 (float32: 215 and 155); uint16 quantised to 2^-8 nat 46 (no gain), to 2^-4 nat 21 (1/32-nat
errors for 25 of ~140 bytes: not offered). The cache as written: 140 B/position (float16), 248 (float32).
"""
import json
import os
import re
from pathlib import Path

import numpy as np

FORMAT = "tsubame-teacher-topk"
VERSION = 1
SIDECAR = "cache.json"
SHARD_NAME = "shard-{:05d}.parquet"
SHARD_PATTERN = re.compile(r"shard-(\d{5,})\.parquet")
PARTIAL_PATTERN = re.compile(r"\.shard-\d{5,}\.parquet\.\d+\.partial")
SPLIT_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
ZSTD_LEVEL = 3
ROW_GROUP_BYTES = 1 << 20
# log-prob storage: the float type and the unsigned type of its bit pattern (the deltas are taken on bits)
LOGPROB_DTYPES = {"float16": ("<f2", "<u2"), "float32": ("<f4", "<u4")}
ID_DTYPE, REST_DTYPE = "<u4", "<f4"
COLUMNS = ("sample_id", "n_positions", "ids", "logprobs", "log_rest")
REBUILD = "rebuild the stage's teacher_cache"


class CacheMismatchError(ValueError):
    """The cache on disk is missing, incomplete or built from something else than the caller expects."""


# -- encoding: byte planes, and log-prob deltas taken on the bit patterns

def to_planes(array, dtype):
    """A numeric array → bytes of its little-endian ``dtype`` values, byte plane by byte plane."""
    values = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    return values.view(np.uint8).reshape(-1, values.itemsize).T.tobytes()


def from_planes(blob, dtype):
    dtype = np.dtype(dtype)
    planes = np.frombuffer(blob, dtype=np.uint8).reshape(dtype.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(-1)


def encode_logprobs(logprobs, dtype_name):
    float_type, bits_type = LOGPROB_DTYPES[dtype_name]
    bits = np.asarray(logprobs, dtype=np.float32).astype(float_type).view(bits_type)
    deltas = bits.copy()
    deltas[:, 1:] -= bits[:, :-1]  # unsigned: wraps modulo 2^bits, undone exactly by the cumsum below
    return to_planes(deltas, bits_type)


def decode_logprobs(blob, n, k, dtype_name):
    float_type, bits_type = LOGPROB_DTYPES[dtype_name]
    deltas = from_planes(blob, bits_type).reshape(n, k)
    bits = np.cumsum(deltas, axis=1, dtype=deltas.dtype)
    return bits.view(float_type).astype(np.float32)


# -- the sidecar and the comparison of settings

def read_sidecar(directory):
    """The sidecar's contents, or None when there is none."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CacheMismatchError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from None


def write_sidecar(directory, sidecar):
    path = Path(directory) / SIDECAR
    partial = path.with_name(f".{SIDECAR}.{os.getpid()}.partial")
    partial.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def as_json(identity):
    try:
        return json.loads(json.dumps(identity))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the cache identity must be JSON data (dicts, lists, strings, numbers): {error}") from None


def differences(expected, found, path=""):
    """Lines ``field: cache has X, expected Y`` for every field of ``expected`` that ``found`` differs in."""
    if isinstance(expected, dict) and isinstance(found, dict):
        lines = []
        for key in sorted(set(expected) | set(found), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in found:
                lines.append(f"{where}: cache has none, expected {expected[key]!r}")
            elif key not in expected:
                lines.append(f"{where}: cache has {found[key]!r}, expected none")
            else:
                lines.extend(differences(expected[key], found[key], where))
        return lines
    return [] if expected == found else [f"{path}: cache has {found!r}, expected {expected!r}"]


def expected_settings(found, **expected):
    """Compare only the fields the caller states: the cache's own bookkeeping is not a setting."""
    return differences(expected, {key: found.get(key) for key in expected} if isinstance(found, dict) else {})


def check_split_name(split):
    if not isinstance(split, str) or not SPLIT_PATTERN.fullmatch(split):
        raise ValueError(f"split names are letters, digits, '_' and '-' (a folder of the cache), got {split!r}")
