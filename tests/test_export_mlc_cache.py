"""The tensor cache: shards and index equal to what tvm's own writer (tvmjs.dump_tensor_cache, which
mlc_llm convert_weight calls) makes of the same arrays; the reader refuses truncated, corrupted and
inconsistent caches, naming the file; the comparison with a reference cache."""
import hashlib
import json

import numpy as np
import pytest
from tvm.contrib import tvmjs

from export.mlc_cache import CacheError, TensorCacheWriter, check_index_copies, load_tensors, read_index
from export.mlc_format import INDEX_FILES
from export.mlc_reference import compare_caches

KIB = 1 << 10


def sample_arrays():
    """Named arrays whose sizes exercise every sharding rule under a 1 MiB cap (1,048,576 bytes): b.q_weight
    (983,040 bytes) does not fit after a.* (134,320) and is half the cap or more, so it goes alone into
    shard 0 at once; a.*, b.norm and c.* fill shard 1 until d.q_weight would reach the cap; d opens shard 2."""
    rng = np.random.default_rng(0)
    return [
        ("a.q_weight", rng.integers(0, 2 ** 32, size=(64, 512), dtype=np.uint32)),     # 128 KiB
        ("a.q_scale", rng.standard_normal((64, 16)).astype(np.float16)),
        ("a.bias", rng.standard_normal(300).astype(np.float32)),
        ("b.q_weight", rng.integers(0, 2 ** 32, size=(256, 960), dtype=np.uint32)),    # 960 KiB: out of band
        ("b.norm", rng.standard_normal(1000).astype(np.float32)),
        ("c.q_weight", rng.integers(0, 2 ** 32, size=(512, 200), dtype=np.uint32)),    # 400 KiB
        ("c.q_scale", rng.standard_normal((512, 100)).astype(np.float32)),
        ("d.q_weight", rng.integers(0, 2 ** 32, size=(400, 256), dtype=np.uint32)),    # 400 KiB: commits
    ]


def write_ours(directory, f32_format, arrays=None):
    writer = TensorCacheWriter(directory, f32_format=f32_format, shard_bytes=1 << 20)
    for name, array in arrays or sample_arrays():
        writer.add(name, array)
    return writer.finish({"ParamSize": 8})


@pytest.mark.parametrize("f32_format", ["raw", "f32-to-bf16"])
def test_shards_and_index_equal_tvm_dump_tensor_cache(tmp_path, f32_format):
    ours = write_ours(tmp_path / "ours", f32_format)
    tvmjs.dump_tensor_cache(dict(sample_arrays()), str(tmp_path / "tvm"), encode_format=f32_format,
                            meta_data={"ParamSize": 8}, shard_cap_mb=1, show_progress=False)
    theirs = json.loads((tmp_path / "tvm" / "tensor-cache.json").read_text())
    assert ours == theirs
    assert [[r["name"] for r in shard["records"]] for shard in ours["records"]] == [
        ["b.q_weight"], ["a.q_weight", "a.q_scale", "a.bias", "b.norm", "c.q_weight", "c.q_scale"], ["d.q_weight"]]
    for shard in theirs["records"]:
        assert (tmp_path / "ours" / shard["dataPath"]).read_bytes() == (tmp_path / "tvm" / shard["dataPath"]).read_bytes()
    for name in INDEX_FILES:
        assert json.loads((tmp_path / "ours" / name).read_text()) == theirs


@pytest.mark.parametrize("f32_format", ["raw", "f32-to-bf16"])
def test_our_reader_and_tvms_read_the_same_arrays(tmp_path, f32_format):
    import tvm
    write_ours(tmp_path, f32_format)
    ours = load_tensors(tmp_path)
    loaded, metadata = tvmjs.load_tensor_cache(str(tmp_path / "ndarray-cache.json"), tvm.cpu())
    assert metadata == {"ParamSize": 8} and set(loaded) == set(ours)
    for name, original in sample_arrays():
        assert np.array_equal(loaded[name].numpy(), ours[name])
        if f32_format == "raw" or original.dtype != np.float32:
            assert np.array_equal(ours[name], original)
        else:   # bfloat16 on disk: within half a bf16 step (2^-8 relative)
            assert np.all(np.abs(ours[name] - original) <= np.abs(original) * 2 ** -8)


def test_a_truncated_shard_is_named(tmp_path):
    write_ours(tmp_path, "raw")
    shard = tmp_path / "params_shard_1.bin"
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(CacheError, match=r"params_shard_1\.bin: .*truncated"):
        load_tensors(tmp_path)


def test_a_corrupted_shard_is_named(tmp_path):
    write_ours(tmp_path, "raw")
    shard = tmp_path / "params_shard_2.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"params_shard_2\.bin: md5 .*corrupted"):
        load_tensors(tmp_path)


def test_a_missing_shard_and_a_missing_index_are_named(tmp_path):
    write_ours(tmp_path, "raw")
    (tmp_path / "params_shard_2.bin").unlink()
    with pytest.raises(CacheError, match=r"params_shard_2\.bin: shard missing"):
        load_tensors(tmp_path)
    (tmp_path / "tensor-cache.json").unlink()
    with pytest.raises(CacheError, match="tensor-cache.json: tensor cache index not found"):
        read_index(tmp_path)


def edit_index(directory, edit):
    for name in INDEX_FILES:
        index = json.loads((directory / name).read_text())
        edit(index)
        (directory / name).write_text(json.dumps(index))


def test_records_inconsistent_with_their_shard_are_refused(tmp_path):
    write_ours(tmp_path, "raw")
    edit_index(tmp_path, lambda index: index["records"][1]["records"][1].update(nbytes=10))
    with pytest.raises(CacheError, match=r"record a\.q_scale says 10 bytes; shape \[64, 16\] float16"):
        load_tensors(tmp_path)
    write_ours(tmp_path, "raw")
    edit_index(tmp_path, lambda index: index["records"][1]["records"][2].update(byteOffset=10 ** 6))
    with pytest.raises(CacheError, match=r"record a\.bias at bytes 1000000\.\..* runs past"):
        load_tensors(tmp_path)


def test_the_two_index_copies_must_agree(tmp_path):
    write_ours(tmp_path, "raw")
    index = json.loads((tmp_path / "ndarray-cache.json").read_text())
    index["metadata"]["ParamSize"] = 9
    (tmp_path / "ndarray-cache.json").write_text(json.dumps(index))
    with pytest.raises(CacheError, match="ndarray-cache.json differs from tensor-cache.json"):
        check_index_copies(tmp_path)


def test_writer_refuses_duplicates_late_writes_and_unknown_dtypes(tmp_path):
    writer = TensorCacheWriter(tmp_path)
    writer.add("x", np.zeros(4, dtype=np.float16))
    with pytest.raises(ValueError, match="duplicate tensor name x"):
        writer.add("x", np.zeros(4, dtype=np.float16))
    with pytest.raises(ValueError, match="dtype int64"):
        writer.add("y", np.zeros(4, dtype=np.int64))
    writer.finish({})
    with pytest.raises(RuntimeError, match="finished"):
        writer.add("z", np.zeros(4, dtype=np.float16))
    with pytest.raises(ValueError, match="unknown float32 format"):
        TensorCacheWriter(tmp_path, f32_format="bf16")


def test_comparison_with_a_reference_cache_counts_differing_codes(tmp_path):
    arrays = dict(sample_arrays())
    write_ours(tmp_path / "ours", "raw")
    reference = dict(arrays)
    changed = arrays["a.q_weight"].copy()
    changed[0, 0] ^= 0x1                                  # one 4-bit code of 64 · 512 · 8 differs by one
    reference["a.q_weight"] = changed
    reference["a.bias"] = arrays["a.bias"] + np.float32(0.5)
    del reference["d.q_weight"]
    tvmjs.dump_tensor_cache(reference, str(tmp_path / "ref"), encode_format="raw", show_progress=False)
    report = compare_caches(tmp_path / "ours", tmp_path / "ref", "q4f32_1")
    assert report["only_ours"] == ["d.q_weight"] and report["only_reference"] == [] and not report["passed"]
    assert report["tensors"]["a.q_weight"] == {"equal_codes": 1 - 1 / (64 * 512 * 8), "max_code_diff": 1}
    assert report["tensors"]["b.q_weight"] == {"equal_codes": 1.0, "max_code_diff": 0}
    assert report["tensors"]["a.bias"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-6)


def test_md5_in_the_index_is_the_shards(tmp_path):
    index = write_ours(tmp_path, "f32-to-bf16")
    for shard in index["records"]:
        data = (tmp_path / shard["dataPath"]).read_bytes()
        assert shard["md5sum"] == hashlib.md5(data).hexdigest() and shard["nbytes"] == len(data)
