"""Two processes train like one: DDP and FSDP2 under `accelerate launch` on CPU (gloo), against one process
with the same global batch — the same weights, the same TAID t on every rank at every step, each row of a
step trained on exactly once, checkpoints that resume on another number of processes, and the distill
stage itself launched the way the README shows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.launched import STEPS, run_training
from tests.test_stages import REPO, pipeline, write_params  # noqa: F401  (pipeline is a fixture)

ENGINES = {
    "ddp": ["--multi_gpu", "--mixed_precision", "no"],
    "fsdp": ["--config_file", "configs/accelerate/fsdp.yaml", "--mixed_precision", "no"],
}
SEEN_AS = {"ddp": "DistributedType.MULTI_CPU", "fsdp": "DistributedType.FSDP"}  # DDP on CPU is MULTI_CPU


def launch(engine, processes, *args, module=None):
    """``accelerate launch`` with ``processes`` CPU processes; a script's arguments or ``-m module``."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *ENGINES[engine], "--num_processes",
                str(processes), "--num_machines", "1", "--dynamo_backend", "no"]
    target = ["-m", module] if module else ["tests/launched.py"] + (["--fsdp-on-cpu"] if engine == "fsdp" else [])
    result = subprocess.run([*launcher, *target, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def records(out):
    return [json.loads(path.read_text()) for path in sorted(Path(out).glob("rank*.json"))]


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=f"{name} differs")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-process run, in this process: its final weights and record."""
    out = tmp_path_factory.mktemp("one-process")
    _, student, record = run_training(out, world=1)
    return {k: v.detach().clone() for k, v in student.state_dict().items()}, record


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_train_like_one(engine, reference, tmp_path):
    weights, one = reference
    launch(engine, 2, "train", tmp_path)
    ranks = records(tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1] and {r["engine"] for r in ranks} == {SEEN_AS[engine]}
    assert_same_weights(torch.load(tmp_path / "weights.pt"), weights)
    for rank in ranks:
        assert rank["t"] == ranks[0]["t"]                       # every rank holds the same t at every step
        assert rank["t"] == pytest.approx(one["t"], abs=1e-6)  # ... and the one process's
        for got, want in zip(rank["evals"], one["evals"]):     # 20 validation rows: one rank pads its last batch
            assert got["val_tokens"] == want["val_tokens"]
            assert got["val_kl"] == pytest.approx(want["val_kl"], rel=1e-5)
    for step, want in enumerate(one["rows"]):                  # each row of the global batch, on one rank only
        got = ranks[0]["rows"][step] + ranks[1]["rows"][step]
        assert sorted(got) == want and not set(ranks[0]["rows"][step]) & set(ranks[1]["rows"][step])
    assert len(one["rows"]) == STEPS and one["teacher"] == {"sharded": False, "local_share": 1.0}
    if engine == "fsdp":  # the teacher is sharded for inference, not replicated
        assert all(r["teacher"] == {"sharded": True, "local_share": 0.5} for r in ranks)


def test_checkpoints_are_written_once_and_a_ddp_run_resumes_in_one_process(reference, tmp_path):
    weights, one = reference
    launch("ddp", 2, "train", tmp_path, "--stop-after", 3)
    checkpoint = tmp_path / "checkpoints" / "step_00000003"
    files = sorted(p.name for p in checkpoint.iterdir())
    assert files == ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl",
                     "scheduler.bin", "trainer_state.json"]
    _, student, resumed = run_training(tmp_path, world=1, resume=True)
    assert resumed["t"] == pytest.approx(one["t"][3:], abs=1e-6)
    assert_same_weights(student.state_dict(), weights)


def test_an_fsdp_checkpoint_is_sharded_and_resumes_on_four_processes(reference, tmp_path):
    weights, one = reference
    launch("fsdp", 2, "train", tmp_path, "--stop-after", 3)
    checkpoint = tmp_path / "checkpoints" / "step_00000003"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and (checkpoint / "optimizer_0").is_dir()
    launch("fsdp", 4, "train", tmp_path, "--resume")
    ranks = records(tmp_path)
    assert [r["world"] for r in ranks] == [4] * 4
    assert all(r["t"] == pytest.approx(one["t"][3:], abs=1e-6) for r in ranks)
    assert_same_weights(torch.load(tmp_path / "weights.pt"), weights)


# -- the distill stage, launched as the README shows

def distill_params(pipeline, processes):
    """The test pipeline's params for a short live-teacher TAID run; the global batch is 8 rows."""
    params, path = write_params(pipeline.root, **{"distill.train.steps": 6, "distill.train.eval_every": 3,
                                                  "distill.train.batch_size": 8 // processes,
                                                  "distill.taid.alpha": 0.05})
    return path


def distill_outputs(pipeline, root, processes, engine=None):
    out = root / f"{engine or 'one'}-{processes}"
    args = ["--params", distill_params(pipeline, processes), "--tokenizer", pipeline.tokenizer, "--data",
            pipeline.data, "--out", out / "model", "--metrics", out / "distill.json", "--plots", out / "plots",
            "--checkpoints", out / "checkpoints"]
    if engine is None:
        subprocess.run([sys.executable, "-m", "stages.distill", *map(str, args)], cwd=REPO, check=True,
                       capture_output=True)
    elif engine == "ddp":
        launch(engine, processes, *args, module="stages.distill")
    else:
        launch(engine, processes, "module", "stages.distill", *args)
    t = np.genfromtxt(out / "plots" / "train.csv", delimiter=",", names=True)["t"]
    return load_file(out / "model" / "model.safetensors"), t, json.loads((out / "distill.json").read_text())


@pytest.mark.parametrize("engine", ENGINES)
def test_the_distill_stage_on_two_processes_matches_one(engine, pipeline, tmp_path):  # noqa: F811
    weights, t, metrics = distill_outputs(pipeline, tmp_path, 1)
    weights_2, t_2, metrics_2 = distill_outputs(pipeline, tmp_path, 2, engine)
    assert_same_weights(weights_2, weights)
    np.testing.assert_allclose(t_2, t, atol=1e-6)
    assert metrics_2["val_kl"] == pytest.approx(metrics["val_kl"], rel=1e-4)
