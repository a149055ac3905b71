import copy

import numpy as np
import pytest
import torch

from taid.data import sample_order, to_batch
from taid.objective import Objective
from taid.schedule import TAIDSchedule
from taid.trainer import NonFiniteLossError, TrainConfig, train
from tests.conftest import random_rows, tiny_qwen2

TEACHER = tiny_qwen2(hidden_size=32, layers=2, seed=1).requires_grad_(False)


def run(student, rows, *, steps=4, checkpoint_dir=None, **overrides):
    settings = dict(steps=steps, batch_size=8, lr=1e-2, warmup_steps=1, seed=3, loss_chunk_size=16)
    cfg = TrainConfig(**{**settings, **overrides})
    schedule = TAIDSchedule(t_start=0.4, t_end=1.0, alpha=0.05, beta=0.5, total_steps=steps)
    objective = Objective("taid", teacher=TEACHER, chunk_size=cfg.loss_chunk_size)
    result, model = train(student, objective, rows, rows[:6], cfg, schedule=schedule, checkpoint_dir=checkpoint_dir)
    return result, model, schedule


def assert_same_weights(a, b, atol=1e-6):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-5, msg=name)


def test_one_batch_of_8_equals_two_accumulated_micro_batches_of_4(rows):
    student = tiny_qwen2(seed=2)
    whole, whole_model, whole_schedule = run(copy.deepcopy(student), rows, batch_size=8, grad_accum=1)
    split, split_model, split_schedule = run(copy.deepcopy(student), rows, batch_size=4, grad_accum=2)
    assert_same_weights(whole_model, split_model)
    assert [r["loss"] for r in whole.history] == pytest.approx([r["loss"] for r in split.history], rel=1e-5)
    assert split_schedule.t == pytest.approx(whole_schedule.t, abs=1e-9)
    assert whole_schedule.t > 0.4  # the schedule moved, so the comparison of t means something


def test_step_loss_is_the_token_mean_over_the_whole_step(rows):
    """With the learning rate at zero, the logged step loss equals the loss over the step's rows at once."""
    student = tiny_qwen2(seed=2)
    result, _, _ = run(copy.deepcopy(student), rows, steps=1, batch_size=4, grad_accum=2, lr=0.0)
    objective = Objective("taid", teacher=TEACHER, chunk_size=0)
    step_rows = rows[np.sort(sample_order(len(rows), 3, 0, 8))]
    with torch.no_grad():
        total, n = objective.loss_sum(student, to_batch(step_rows), t=0.4)
    assert result.history[0]["loss"] == pytest.approx(float(total) / n, rel=1e-5)


def test_resume_after_interruption_equals_an_uninterrupted_run(rows, tmp_path):
    student = tiny_qwen2(seed=2)
    straight, straight_model, straight_schedule = run(copy.deepcopy(student), rows, steps=6)

    first, _, _ = run(copy.deepcopy(student), rows, steps=6, checkpoint_dir=tmp_path, save_every=2, stop_after=3)
    assert not first.finished and len(first.history) == 3
    fresh = tiny_qwen2(seed=99)  # different weights: everything must come from the checkpoint (step 2)
    resumed, resumed_model, resumed_schedule = run(fresh, rows, steps=6, checkpoint_dir=tmp_path,
                                                   save_every=2, resume=True)
    assert resumed.finished
    assert_same_weights(straight_model, resumed_model)
    assert resumed_schedule.t == straight_schedule.t
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in straight.history], rel=1e-6)


def test_resume_refuses_a_checkpoint_from_other_settings(rows, tmp_path):
    run(tiny_qwen2(seed=2), rows, steps=4, checkpoint_dir=tmp_path, save_every=2, stop_after=2)
    with pytest.raises(ValueError, match="other settings"):
        run(tiny_qwen2(seed=2), rows, steps=4, checkpoint_dir=tmp_path, save_every=2, resume=True, lr=5e-3)


def test_non_finite_loss_stops_the_run_naming_the_step(rows, monkeypatch):
    calls = {"n": 0}
    original = Objective.loss_sum

    def poisoned(self, model, batch, t=None, spec=None):
        calls["n"] += spec is None  # training calls only, not validation
        loss, n = original(self, model, batch, t, spec)
        return (loss * float("nan") if spec is None and calls["n"] == 3 else loss), n

    monkeypatch.setattr(Objective, "loss_sum", poisoned)
    student = tiny_qwen2(seed=2)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        run(student, rows, steps=5, eval_every=0)


def test_unknown_train_key_is_refused():
    with pytest.raises(ValueError, match="unknown keys \\['stepz'\\]"):
        TrainConfig.from_params({"stepz": 3}, where="params.yaml: distill.train")


def test_training_lowers_the_kl_to_the_teacher():
    rows = random_rows(32, 12, 64, seed=5, ragged=False)
    result, _, _ = run(tiny_qwen2(seed=2), rows, steps=15, eval_every=5)
    kls = [e["val_kl"] for e in result.evals]
    assert kls[-1] < 0.8 * kls[0]


def test_gradient_checkpointing_changes_memory_not_the_result(rows):
    student = tiny_qwen2(seed=2, layers=2)
    _, plain, _ = run(copy.deepcopy(student), rows, steps=3)
    _, checkpointed, _ = run(copy.deepcopy(student), rows, steps=3, gradient_checkpointing=True)
    assert checkpointed.is_activation_checkpointing
    assert_same_weights(plain, checkpointed)
