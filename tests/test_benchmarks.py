"""The benchmarks' own checks on tiny sizes: the agreement checks pass when the compared computations are
the same and stop the benchmark (non-zero exit, a message) when they are not; the pipeline log parser;
the peak-memory reading and the README block writer."""
import json
import math
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks are scripts that import their helper as `report`
import chunked_loss  # noqa: E402
import distill_step  # noqa: E402
import pipeline  # noqa: E402
import report  # noqa: E402


def exits_with_message(excinfo, *words):
    """A SystemExit with a string code exits with status 1 and prints the string."""
    message = excinfo.value.code
    assert isinstance(message, str) and all(word in message for word in words), message


# -- chunked loss

def loss_and_grads(variant, t, chunk=16):
    tensors = chunked_loss.inputs(tokens=70, vocab=512, hidden=24)
    loss = chunked_loss.forward_backward(variant, tensors, chunk, t=t)
    return {"loss": loss, "grad_hidden": tensors[0].grad, "grad_head": tensors[1].grad}


def test_chunked_and_naive_losses_agree_on_a_small_vocabulary():
    gaps = chunked_loss.agreement(loss_and_grads("naive", 0.5), loss_and_grads("chunked", 0.5), "float32")
    assert gaps["loss"] < 1e-6 and gaps["grad"] < 1e-5


def test_a_chunked_loss_at_another_t_stops_the_benchmark():
    with pytest.raises(SystemExit) as excinfo:
        chunked_loss.agreement(loss_and_grads("naive", 0.5), loss_and_grads("chunked", 0.7), "float32")
    exits_with_message(excinfo, "disagree", "loss", "gradients")


def test_the_chunked_benchmark_reports_a_naive_form_over_the_memory_cap(tmp_path):
    """V = 32,768 and 1,024 tokens: the full-logit form needs well over the 1.3 GiB address-space cap
    (each [N, V] fp32 tensor is 128 MiB, on top of ~0.65 GiB of imported libraries), 64-token chunks do not."""
    results = tmp_path / "chunked.json"
    subprocess.run([sys.executable, "benchmarks/chunked_loss.py", "--vocab", "32768", "--hidden", "16", "--tokens",
                    "1024", "--chunk", "64", "--rounds", "1", "--memory-cap-gib", "1.3", "--results", str(results),
                    "--no-readme"], cwd=REPO, check=True, capture_output=True)
    (row,) = json.loads(results.read_text())["rows"]
    assert row["naive_fits"] is False and row["naive_mib"] is None and row["time_ratio"] is None
    assert 0 < row["chunked_mib"] < 1.3 * 1024 and row["chunked_s"] > 0
    assert row["loss_checked_by_blocks"] and row["loss_gap"] < 1e-5   # the value, against full logits by blocks


def test_the_loss_by_blocks_is_the_full_logit_loss_and_a_wrong_one_stops_the_benchmark():
    tensors = chunked_loss.inputs(tokens=70, vocab=512, hidden=24)
    full = loss_and_grads("naive", 0.5)
    assert math.isclose(chunked_loss.naive_loss_by_blocks(tensors, block=16), full["loss"], rel_tol=1e-6)
    chunked_loss.agreement({"loss": chunked_loss.naive_loss_by_blocks(tensors, block=16)}, full, "float32")
    with pytest.raises(SystemExit) as excinfo:
        chunked_loss.agreement({"loss": chunked_loss.naive_loss_by_blocks(tensors, block=16, t=0.7)}, full, "float32")
    exits_with_message(excinfo, "disagree", "loss")


# -- distillation step against TRL

def step_args(**changes):
    return Namespace(**{"vocab": 512, "batch": 2, "seq_len": 12, "chunk": 8, "device": "cpu",
                        "dtype": "float32", **changes})


def forward_kl_by_hand(args):
    """KL(teacher ‖ student) per position, mean over every position but each row's last, from full logits."""
    student = distill_step.tiny_model(distill_step.STUDENT, args.vocab, seed=2)
    teacher = distill_step.tiny_model(distill_step.TEACHER, args.vocab, seed=1)
    ids = torch.from_numpy(distill_step.random_rows(args.batch, args.seq_len, args.vocab)).long()
    with torch.no_grad():
        log_q = torch.log_softmax(student(input_ids=ids).logits[:, :-1].double(), -1)
        log_p = torch.log_softmax(teacher(input_ids=ids).logits[:, :-1].double(), -1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def test_our_step_and_trls_gkd_step_compute_the_same_forward_kl(tmp_path):
    args = step_args()
    steps = {variant: distill_step.make_step(variant, args, tmp_path) for variant in distill_step.VARIANTS}
    checked = distill_step.agreement(steps, args)
    assert checked["loss_gap"] < 1e-5 and checked["grad_gap"] < 1e-4
    assert math.isclose(checked["loss"], forward_kl_by_hand(args), rel_tol=1e-5)
    for step in steps.values():  # the check leaves no gradient behind for the first timed step
        assert all(p.grad is None for p in step.student.parameters())


def test_trls_reverse_kl_against_our_forward_kl_stops_the_benchmark(tmp_path):
    args = step_args()
    steps = {"ours": distill_step.make_step("ours", args, tmp_path),
             "trl": distill_step.make_step("trl", args, tmp_path, beta=1.0)}   # beta=1: KL(student ‖ teacher)
    with pytest.raises(SystemExit) as excinfo:
        distill_step.agreement(steps, args)
    exits_with_message(excinfo, "disagree", "TRL")


def test_a_timed_step_updates_the_student_on_both_sides(tmp_path):
    args = step_args()
    for variant in distill_step.VARIANTS:
        step = distill_step.make_step(variant, args, tmp_path)
        before = [p.detach().clone() for p in step.student.parameters()]
        seconds, loss = distill_step.train_step(step, args)
        assert seconds > 0 and loss > 0
        assert any(not torch.equal(a, p) for a, p in zip(before, step.student.parameters()))


# -- pipeline log

LOG = """Running stage 'tokenizer':
> python -m stages.tokenizer models/tokenizer
stage tokenizer: done in 0.4 s
Generating lock file 'dvc.lock'
Running stage 'teacher_cache@distill':
> python -m stages.teacher_cache distill
some progress line
stage teacher_cache: done in 14.0 s
Updating lock file 'dvc.lock'
"""


def test_stage_times_follow_the_stage_dvc_announced():
    assert pipeline.stage_times(LOG) == [("tokenizer", 0.4), ("teacher_cache@distill", 14.0)]


@pytest.mark.parametrize("log, words", [
    (LOG.replace("stage tokenizer: done in 0.4 s\n", ""), ["'tokenizer'", "without"]),
    (LOG + "Running stage 'evaluate':\n> python -m stages.evaluate\n", ["'evaluate'", "without"]),
    ("stage tokenizer: done in 0.4 s\n", ["no stage running"]),
    ("Data and pipelines are up to date.\n", ["no stage"]),
])
def test_a_stage_without_its_time_stops_the_benchmark(log, words):
    with pytest.raises(SystemExit) as excinfo:
        pipeline.stage_times(log)
    exits_with_message(excinfo, *words)


def test_a_rerun_that_runs_a_stage_stops_the_benchmark():
    pipeline.require_nothing_rerun("Stage 'tokenizer' didn't change, skipping\nData and pipelines are up to date.\n")
    with pytest.raises(SystemExit) as excinfo:
        pipeline.require_nothing_rerun(LOG)
    exits_with_message(excinfo, "reran 2 stages", "tokenizer", "teacher_cache@distill")


# -- shared helpers

def test_peak_memory_sees_a_temporary_that_is_already_freed():
    with report.peak_memory("cpu") as peak:
        block = np.ones(200 * 1024 ** 2 // 8)  # 200 MiB, touched
        del block
    assert 190 < peak["mib"] < 260


def test_the_readme_block_is_replaced_whole_and_a_missing_one_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:x -->\nold row\n<!-- /bench:x -->\nafter\n")
    report.replace_block(readme, "x", ["| a |", "|---:|"])
    assert readme.read_text() == "intro\n<!-- bench:x -->\n| a |\n|---:|\n<!-- /bench:x -->\nafter\n"
    with pytest.raises(SystemExit) as excinfo:
        report.replace_block(readme, "y", ["| a |"])
    exits_with_message(excinfo, "bench:y")


def test_agreement_fails_on_a_nan_gap():
    with pytest.raises(SystemExit):
        report.require_agreement("x and y", loss=(float("nan"), 1.0))
    report.require_agreement("x and y", loss=(0.5, 1.0))
