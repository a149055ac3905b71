"""The teacher top-k cache: hand-computed distributions, the tail rule, round trips through Parquet,
resumption, refusal of mismatching caches and the reported size."""
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from taid.cache import CacheMismatchError, CacheReader, CacheWriter, TopK, expand, top_k

IDENTITY = {"teacher": {"model": "tiny-teacher", "revision": "abc"}, "tokenizer_sha256": "f00",
            "data_sha256": {"train": "aaa", "valid": "bbb"}}
FP16_UNIT = 2.0 ** -11      # float16 unit roundoff: relative error of round-to-nearest
FP16_SUBNORMAL = 2.0 ** -25  # half the spacing of float16 subnormals (|x| < 2^-14)


def fp16_bound(logprobs):
    return np.maximum(FP16_UNIT * np.abs(logprobs), FP16_SUBNORMAL)


def random_entry(n, k, vocab_size, generator):
    """A valid TopK for ``n`` positions: distinct ids, descending log-probs, the rest's mass."""
    ids = torch.stack([torch.randperm(vocab_size, generator=generator)[:k] for _ in range(n)]) if n else \
        torch.empty(0, k, dtype=torch.int64)
    probs = torch.rand(n, k + 1, generator=generator, dtype=torch.float64) ** 4 + 1e-9
    probs = probs / probs.sum(-1, keepdim=True)
    top, _ = probs[:, :k].sort(-1, descending=True)
    return TopK(ids=ids, logprobs=top.log().float(), log_rest=probs[:, k].log().float())


def make_entries(n_rows, k, vocab_size, seed=0, empty_every=4):
    g = torch.Generator().manual_seed(seed)
    lengths = [0 if i % empty_every == 1 else int(torch.randint(1, 9, (), generator=g)) for i in range(n_rows)]
    return [random_entry(n, k, vocab_size, g) for n in lengths]


def build(directory, splits, k, vocab_size, identity=IDENTITY, only=None, **options):
    """Write every pending shard of ``splits`` ({split: entries}); ``only`` limits it to some (split, shard)."""
    writer = CacheWriter(directory, identity, k=k, vocab_size=vocab_size, **options)
    written = []
    for split, entries in splits.items():
        for shard in writer.pending(split, len(entries)):
            if only is None or (split, shard) in only:
                rows = writer.shard_rows_of(split, shard)
                writer.write(split, shard, [entries[i] for i in rows])
                written.append((split, shard))
    return writer, written


def shard_bytes(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*.parquet"))}


# ----------------------------------------------------------------------------- top_k and expand
def test_top_k_on_a_hand_made_distribution():
    logits = torch.tensor([[1.0, 3.0, 0.0, 2.0, -1.0]])
    top = top_k(logits, 2)
    log_z = math.log(sum(math.exp(x) for x in (1, 3, 0, 2, -1)))
    assert top.ids.tolist() == [[1, 3]]
    torch.testing.assert_close(top.logprobs, torch.tensor([[3 - log_z, 2 - log_z]]))
    expected_rest = math.log(math.exp(1) + math.exp(0) + math.exp(-1)) - log_z
    torch.testing.assert_close(top.log_rest, torch.tensor([expected_rest]))
    assert top.ids.dtype == torch.int64 and top.logprobs.dtype == top.log_rest.dtype == torch.float32


def test_top_k_rest_is_accurate_when_tiny():
    # the rest holds ~e^-30 of the mass: log(1 - p_top) would round to log(0) in float32
    logits = torch.tensor([[0.0, -30.0, -40.0]], dtype=torch.float16)
    top = top_k(logits, 1)
    log_z = math.log(1 + math.exp(-30) + math.exp(-40))
    expected = math.log(math.exp(-30) + math.exp(-40)) - log_z
    assert top.log_rest.item() == pytest.approx(expected, rel=1e-6)


def test_top_k_of_the_whole_vocabulary_has_no_rest():
    top = top_k(torch.tensor([[0.5, -0.5, 2.0]]), 3)
    assert top.ids.tolist() == [[2, 0, 1]]
    assert top.log_rest.item() == float("-inf")


def test_top_k_refuses_bad_k():
    with pytest.raises(ValueError, match="k must be in 1..3"):
        top_k(torch.zeros(2, 3), 4)


def test_expand_spreads_the_rest_uniformly():
    # V = 5, top-2 = {3: 0.5, 0: 0.2}, rest 0.3 over ids 1, 2, 4: 0.1 each
    top = TopK(ids=torch.tensor([[3, 0]]), logprobs=torch.tensor([[math.log(0.5), math.log(0.2)]]),
               log_rest=torch.tensor([math.log(0.3)]))
    expected = torch.tensor([[math.log(p) for p in (0.2, 0.1, 0.1, 0.5, 0.1)]])
    torch.testing.assert_close(expand(top, 5), expected)


def test_expand_is_normalised():
    g = torch.Generator().manual_seed(3)
    top = top_k(3 * torch.randn(16, 50, generator=g), 7)
    # fp16-rounded log-probs no longer sum with the rest to 1: expand still returns a distribution
    top.logprobs = top.logprobs.half().float()
    torch.testing.assert_close(expand(top, 50).logsumexp(-1), torch.zeros(16), atol=1e-6, rtol=0)


@pytest.mark.parametrize("logprob_dtype", ["float32", "float16"])
def test_expand_of_a_full_top_k_reproduces_log_softmax(tmp_path, logprob_dtype):
    g = torch.Generator().manual_seed(4)
    logits = 4 * torch.randn(6, 30, generator=g)
    expected = torch.log_softmax(logits, -1)
    build(tmp_path, {"train": [top_k(logits, 30)]}, k=30, vocab_size=30, logprob_dtype=logprob_dtype)[0].finish()
    got = expand(CacheReader(tmp_path, IDENTITY).get("train", [0])[0], 30)
    if logprob_dtype == "float32":
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
    else:  # each value off by its fp16 rounding, plus the renormalising shift (at most the p-weighted errors)
        entropy = -(expected.exp() * expected).sum(-1, keepdim=True)
        bound = FP16_UNIT * (expected.abs() + entropy) + 1e-6
        assert ((got - expected).abs() <= bound).all()


def test_top_k_cat_and_to():
    a, b = top_k(torch.randn(2, 9), 3), top_k(torch.randn(4, 9), 3)
    both = TopK.cat([a, b]).to("cpu")
    assert len(both) == 6
    assert torch.equal(both.ids[2:], b.ids) and torch.equal(both.log_rest[:2], a.log_rest)


# ----------------------------------------------------------------------------- writer → reader
@pytest.mark.parametrize("logprob_dtype", ["float16", "float32"])
def test_round_trip_by_sample_id(tmp_path, logprob_dtype):
    vocab_size, k = 151_936, 5  # ids above 2^17 must survive
    splits = {"train": make_entries(11, k, vocab_size, seed=1), "valid": make_entries(3, k, vocab_size, seed=2)}
    writer, written = build(tmp_path, splits, k, vocab_size, logprob_dtype=logprob_dtype, shard_rows=4)
    assert written == [("train", 0), ("train", 1), ("train", 2), ("valid", 0)]
    writer.finish()
    reader = CacheReader(tmp_path, IDENTITY, vocab_size=vocab_size, k=k)
    order = [7, 0, 10, 3, 7, 1, 9, 0]  # shuffled, with repeats; 1 and 9 have no positions
    for split, ids in (("train", order), ("valid", [2, 0, 1, 2])):
        for sample_id, got in zip(ids, reader.get(split, ids)):
            want = splits[split][sample_id]
            assert torch.equal(got.ids, want.ids) and got.ids.dtype == torch.int64
            assert torch.equal(got.log_rest, want.log_rest)
            if logprob_dtype == "float32":
                assert torch.equal(got.logprobs, want.logprobs)
            else:
                error = (got.logprobs.double() - want.logprobs.double()).abs().numpy()
                assert (error <= fp16_bound(want.logprobs.double().numpy())).all()
    assert max(int(splits["train"][i].ids.max()) for i in order if len(splits["train"][i])) > 2 ** 17
    assert [len(t) for t in reader.get("train", [1, 9])] == [0, 0]


def test_fp16_storage_meets_its_bound_over_the_whole_range(tmp_path):
    values = -torch.logspace(-9, 4.5, 64, dtype=torch.float64)  # from -1e-9 (subnormal) to -31,623
    entry = TopK(ids=torch.arange(64).unsqueeze(0), logprobs=values.float().unsqueeze(0),
                 log_rest=torch.tensor([-50.0]))
    build(tmp_path, {"train": [entry]}, k=64, vocab_size=100)[0].finish()
    got = CacheReader(tmp_path, IDENTITY).get("train", [0])[0].logprobs.double()
    want = entry.logprobs.double()
    assert ((got - want).abs().numpy() <= fp16_bound(want.numpy())).all()


def test_shards_are_plain_parquet_in_the_documented_layout(tmp_path):
    entries = make_entries(5, 3, 1000, seed=5)
    build(tmp_path, {"train": entries}, k=3, vocab_size=1000, shard_rows=2)[0].finish()
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"shard-0000{i}.parquet" for i in range(3)]
    table = pq.read_table(tmp_path / "train" / "shard-00001.parquet")
    assert table["sample_id"].to_pylist() == [2, 3]
    assert table["n_positions"].to_pylist() == [len(entries[2]), len(entries[3])]
    # ids: little-endian uint32 stored byte plane by byte plane
    blob = table["ids"][0].as_py()
    planes = np.frombuffer(blob, dtype=np.uint8).reshape(4, -1)
    ids = (planes.astype(np.int64) << (8 * np.arange(4))[:, None]).sum(0)
    assert ids.tolist() == entries[2].ids.reshape(-1).tolist()


def test_one_sample_decodes_one_small_row_group(tmp_path):
    entries = make_entries(8, 4, 50, seed=6, empty_every=100)
    build(tmp_path, {"train": entries}, k=4, vocab_size=50, shard_rows=8, row_group_bytes=1)[0].finish()
    assert pq.read_metadata(tmp_path / "train" / "shard-00000.parquet").num_row_groups == 8
    reader = CacheReader(tmp_path, IDENTITY, cached_groups=2)
    reader.get("train", [5, 5, 6, 5])
    assert reader.row_groups_decoded == 2
    reader.get("train", [7, 5])  # 7 pushes 6 out, 5 stays cached
    assert reader.row_groups_decoded == 3


# ----------------------------------------------------------------------------- resumption
def test_resumed_build_writes_only_missing_shards_and_matches_an_uninterrupted_one(tmp_path):
    splits = {"train": make_entries(10, 3, 200, seed=7), "valid": make_entries(4, 3, 200, seed=8)}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    build(whole, splits, 3, 200, shard_rows=3)[0].finish()

    first, _ = build(killed, splits, 3, 200, shard_rows=3, only={("train", 0), ("train", 2)})
    del first  # the run is killed here, in the middle of shard 1
    (killed / "train" / ".shard-00001.parquet.999.partial").write_bytes(b"half a shard")
    kept = {name: (killed / "train" / name).stat().st_ino for name in ("shard-00000.parquet", "shard-00002.parquet")}

    resumed, written = build(killed, splits, 3, 200, shard_rows=3)
    assert written == [("train", 1), ("train", 3), ("valid", 0), ("valid", 1)]
    resumed.finish()
    assert shard_bytes(killed) == shard_bytes(whole)
    assert {name: (killed / "train" / name).stat().st_ino for name in kept} == kept  # not rewritten
    assert not list(killed.rglob("*.partial"))


def test_a_shorter_split_rewrites_its_last_shard_and_drops_the_rest(tmp_path, capsys):
    entries = make_entries(10, 2, 40, seed=12)
    build(tmp_path, {"train": entries}, 2, 40, shard_rows=3)[0].finish()
    writer, written = build(tmp_path, {"train": entries[:7]}, 2, 40, shard_rows=3)
    assert written == [("train", 2)]  # rows 6..8 before, row 6 alone now
    with pytest.raises(CacheMismatchError, match="is incomplete"):  # reopened for writing: not complete
        CacheReader(tmp_path, IDENTITY)
    assert writer.finish()["train"]["samples"] == 7
    assert "removing leftover train/shard-00003.parquet" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"shard-0000{i}.parquet" for i in range(3)]
    got = CacheReader(tmp_path, IDENTITY).get("train", [6])[0]
    assert torch.equal(got.ids, entries[6].ids)


def test_ranks_share_the_pending_shards(tmp_path):
    entries = make_entries(9, 2, 40, seed=9)
    writers = [CacheWriter(tmp_path, IDENTITY, k=2, vocab_size=40, shard_rows=2) for _ in range(2)]
    # rank 0 writes everything it owns before rank 1 even asks: rank 1 must still get exactly its own
    for rank, writer in enumerate(writers):
        shards = writer.pending("train", 9, rank=rank, world_size=2)
        assert shards == [rank, rank + 2, rank + 4][: 3 - rank]
        for shard in shards:
            writer.write("train", shard, [entries[i] for i in writer.shard_rows_of("train", shard)])
    assert writers[0].pending("train", 9) == []
    writers[0].finish()
    got = CacheReader(tmp_path, IDENTITY).get("train", range(9))
    assert all(torch.equal(g.ids, e.ids) for g, e in zip(got, entries))


def test_finish_refuses_missing_shards(tmp_path):
    writer, _ = build(tmp_path, {"train": make_entries(7, 2, 40)}, 2, 40, shard_rows=2, only={("train", 1)})
    with pytest.raises(ValueError, match=r"split train misses 3 of 4 shards \(0, 2, 3\)"):
        writer.finish()


def test_a_changed_identity_clears_the_old_cache(tmp_path, capsys):
    entries = make_entries(4, 2, 40)
    build(tmp_path, {"train": entries}, 2, 40, shard_rows=2)[0].finish()
    other = {**IDENTITY, "tokenizer_sha256": "beef"}
    writer = CacheWriter(tmp_path, other, k=2, vocab_size=40, shard_rows=2)
    assert "cleared, identity.tokenizer_sha256: cache has 'f00', expected 'beef'" in capsys.readouterr().out
    assert writer.pending("train", 4) == [0, 1]


def test_a_folder_with_foreign_files_is_not_cleared(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds notes.txt, which a cache never writes"):
        CacheWriter(tmp_path, IDENTITY, k=2, vocab_size=40)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_write_refuses_bad_entries(tmp_path):
    writer = CacheWriter(tmp_path, IDENTITY, k=2, vocab_size=40, shard_rows=2)
    writer.pending("train", 3)
    good = make_entries(1, 2, 40, empty_every=100)[0]
    with pytest.raises(ValueError, match="expected 2 entries, got 1"):
        writer.write("train", 0, [good])
    bad_id = TopK(good.ids + 40, good.logprobs, good.log_rest)
    with pytest.raises(ValueError, match="split train sample 1: token ids must be in 0..39"):
        writer.write("train", 0, [good, bad_id])
    with pytest.raises(ValueError, match=r"expected ids and logprobs \[n, 2\]"):
        writer.write("train", 1, [TopK(good.ids[:, :1], good.logprobs[:, :1], good.log_rest)])


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def finished(tmp_path):
    build(tmp_path, {"train": make_entries(3, 2, 40)}, 2, 40)[0].finish()
    return tmp_path


def test_reader_refuses_another_identity(finished):
    other = {**IDENTITY, "teacher": {"model": "tiny-teacher", "revision": "def"}}
    with pytest.raises(CacheMismatchError) as error:
        CacheReader(finished, other)
    message = str(error.value)
    assert str(finished) in message and "teacher_cache" in message
    assert "identity.teacher.revision: cache has 'abc', expected 'def'" in message


@pytest.mark.parametrize("field, value", [("k", 3), ("vocab_size", 41)])
def test_reader_refuses_another_k_or_vocabulary(finished, field, value):
    with pytest.raises(CacheMismatchError, match=f"{field}: cache has {40 if field == 'vocab_size' else 2}, "
                                                 f"expected {value}"):
        CacheReader(finished, IDENTITY, **{field: value})


def test_reader_refuses_an_incomplete_or_missing_cache(tmp_path):
    build(tmp_path, {"train": make_entries(3, 2, 40)}, 2, 40)  # never finished
    with pytest.raises(CacheMismatchError, match="is incomplete"):
        CacheReader(tmp_path, IDENTITY)
    with pytest.raises(CacheMismatchError, match="no teacher cache at .*nowhere"):
        CacheReader(tmp_path / "nowhere", IDENTITY)


def test_reader_names_a_broken_sidecar_and_an_unknown_split(finished):
    with pytest.raises(CacheMismatchError, match="has no split 'test'"):
        CacheReader(finished, IDENTITY).get("test", [0])
    (finished / "cache.json").write_text('{\n  "format": oops\n}\n')
    with pytest.raises(CacheMismatchError, match=r"cache.json: line 2: not valid JSON"):
        CacheReader(finished, IDENTITY)


def test_reader_names_a_damaged_shard(finished):
    shard = finished / "train" / "shard-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CacheMismatchError, match=r"shard-00000.parquet: unreadable Parquet"):
        CacheReader(finished, IDENTITY).get("train", [0])
    shard.unlink()
    with pytest.raises(CacheMismatchError, match=r"misses train/shard-00000.parquet"):
        CacheReader(finished, IDENTITY).get("train", [0])


# ----------------------------------------------------------------------------- reported size
def test_bytes_per_position_matches_the_files_on_disk(tmp_path):
    splits = {"train": make_entries(9, 4, 300, seed=10), "valid": make_entries(2, 4, 300, seed=11)}
    stats = build(tmp_path, splits, 4, 300, shard_rows=4)[0].finish()
    total_bytes = total_positions = 0
    for split, entries in splits.items():
        on_disk = sum(os.path.getsize(p) for p in (tmp_path / split).glob("shard-*.parquet"))
        positions = sum(len(e) for e in entries)
        assert stats[split]["bytes"] == on_disk and stats[split]["positions"] == positions
        assert stats[split]["bytes_per_position"] == pytest.approx(on_disk / positions, abs=1e-3)
        total_bytes, total_positions = total_bytes + on_disk, total_positions + positions
    assert stats["total"]["bytes_per_position"] == pytest.approx(total_bytes / total_positions, abs=1e-3)
    assert CacheReader(tmp_path, IDENTITY).stats == stats
