"""The DVC pipeline as users run it: `dvc repro`, a no-op second run, metrics, and what a param change reruns."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_stages import REPO, write_corpus

BIN = Path(sys.executable).parent


def dvc(repo, *args):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project whose params shrink the default to seconds."""
    repo = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for name in ("stages", "taid", "configs"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "data/sample").mkdir(parents=True)
    write_corpus(repo / "data/sample/train.jsonl.gz", 200, seed=0)
    write_corpus(repo / "data/sample/valid.jsonl.gz", 10, seed=1)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tokenizer"]["vocab_size"] = 400
    params["prepare"]["seq_len"] = 32
    for stage in ("teacher", "distill"):
        params[stage]["train"].update(steps=8, batch_size=8, warmup_steps=2, eval_every=4, save_every=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


def test_repro_runs_every_stage_then_nothing_the_second_time(project):
    first = dvc(project, "repro")
    for stage in ("tokenizer", "prepare", "teacher", "distill"):
        assert f"Running stage '{stage}'" in first
    second = dvc(project, "repro")
    assert "Running stage" not in second
    shown = dvc(project, "metrics", "show")
    assert "metrics/distill.json" in shown and "val_kl" in shown and "t_final" in shown


def test_changing_the_loss_reruns_distill_only(project):
    dvc(project, "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["distill"]["loss"] = "reverse_kl"
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    status = dvc(project, "status")
    assert "distill:" in status
    for upstream in ("tokenizer:", "prepare:", "teacher:"):
        assert upstream not in status
    rerun = dvc(project, "repro")
    assert "Running stage 'distill'" in rerun and "Running stage 'teacher'" not in rerun
