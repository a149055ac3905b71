"""Recipes: laid over params.yaml, built on bases, resolved by the recipe stage; bad ones named clearly."""
import subprocess
import sys

import pytest
import yaml

from stages import recipe as recipe_stage
from stages.common import StageError, apply_recipe, load_params
from tests.test_stages import REPO


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return path


def test_a_recipe_is_laid_over_params_key_by_key():
    params = {"distill": {"loss": "taid", "train": {"steps": 10, "lr": 1.0}}, "corpus": {"sources": [1, 2]}}
    merged = apply_recipe(params, {"distill": {"train": {"steps": 99}}, "corpus": {"sources": [3]}})
    assert merged == {"distill": {"loss": "taid", "train": {"steps": 99, "lr": 1.0}}, "corpus": {"sources": [3]}}
    assert params["distill"]["train"]["steps"] == 10


@pytest.fixture
def project(tmp_path):
    write(tmp_path / "params.yaml", {"recipe": "configs/recipes/run.yaml", "seed": 1,
                                     "distill": {"loss": "taid", "train": {"steps": 10, "lr": 1.0}}})
    write(tmp_path / "configs/recipes/base.yaml", {"distill": {"train": {"steps": 100, "lr": 0.5}}})
    write(tmp_path / "configs/recipes/run.yaml", {"base": "base.yaml", "distill": {"train": {"lr": 0.1}}})
    return tmp_path


def test_a_recipe_is_laid_over_its_base_which_is_laid_over_params(project):
    params = load_params(project / "params.yaml")
    assert params["distill"] == {"loss": "taid", "train": {"steps": 100, "lr": 0.1}} and params["seed"] == 1
    assert "base" not in params


def test_a_recipe_that_is_its_own_base_is_refused(project):
    write(project / "configs/recipes/base.yaml", {"base": "run.yaml"})
    with pytest.raises(StageError, match="is its own base"):
        load_params(project / "params.yaml")


def test_a_missing_or_broken_recipe_is_named(project):
    write(project / "configs/recipes/base.yaml", "distill: {train: [\n")
    with pytest.raises(StageError, match=r"base.yaml:2:1: not valid YAML"):
        load_params(project / "params.yaml")
    write(project / "params.yaml", {"recipe": "configs/recipes/nowhere.yaml"})
    with pytest.raises(StageError, match="recipe .*nowhere.yaml not found"):
        load_params(project / "params.yaml")


def test_changed_keys_lists_the_values_a_recipe_changes():
    before = {"a": {"b": 1, "c": [1]}, "d": 2}
    after = {"a": {"b": 1, "c": [2], "e": 3}, "d": 2, "f": {"g": 1}}
    assert recipe_stage.changed_keys(before, after) == ["a.c", "a.e", "f"]


def run_stage(project):
    return subprocess.run([sys.executable, "-m", "stages.recipe", "--params", "params.yaml", "--out", "resolved.yaml"],
                          cwd=project, capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})


def test_the_recipe_stage_writes_the_resolved_params_and_says_what_the_recipe_set(project):
    result = run_stage(project)
    assert result.returncode == 0, result.stderr
    assert "recipe: run.yaml over base.yaml sets 2 values of params.yaml: distill.train.lr, distill.train.steps" \
        in result.stdout
    assert yaml.safe_load((project / "resolved.yaml").read_text()) == load_params(project / "params.yaml")


def test_the_recipe_stage_refuses_a_recipe_dvc_would_not_see_change(project):
    write(project / "elsewhere/run.yaml", {"seed": 2})
    write(project / "params.yaml", {"recipe": "elsewhere/run.yaml"})
    result = run_stage(project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is outside configs/recipes/" in result.stderr
