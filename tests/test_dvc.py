"""The embedded default exactly as `make repro` runs it: `dvc repro`, a no-op second run, metrics, and what a
param change would rerun. This is the slowest test (the whole default pipeline, a few minutes on 2 cores)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_stages import REPO

BIN = Path(sys.executable).parent


def dvc(repo, *args):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC copy of the project with its default params and bundled data, unchanged."""
    repo = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for name in ("stages", "taid", "corpus", "configs", "data/sample", "data/fixtures"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


@pytest.fixture(scope="module")
def reproduced(project):
    return dvc(project, "repro"), dvc(project, "repro")


def test_repro_runs_every_stage_then_nothing_the_second_time(reproduced):
    first, second = reproduced
    for stage in ("tokenizer", "prepare", "teacher", "distill"):
        assert f"Running stage '{stage}'" in first
        assert f"stage {stage}: done in" in first  # each stage reports its wall time
    assert "Running stage" not in second


def test_the_default_student_gets_closer_to_its_teacher(project, reproduced):
    shown = dvc(project, "metrics", "show", "--json")
    metrics = json.loads(shown)[""]["data"]["metrics/distill.json"]["data"]
    assert metrics["val_kl"] < 0.25 * metrics["val_kl_initial"]
    assert metrics["t_final"] == 1.0
    curve = (project / "metrics/distill/train.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,t" and len(curve) == 1 + 200


def test_changing_the_loss_marks_only_distill_as_changed(project, reproduced):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["distill"]["loss"] = "reverse_kl"
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    status = dvc(project, "status")
    assert "distill:" in status
    for upstream in ("tokenizer:", "prepare:", "teacher:"):
        assert upstream not in status
