"""The teacher_cache stage and training from it: k = V equals the live teacher, k < V follows the tail rule,
a killed run resumes to the same files, and a cache that does not match is refused."""
import json
import math
from argparse import Namespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stages import teacher_cache
from stages.common import StageError
from stages.teacher_block import cache_identity, teacher_block
from stages.training import data_sha256, load_prepared
from taid.cache import CacheMismatchError, CacheReader, CacheWriter
from taid.data import to_batch
from taid.objective import Objective
from taid.teachers import CachedTeacher
from tests.test_stages import pipeline, run_distill, write_params  # noqa: F401  (pipeline: a fixture)


def cache_params(root, **overrides):
    settings = {"distill.teacher.mode": "cache", "distill.teacher.cache": {
        "k": 64, "logprob_dtype": "float16", "shard_rows": 16, "batch_size": 8}}
    return write_params(root, **{**settings, **overrides})[0]


def build(paths, params, out):
    args = Namespace(stage="distill", tokenizer=paths.tokenizer, data=paths.data, out=out,
                     metrics=out.parent / f"{out.name}.json")
    teacher_cache.run(args, params)
    return out


def reader_for(paths, params, out):
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    identity = cache_identity(teacher_block(params, "distill"), tokenizer, data_sha256(paths.data))
    return CacheReader(out, identity, vocab_size=len(tokenizer))


def test_a_cache_with_k_equal_to_the_vocabulary_trains_exactly_like_the_live_teacher(pipeline, tmp_path):
    n_ids = len(AutoTokenizer.from_pretrained(pipeline.tokenizer))
    full = {"k": n_ids, "logprob_dtype": "float32", "shard_rows": 16, "batch_size": 8}
    params = cache_params(pipeline.root, **{"distill.teacher.cache": full, "distill.train.steps": 4,
                                           "distill.train.eval_every": 2})
    cache = build(pipeline, params, tmp_path / "cache")
    _, from_cache = run_distill(pipeline, params, "from-cache", teacher_cache=cache)
    live = write_params(pipeline.root, **{"distill.train.steps": 4, "distill.train.eval_every": 2})[0]
    _, from_live = run_distill(pipeline, live, "live")
    for key in ("val_kl_initial", "val_kl", "val_loss", "train_loss_final"):
        assert from_cache[key] == pytest.approx(from_live[key], rel=1e-5, abs=1e-6), key


def test_a_top_k_cache_gives_the_loss_of_the_tail_rule_computed_by_hand(pipeline, tmp_path):
    params = cache_params(pipeline.root, **{"distill.teacher.cache.logprob_dtype": "float32"})
    params["distill"]["teacher"]["cache"]["k"] = 5
    cache = build(pipeline, params, tmp_path / "cache")
    tokenizer = AutoTokenizer.from_pretrained(pipeline.tokenizer)
    n_ids = len(tokenizer)
    _, valid = load_prepared(pipeline.data, tokenizer)
    rows = valid[np.array([2, 0])]  # any order: the cache is keyed by sample id
    batch = to_batch(rows)
    student = AutoModelForCausalLM.from_pretrained(pipeline.teacher)  # any model will do as the student
    objective = Objective("forward_kl", teacher=CachedTeacher(reader_for(pipeline, params, cache), n_ids),
                          n_shared=n_ids, chunk_size=7)
    with torch.no_grad():
        got, n = objective.loss_sum(student, batch)
        teacher = AutoModelForCausalLM.from_pretrained(pipeline.teacher)
        mask = batch["mask"]
        p = torch.softmax(teacher(input_ids=batch["input_ids"]).logits[:, :-1][mask][:, :n_ids].double(), -1)
        q = torch.log_softmax(student(input_ids=batch["input_ids"]).logits[:, :-1][mask][:, :n_ids].double(), -1)
    expected = 0.0
    for p_row, q_row in zip(p, q):  # the tail rule, position by position
        top = torch.topk(p_row, 5).indices
        rest = 1.0 - float(p_row[top].sum())
        target = torch.full_like(p_row, rest / (n_ids - 5))
        target[top] = p_row[top]
        expected += float((target * (target.log() - q_row)).sum())
    assert n == int(mask.sum()) > 0
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_a_killed_cache_run_resumes_to_the_same_files(pipeline, tmp_path, monkeypatch):
    params = cache_params(pipeline.root)
    uninterrupted = build(pipeline, params, tmp_path / "whole")
    real_write, written = CacheWriter.write, []

    def killed_after_two_shards(self, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        written.append(args)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "write", killed_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        build(pipeline, params, tmp_path / "resumed")
    monkeypatch.setattr(CacheWriter, "write", real_write)
    calls = []
    monkeypatch.setattr(CacheWriter, "write", lambda self, *a, **k: calls.append(a) or real_write(self, *a, **k))
    build(pipeline, params, tmp_path / "resumed")
    total = sum(1 for _ in uninterrupted.rglob("*.parquet"))
    assert len(calls) == total - 2 > 0  # only the shards the killed run had not finished
    for path in sorted(uninterrupted.rglob("*.parquet")):
        assert (tmp_path / "resumed" / path.relative_to(uninterrupted)).read_bytes() == path.read_bytes()


def test_a_cache_built_for_another_teacher_or_k_is_refused(pipeline, tmp_path):
    params = cache_params(pipeline.root)
    cache = build(pipeline, params, tmp_path / "cache")
    other_dtype = cache_params(pipeline.root, **{"distill.teacher.dtype": "bfloat16"})
    with pytest.raises(CacheMismatchError, match="dtype"):
        run_distill(pipeline, other_dtype, "other-dtype", teacher_cache=cache)
    with pytest.raises(CacheMismatchError):
        reader_for(pipeline, params, tmp_path / "missing")


def test_live_mode_writes_only_a_marker_and_cache_mode_needs_a_cache_directory(pipeline, tmp_path):
    params = write_params(pipeline.root)[0]  # distill.teacher.mode: live
    out = build(pipeline, params, tmp_path / "live")
    assert [p.name for p in out.iterdir()] == ["mode.json"]
    with pytest.raises(StageError, match="teacher-cache"):
        run_distill(pipeline, cache_params(pipeline.root), "no-cache-dir")


def test_bytes_per_token_of_the_default_cache_are_reported(pipeline, tmp_path):
    params = cache_params(pipeline.root)
    out = build(pipeline, params, tmp_path / "cache")
    metrics = json.loads((tmp_path / "cache.json").read_text())
    on_disk = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    splits = load_prepared(pipeline.data, AutoTokenizer.from_pretrained(pipeline.tokenizer))
    positions = sum(int(split.kept_mask().sum()) for split in splits)
    assert metrics["mode"] == "cache" and metrics["k"] == 64
    assert math.isclose(metrics["bytes_per_token"], on_disk / positions, rel_tol=0.05)
