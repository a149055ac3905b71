"""The offline teacher cache: a teacher's top-k next-token distributions, stored once, read every step.

A large teacher cannot run beside every training step, so it runs once over a split's packed rows and
stores, for every kept position of a row, its ``k`` most likely token ids, their log-probabilities and
the log of the mass outside them. Training rebuilds the teacher distribution with ``expand``. The cache
is keyed by sample id (row index of the packed array, see ``taid.data``), so any shuffling reads it.
Which positions a row keeps, and in which order, is the builder's choice; the cache stores
``n_positions`` per row and returns them in the order they were written.

The files' layout, encoding and precision: ``taid.cache_format``.

Writers on several ranks: construct the writer on rank 0 first (it may clear the directory), then on the
others; each rank writes its ``pending(split, n_rows, rank, world_size)``; after all are done, rank 0
calls ``finish()``, which checks every shard and marks the cache complete.
"""
import bisect
import math
import os
import shutil
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from taid.cache_format import (
    COLUMNS, ID_DTYPE, LOGPROB_DTYPES, PARTIAL_PATTERN, REBUILD, REST_DTYPE, ROW_GROUP_BYTES, SHARD_NAME,
    SHARD_PATTERN, SIDECAR, SPLIT_PATTERN, ZSTD_LEVEL, FORMAT, VERSION, CacheMismatchError, as_json,
    check_split_name, decode_logprobs, encode_logprobs, expected_settings, from_planes, read_sidecar,
    to_planes, write_sidecar,
)


@dataclass
class TopK:
    """A teacher's next-token distributions at N positions."""
    ids: torch.Tensor        # int64 [N, k], sorted by log-prob, descending
    logprobs: torch.Tensor   # float32 [N, k], log-softmax over the vocabulary
    log_rest: torch.Tensor   # float32 [N], log of the mass outside the top k (-inf when k == vocab)

    def __len__(self):
        return self.ids.shape[0]

    def to(self, device):
        return TopK(self.ids.to(device), self.logprobs.to(device), self.log_rest.to(device))

    @staticmethod
    def cat(tops):
        """The positions of several ``TopK`` one after the other (e.g. the samples of a batch)."""
        if not tops:
            raise ValueError("TopK.cat needs at least one TopK")
        return TopK(torch.cat([t.ids for t in tops]), torch.cat([t.logprobs for t in tops]),
                    torch.cat([t.log_rest for t in tops]))


@torch.no_grad()
def top_k(logits, k):
    """``[N, V]`` logits → their ``k`` most likely ids, fp32 log-probs and the log of the rest's mass.

    Slice a teacher's padded output rows off first (``logits[:, :n_shared]``, see ``taid.vocab``). The rest
    is a logsumexp over the other V - k log-probs, not log(1 - Σ top), so it stays accurate when tiny.
    """
    if logits.dim() != 2:
        raise ValueError(f"top_k expects [N, V] logits, got shape {tuple(logits.shape)}")
    vocab_size = logits.shape[-1]
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must be in 1..{vocab_size} (the vocabulary), got {k}")
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(k, dim=-1, sorted=True)
    log_rest = logprobs.scatter_(-1, ids, float("-inf")).logsumexp(dim=-1)
    return TopK(ids=ids, logprobs=values, log_rest=log_rest)


def expand(top, vocab_size):
    """``TopK`` → float32 ``[N, V]`` log-probs by the tail rule.

    The tail rule: the mass outside the top k is spread uniformly over the V - k other ids, each gets
    ``log_rest - log(V - k)``. The result is renormalised (logsumexp == 0) so that float16 rounding of the
    stored log-probs cannot leave the distribution off by more than rounding; with k == V and float32
    storage it reproduces the teacher's log-softmax up to float rounding. Memory is N × V floats: expand
    a chunk of positions at a time.
    """
    n, k = top.ids.shape
    if k > vocab_size:
        raise ValueError(f"a top-{k} cannot expand to a vocabulary of {vocab_size}")
    if k < vocab_size:
        tail = top.log_rest.float() - math.log(vocab_size - k)
    else:  # nothing outside the top k
        tail = torch.full_like(top.log_rest, float("-inf"), dtype=torch.float32)
    out = tail.unsqueeze(-1).expand(n, vocab_size).clone()
    out.scatter_(-1, top.ids, top.logprobs.float())
    return out - out.logsumexp(dim=-1, keepdim=True)


class CacheWriter:
    """Builds a cache shard by shard; resumes a directory built with the same settings."""

    def __init__(self, directory, identity, k, vocab_size, logprob_dtype="float16", shard_rows=256,
                 row_group_bytes=ROW_GROUP_BYTES):
        if logprob_dtype not in LOGPROB_DTYPES:
            raise ValueError(f"logprob_dtype must be one of {sorted(LOGPROB_DTYPES)}, got {logprob_dtype!r}")
        if not 1 <= k <= vocab_size:
            raise ValueError(f"k must be in 1..vocab_size ({vocab_size}), got {k}")
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.directory = Path(directory)
        self.k, self.vocab_size, self.logprob_dtype = k, vocab_size, logprob_dtype
        self.shard_rows, self.row_group_bytes = shard_rows, row_group_bytes
        self.settings = {"format": FORMAT, "version": VERSION, "identity": as_json(identity), "k": k,
                         "vocab_size": vocab_size, "logprob_dtype": logprob_dtype, "shard_rows": shard_rows}
        self._n_rows = {}  # split → rows, declared by pending()
        self._prepare_directory()

    def _prepare_directory(self):
        try:
            found = read_sidecar(self.directory)
            differences = None if found is None else expected_settings(found, **self.settings)
        except CacheMismatchError as error:
            found, differences = {}, [str(error)]
        if found is not None and not differences:  # resume: keep the finished shards
            if found.get("complete"):
                write_sidecar(self.directory, {**self.settings, "complete": False})
            return
        if found is None and not (self.directory.exists() and any(self.directory.iterdir())):
            self.directory.mkdir(parents=True, exist_ok=True)
        else:
            reason = "; ".join(differences) if differences else f"it has files but no {SIDECAR}"
            _clear_cache_directory(self.directory)
            print(f"teacher cache {self.directory}: cleared, {reason}")
        write_sidecar(self.directory, {**self.settings, "complete": False})

    def pending(self, split, n_rows, rank=0, world_size=1):
        """Shard indices of ``split`` (``n_rows`` sample ids) not yet written, those of ``rank`` only.

        A rank's shards are those whose index is ``rank`` modulo ``world_size``: a choice that does not
        depend on what the other ranks have written by the time this one asks.
        """
        check_split_name(split)
        if not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
            raise ValueError(f"n_rows must be a non-negative int, got {n_rows!r}")
        n_rows = int(n_rows)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size - 1 ({world_size - 1}), got {rank}")
        if self._n_rows.setdefault(split, n_rows) != n_rows:
            raise ValueError(f"split {split} was declared with {self._n_rows[split]} rows, now {n_rows}")
        shards = range(rank, self._n_shards(split), world_size)
        return [shard for shard in shards if not self._shard_done(split, shard)]

    def shard_rows_of(self, split, shard):
        """The sample ids of a shard (the last one of a split may be short)."""
        if split not in self._n_rows:
            raise ValueError(f"split {split!r} is not declared: call pending({split!r}, n_rows) first")
        if not 0 <= shard < self._n_shards(split):
            raise ValueError(f"split {split} has shards 0..{self._n_shards(split) - 1}, got shard {shard}")
        start = shard * self.shard_rows
        return range(start, min(start + self.shard_rows, self._n_rows[split]))

    def write(self, split, shard, entries):
        """Store one ``TopK`` per sample id of the shard, in order; atomic (written beside, then renamed)."""
        rows = self.shard_rows_of(split, shard)
        if len(entries) != len(rows):
            raise ValueError(f"split {split} shard {shard} holds sample ids {rows.start}..{rows.stop - 1}: "
                             f"expected {len(rows)} entries, got {len(entries)}")
        for sample_id, entry in zip(rows, entries):
            self._check_entry(entry, f"split {split} sample {sample_id}")
        path = self._shard_path(split, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        pq.write_table(self._table(rows, entries), partial, row_group_size=self._rows_per_group(entries),
                       compression="zstd", compression_level=ZSTD_LEVEL, use_dictionary=False,
                       write_statistics=False)
        os.replace(partial, path)

    def finish(self):
        """Check every declared split's shards, mark the cache complete, return the stats."""
        if not self._n_rows:
            raise ValueError(f"teacher cache {self.directory}: no split declared; call pending(split, n_rows) first")
        for split in self._n_rows:
            missing = [shard for shard in range(self._n_shards(split)) if not self._shard_done(split, shard)]
            if missing:
                listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
                raise ValueError(f"teacher cache {self.directory}: split {split} misses {len(missing)} of "
                                 f"{self._n_shards(split)} shards ({listed}); write them, then finish again")
            self._remove_leftovers(split)
        stats = self._stats()
        write_sidecar(self.directory, {**self.settings, "complete": True,
                                        "splits": {s: {"n_rows": n} for s, n in self._n_rows.items()},
                                        "stats": stats})
        return stats

    # -- helpers

    def _n_shards(self, split):
        return -(-self._n_rows[split] // self.shard_rows)

    def _shard_path(self, split, shard):
        return self.directory / split / SHARD_NAME.format(shard)

    def _shard_done(self, split, shard):
        """A shard counts as written when its file is readable Parquet with the shard's number of rows."""
        path = self._shard_path(split, shard)
        if not path.is_file():
            return False
        try:
            return pq.read_metadata(path).num_rows == len(self.shard_rows_of(split, shard))
        except (OSError, pa.ArrowException):
            return False

    def _check_entry(self, entry, where):
        n = entry.ids.shape[0] if entry.ids.dim() == 2 else -1
        if entry.ids.shape != (n, self.k) or entry.logprobs.shape != (n, self.k) or entry.log_rest.shape != (n,):
            raise ValueError(f"{where}: expected ids and logprobs [n, {self.k}] and log_rest [n], got "
                             f"{tuple(entry.ids.shape)}, {tuple(entry.logprobs.shape)}, {tuple(entry.log_rest.shape)}")
        if entry.ids.is_floating_point():
            raise ValueError(f"{where}: token ids must be integers, got {entry.ids.dtype}")
        if n and not (0 <= int(entry.ids.min()) and int(entry.ids.max()) < self.vocab_size):
            raise ValueError(f"{where}: token ids must be in 0..{self.vocab_size - 1}, got "
                             f"{int(entry.ids.min())}..{int(entry.ids.max())}")
        if entry.logprobs.isnan().any() or entry.log_rest.isnan().any():
            raise ValueError(f"{where}: NaN log-probabilities (the teacher's logits hold NaN)")

    def _table(self, rows, entries):
        as_numpy = [(e.ids.cpu().numpy(), e.logprobs.cpu().float().numpy(), e.log_rest.cpu().numpy())
                    for e in entries]
        return pa.table({
            "sample_id": pa.array(list(rows), pa.int64()),
            "n_positions": pa.array([len(e) for e in entries], pa.int32()),
            "ids": pa.array([to_planes(ids, ID_DTYPE) for ids, _, _ in as_numpy], pa.binary()),
            "logprobs": pa.array([encode_logprobs(lp, self.logprob_dtype) for _, lp, _ in as_numpy], pa.binary()),
            "log_rest": pa.array([to_planes(rest, REST_DTYPE) for _, _, rest in as_numpy], pa.binary()),
        })

    def _rows_per_group(self, entries):
        """Samples per row group: about ``row_group_bytes`` of raw data each, at least one sample."""
        position_bytes = self.k * (4 + np.dtype(LOGPROB_DTYPES[self.logprob_dtype][0]).itemsize) + 4
        raw = sum(len(e) for e in entries) * position_bytes
        return max(1, len(entries) * self.row_group_bytes // max(raw, 1))

    def _remove_leftovers(self, split):
        """Shards past the split's end (an earlier, longer build) and partial files of killed writers."""
        folder = self.directory / split
        for path in folder.iterdir():
            match = SHARD_PATTERN.fullmatch(path.name)
            if PARTIAL_PATTERN.fullmatch(path.name) or (match and int(match[1]) >= self._n_shards(split)):
                print(f"teacher cache {self.directory}: removing leftover {path.relative_to(self.directory)}")
                path.unlink()

    def _stats(self):
        """Per split and in total: samples, shards, positions, bytes of shard files and bytes per position."""
        stats = {}
        for split, n_rows in self._n_rows.items():
            paths = [self._shard_path(split, shard) for shard in range(self._n_shards(split))]
            positions = sum(int(pq.read_table(p, columns=["n_positions"])["n_positions"].to_numpy().sum())
                            for p in paths)
            stats[split] = {"samples": n_rows, "shards": len(paths), "positions": positions,
                            "bytes": sum(p.stat().st_size for p in paths)}
        stats["total"] = {key: sum(split[key] for split in stats.values())
                          for key in ("samples", "shards", "positions", "bytes")}
        for entry in stats.values():
            entry["bytes_per_position"] = round(entry["bytes"] / entry["positions"], 3) if entry["positions"] else None
        return stats


def _clear_cache_directory(directory):
    """Remove a cache's files; refuse a directory holding anything a cache never writes."""
    for path in directory.iterdir():
        cache_file = path.is_file() and (path.name == SIDECAR or path.name.startswith(f".{SIDECAR}."))
        cache_folder = path.is_dir() and SPLIT_PATTERN.fullmatch(path.name) and all(
            SHARD_PATTERN.fullmatch(p.name) or PARTIAL_PATTERN.fullmatch(p.name) for p in path.iterdir())
        if not (cache_file or cache_folder):
            raise ValueError(f"teacher cache {directory} must be rebuilt but holds {path.name}, which a cache never "
                             "writes; point the cache at an empty folder or remove that file yourself")
    for path in directory.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


class CacheReader:
    """Random access by sample id to a complete cache built from ``identity``."""

    def __init__(self, directory, identity, vocab_size=None, k=None, cached_groups=16):
        self.directory = Path(directory)
        found = read_sidecar(self.directory)
        if found is None:
            raise CacheMismatchError(f"no teacher cache at {self.directory} (no {SIDECAR}); {REBUILD}")
        expected = {"format": FORMAT, "version": VERSION, "identity": as_json(identity)}
        expected.update({key: value for key, value in (("k", k), ("vocab_size", vocab_size)) if value is not None})
        differences = expected_settings(found, **expected)
        if differences:
            raise CacheMismatchError(f"teacher cache {self.directory} was built from something else: "
                                     + "; ".join(differences) + f"; {REBUILD}")
        if not found.get("complete"):
            raise CacheMismatchError(f"teacher cache {self.directory} is incomplete (its build was interrupted "
                                     f"or is still running); {REBUILD} to finish it")
        self.k, self.vocab_size = found["k"], found["vocab_size"]
        self.logprob_dtype, self.shard_rows = found["logprob_dtype"], found["shard_rows"]
        self.n_rows = {split: info["n_rows"] for split, info in found["splits"].items()}
        self.stats = found["stats"]
        self.row_groups_decoded = 0
        self._cached_groups = cached_groups
        self._groups = OrderedDict()  # (split, shard, group) → rows of the group, least recently used first
        self._group_starts = {}       # (split, shard) → first row of each row group

    def get(self, split, sample_ids):
        """One ``TopK`` per sample id, in the order asked (repeats allowed)."""
        if split not in self.n_rows:
            raise CacheMismatchError(f"teacher cache {self.directory} has no split {split!r} "
                                     f"(it has {', '.join(sorted(self.n_rows))}); {REBUILD}")
        return [self._sample(split, int(sample_id)) for sample_id in sample_ids]

    def _sample(self, split, sample_id):
        if not 0 <= sample_id < self.n_rows[split]:
            raise ValueError(f"sample id {sample_id} is outside split {split} of teacher cache {self.directory} "
                             f"(0..{self.n_rows[split] - 1})")
        shard, offset = divmod(sample_id, self.shard_rows)
        starts = self._starts(split, shard)
        group = bisect.bisect_right(starts, offset) - 1
        _, n, ids, logprobs, log_rest = self._group(split, shard, group)[offset - starts[group]]
        return TopK(ids=torch.from_numpy(from_planes(ids, ID_DTYPE).astype(np.int64).reshape(n, self.k)),
                    logprobs=torch.from_numpy(decode_logprobs(logprobs, n, self.k, self.logprob_dtype)),
                    log_rest=torch.from_numpy(from_planes(log_rest, REST_DTYPE).astype(np.float32)))

    def _path(self, split, shard):
        path = self.directory / split / SHARD_NAME.format(shard)
        if not path.is_file():
            raise CacheMismatchError(f"teacher cache {self.directory} misses {path.relative_to(self.directory)}; "
                                     f"{REBUILD}")
        return path

    @contextmanager
    def _reading(self, path):
        try:
            yield
        except (OSError, pa.ArrowException) as error:
            raise CacheMismatchError(f"{path}: unreadable Parquet ({error}); {REBUILD}") from None

    def _starts(self, split, shard):
        if (split, shard) not in self._group_starts:
            path = self._path(split, shard)
            with self._reading(path):
                metadata = pq.read_metadata(path)
            sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            self._group_starts[split, shard] = [0, *np.cumsum(sizes)[:-1].tolist()]
        return self._group_starts[split, shard]

    def _group(self, split, shard, group):
        key = (split, shard, group)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        path = self._path(split, shard)
        with self._reading(path), pq.ParquetFile(path) as parquet:
            table = parquet.read_row_group(group, columns=list(COLUMNS))
        rows = list(zip(*(table[column].to_pylist() for column in COLUMNS)))
        first = shard * self.shard_rows + self._starts(split, shard)[group]
        if [row[0] for row in rows] != list(range(first, first + len(rows))):
            raise CacheMismatchError(f"{path}: row group {group} does not hold sample ids {first}.."
                                     f"{first + len(rows) - 1}: the file is damaged; {REBUILD}")
        self.row_groups_decoded += 1
        self._groups[key] = rows
        if len(self._groups) > self._cached_groups:
            self._groups.popitem(last=False)
        return rows
