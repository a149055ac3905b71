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


def copy_project(repo):
    """A git + DVC copy of the project in ``repo``, with its default params and bundled data."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    for name in ("stages", "taid", "corpus", "chat", "eval", "export", "configs", "data/sample", "data/fixtures"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    return repo


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def reproduced(project):
    return dvc(project, "repro"), dvc(project, "repro")


def test_repro_runs_every_stage_then_nothing_the_second_time(reproduced):
    first, second = reproduced
    for stage in ("recipe", "tokenizer", "prepare", "prepare_chat", "teacher", "teacher_chat", "teacher_cache@distill",
                  "teacher_cache@instruct", "distill", "instruct", "evaluate", "export_gguf_f16", "export_gguf@q8_0",
                  "export_gguf@q5_k_m", "export_gguf@q4_k_m", "evaluate_gguf@q4_k_m", "export_mlc@q4f16_1",
                  "export_mlc@q4f32_1", "model_card"):
        assert f"Running stage '{stage}'" in first
        base = stage.split("@")[0]
        module = {"export_gguf_f16": "export_gguf", "evaluate_gguf": "evaluate", "teacher_chat": "teacher"}.get(base, base)
        assert f"stage {module}: done in" in first  # each stage reports its wall time
    assert "Running stage" not in second


def test_the_default_student_gets_closer_to_its_teacher(project, reproduced):
    shown = dvc(project, "metrics", "show", "--json")
    metrics = json.loads(shown)[""]["data"]["metrics/distill.json"]["data"]
    assert metrics["val_kl"] < 0.25 * metrics["val_kl_initial"]
    assert metrics["t_final"] == 1.0
    curve = (project / "metrics/distill/train.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,t" and len(curve) == 1 + 200


def test_distill_trained_from_the_cache_and_instruct_from_its_own_live_teacher(project, reproduced):
    shown = json.loads(dvc(project, "metrics", "show", "--json"))[""]["data"]
    cache = shown["metrics/teacher_cache/distill.json"]["data"]
    assert cache["mode"] == "cache" and cache["k"] == 64 and cache["bytes_per_token"] > 0
    assert shown["metrics/teacher_cache/instruct.json"]["data"] == {"mode": "live"}
    distilled = shown["metrics/distill.json"]["data"]
    assert distilled["teacher_mode"] == "cache"
    instruct = shown["metrics/instruct.json"]["data"]
    assert instruct["teacher_mode"] == "live" and instruct["loss"] == "taid"
    assert instruct["val_loss"] < instruct["val_loss_initial"] and instruct["val_kl"] < instruct["val_kl_initial"]


def test_the_instruct_model_is_scored_on_every_benchmark_fixture(project, reproduced):
    shown = json.loads(dvc(project, "metrics", "show", "--json"))[""]["data"]
    tasks = shown["metrics/eval.json"]["data"]["tasks"]
    settings = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["tasks"]
    assert set(tasks) == set(settings)
    assert "judge" in tasks["mt_bench"]["skipped"]  # no judge configured in the default
    for name, row in tasks.items():
        if name != "mt_bench":
            assert row["n"] > 0 and row["score"] >= 0, name
    table = (project / "metrics/eval.md").read_text()
    assert "jcommonsenseqa" in table


def test_every_export_is_verified_and_the_model_card_tabulates_them(project, reproduced):
    shown = json.loads(dvc(project, "metrics", "show", "--json"))[""]["data"]
    f16 = shown["metrics/export_gguf/f16.json"]["data"]
    assert f16["files"]["f16"]["top1_agreement"] >= 0.99
    for quant in ("q8_0", "q5_k_m", "q4_k_m"):
        entry = shown[f"metrics/export_gguf/{quant}.json"]["data"]["quantizations"][quant]
        assert entry["size_bytes"] > 0 and abs(entry["perplexity_drift"]) < 0.1 * entry["perplexity_reference"]
    for quant in ("q4f16_1", "q4f32_1"):
        assert shown[f"metrics/export_mlc/{quant}.json"]["data"]["quantizations"][quant]["top1_agreement"] >= 0.85
    compared = (project / "metrics/eval_gguf/q4_k_m.md").read_text()
    assert "jcommonsenseqa" in compared and ("(+" in compared or "(-" in compared)
    card = (project / "models/export/README.md").read_text()
    for expected in ("q4_k_m", "q4f32_1", "jcommonsenseqa", "taid"):
        assert expected in card


def downstream(project, stages):
    """``stages`` and every stage that depends on them, from `dvc dag --dot`."""
    edges = [line.replace('"', "").rstrip(";").split(" -> ")
             for line in dvc(project, "dag", "--dot").splitlines() if " -> " in line]
    found = set(stages)
    while True:
        more = {b for a, b in edges if a in found} - found
        if not more:
            return found
        found |= more


def rerun_by(project, edit):
    """The stages `dvc repro` would rerun after ``edit(params)``: those `dvc status` reports changed once
    the recipe stage has resolved the params, and everything downstream of them. Params are restored
    afterwards."""
    path = project / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    edit(params)
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    try:
        dvc(project, "repro", "--single-item", "recipe")
        status = json.loads(dvc(project, "status", "--json"))
    finally:
        path.write_text(original)
        dvc(project, "repro", "--single-item", "recipe")
    return downstream(project, set(status))


def test_a_param_change_reruns_only_the_stages_that_depend_on_it(project, reproduced):
    def loss(params):
        params["distill"]["loss"] = "reverse_kl"

    def distill_teacher(params):
        params["distill"]["teacher"]["dtype"] = "bfloat16"

    def instruct_teacher(params):
        params["instruct"]["teacher"]["source"] = "some/other-teacher"

    after_instruct = downstream(project, {"instruct"})
    assert {"evaluate", "export_gguf@q8_0", "export_mlc@q4f32_1", "model_card"} <= after_instruct
    assert not {"distill", "teacher_cache@distill", "teacher_cache@instruct"} & after_instruct
    assert rerun_by(project, loss) == {"distill"} | after_instruct
    assert rerun_by(project, distill_teacher) == {"teacher_cache@distill", "distill"} | after_instruct
    assert rerun_by(project, instruct_teacher) == {"teacher_cache@instruct"} | after_instruct


def test_a_recipe_reruns_only_the_stages_whose_keys_it_changes(project, reproduced):
    """A recipe building on another (base:) that sets the instruct stage's steps: params.yaml's other keys,
    the base's included, stay as they were for every other stage."""
    recipes = project / "configs/recipes"
    (recipes / "test-base.yaml").write_text("instruct:\n  train:\n    lr: 1.0e-3\n")   # params.yaml's own value
    (recipes / "test-steps.yaml").write_text("base: test-base.yaml\ninstruct:\n  train:\n    steps: 7\n")

    def recipe(params):
        params["recipe"] = "configs/recipes/test-steps.yaml"

    try:
        assert rerun_by(project, recipe) == downstream(project, {"instruct"})
    finally:
        for name in ("test-base.yaml", "test-steps.yaml"):
            (recipes / name).unlink()
        dvc(project, "repro", "--single-item", "recipe")
