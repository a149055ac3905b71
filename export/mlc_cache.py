"""The tensor cache WebLLM loads: raw ``params_shard_N.bin`` files and a JSON index of them.

Index: ``{"metadata": {...}, "records": [{"dataPath", "format": "raw-shard", "nbytes", "records":
[{"name", "shape", "dtype", "format", "nbytes", "byteOffset"}], "md5sum"}]}``, written as both
``tensor-cache.json`` and ``ndarray-cache.json``. Sharding follows tvmjs (what mlc_llm convert_weight
runs): records fill a shard until the next would reach the cap; a record of half the cap or more goes
alone into a shard of its own, out of turn.
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from export.mlc_format import DTYPES, F32_FORMATS, INDEX_FILES, SHARD_BYTES, SHARD_FORMAT, SHARD_NAME
from export.mlc_quant import bf16_decode, bf16_encode


class CacheError(ValueError):
    """A tensor cache that is missing, malformed, truncated or corrupted; the message names the file."""


def encode(array, f32_format):
    """The bytes a record stores for ``array``."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.float32 and f32_format == "f32-to-bf16":
        return bf16_encode(array).tobytes()
    return array.tobytes()


def decode(data, shape, dtype, record_format):
    """The array a record's bytes stand for (float32 records in "f32-to-bf16" format are bf16 on disk)."""
    if dtype == "float32" and record_format == "f32-to-bf16":
        return bf16_decode(np.frombuffer(data, dtype=np.uint16)).reshape(shape)
    return np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape)


def stored_nbytes(shape, dtype, record_format):
    itemsize = 2 if dtype == "float32" and record_format == "f32-to-bf16" else np.dtype(DTYPES[dtype]).itemsize
    return math.prod(shape) * itemsize


class TensorCacheWriter:
    """Append named arrays, then ``finish(metadata)``; duplicate names and writes after finish raise."""

    def __init__(self, out_dir, f32_format="f32-to-bf16", shard_bytes=SHARD_BYTES):
        if f32_format not in F32_FORMATS:
            raise ValueError(f"unknown float32 format {f32_format!r}; known: {', '.join(F32_FORMATS)}")
        self.out_dir, self.f32_format, self.shard_bytes = Path(out_dir), f32_format, shard_bytes
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards, self.names, self.finished = [], set(), False
        self.pending, self.pending_records = bytearray(), []
        self.tensor_bytes = 0   # in memory at the model dtype, as mlc_llm's ParamBytes counts them

    def add(self, name, array):
        if self.finished:
            raise RuntimeError(f"tensor cache in {self.out_dir} is finished; cannot add {name}")
        if name in self.names:
            raise ValueError(f"duplicate tensor name {name} in the tensor cache")
        dtype = np.asarray(array).dtype.name
        if dtype not in DTYPES:
            raise ValueError(f"{name}: dtype {dtype} is not one of {', '.join(DTYPES)}")
        self.names.add(name)
        self.tensor_bytes += np.asarray(array).nbytes
        data = encode(array, self.f32_format)
        record = {"name": name, "shape": list(np.shape(array)), "dtype": dtype, "format": self.f32_format,
                  "nbytes": len(data)}
        if len(self.pending) + len(data) >= self.shard_bytes:
            if 2 * len(data) >= self.shard_bytes:
                self._write_shard(data, [dict(record, byteOffset=0)])
                return
            self._commit()
        self.pending_records.append(dict(record, byteOffset=len(self.pending)))
        self.pending += data

    def finish(self, metadata):
        """Write the last shard and both index files; returns the index."""
        self._commit()
        self.finished = True
        index = {"metadata": metadata, "records": self.shards}
        text = json.dumps(index, indent=4)
        for name in INDEX_FILES:
            (self.out_dir / name).write_text(text, encoding="utf-8")
        return index

    def _commit(self):
        if self.pending:
            self._write_shard(bytes(self.pending), self.pending_records)
            self.pending, self.pending_records = bytearray(), []

    def _write_shard(self, data, records):
        path = SHARD_NAME.format(len(self.shards))
        (self.out_dir / path).write_bytes(data)
        self.shards.append({"dataPath": path, "format": SHARD_FORMAT, "nbytes": len(data), "records": records,
                            "md5sum": hashlib.md5(data).hexdigest()})


# -- reading back

def read_index(cache_dir, name=INDEX_FILES[0]):
    path = Path(cache_dir) / name
    if not path.is_file():
        raise CacheError(f"{path}: tensor cache index not found")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheError(f"{path}: not JSON ({error})") from None
    if not isinstance(index, dict) or not isinstance(index.get("records"), list):
        raise CacheError(f"{path}: no 'records' list")
    return index


def check_index_copies(cache_dir):
    """Both index files must exist and say the same."""
    first, *others = [read_index(cache_dir, name) for name in INDEX_FILES]
    for name, other in zip(INDEX_FILES[1:], others):
        if other != first:
            raise CacheError(f"{Path(cache_dir) / name} differs from {INDEX_FILES[0]}")
    return first


def load_tensors(cache_dir, index=None):
    """name → array of every record, after checking each shard's size and md5 and each record's bounds."""
    cache_dir = Path(cache_dir)
    index = index if index is not None else read_index(cache_dir)
    tensors = {}
    for number, shard in enumerate(index["records"]):
        data = _read_shard(cache_dir, shard, number)
        for record in shard.get("records", []):
            name = record.get("name")
            if name in tensors:
                raise CacheError(f"{cache_dir / INDEX_FILES[0]}: tensor {name} recorded twice")
            tensors[name] = _record_array(data, record, cache_dir / shard["dataPath"])
    return tensors


def _read_shard(cache_dir, shard, number):
    where = f"{cache_dir / INDEX_FILES[0]}: shard record {number}"
    missing = [key for key in ("dataPath", "format", "nbytes", "md5sum", "records") if key not in shard]
    if missing:
        raise CacheError(f"{where} lacks {', '.join(missing)}")
    if shard["format"] != SHARD_FORMAT:
        raise CacheError(f"{where}: format {shard['format']!r}, expected {SHARD_FORMAT!r}")
    path = cache_dir / shard["dataPath"]
    if not path.is_file():
        raise CacheError(f"{path}: shard missing")
    data = path.read_bytes()
    if len(data) != shard["nbytes"]:
        raise CacheError(f"{path}: {len(data)} bytes, the index says {shard['nbytes']} (truncated or padded)")
    if hashlib.md5(data).hexdigest() != shard["md5sum"]:
        raise CacheError(f"{path}: md5 {hashlib.md5(data).hexdigest()} differs from the index's {shard['md5sum']} "
                         "(corrupted)")
    return data


def _record_array(data, record, path):
    name = record.get("name", "?")
    for key in ("shape", "dtype", "format", "nbytes", "byteOffset"):
        if key not in record:
            raise CacheError(f"{path}: record {name} lacks {key}")
    if record["dtype"] not in DTYPES:
        raise CacheError(f"{path}: record {name} has dtype {record['dtype']}; known: {', '.join(DTYPES)}")
    expected = stored_nbytes(record["shape"], record["dtype"], record["format"])
    if record["nbytes"] != expected:
        raise CacheError(f"{path}: record {name} says {record['nbytes']} bytes; shape {record['shape']} "
                         f"{record['dtype']} ({record['format']}) takes {expected}")
    start, end = record["byteOffset"], record["byteOffset"] + record["nbytes"]
    if start < 0 or end > len(data):
        raise CacheError(f"{path}: record {name} at bytes {start}..{end} runs past the shard's {len(data)}")
    return decode(data[start:end], record["shape"], record["dtype"], record["format"])
