"""The model-card table, the plot rows and the model-vs-export comparison, on hand-made results."""
import json
import subprocess
import sys

import pytest

from eval.report import comparison_table, markdown_table, plot_rows, score_deltas
from tests.test_eval_support import REPO

BASE = {"model": "models/instruct", "backend": "hf", "tasks": {
    "jcommonsenseqa": {"score": 0.5, "n": 10, "shots": 4, "metric": "exact_match", "mode": "loglikelihood"},
    "mgsm": {"score": 0.25, "n": 8, "shots": 4, "metric": "number_match", "mode": "generate"},
    "perplexity": {"score": 31.5, "n": 4862, "shots": 0, "metric": "perplexity", "higher_is_better": False},
    "mt_bench": {"skipped": "no judge configured (evaluate.judge.url is not set)"},
}}
Q8 = {"model": "model-q8_0.gguf", "backend": "gguf", "tasks": {
    "jcommonsenseqa": {"score": 0.4, "n": 10, "shots": 4, "metric": "exact_match", "mode": "loglikelihood"},
    "mgsm": {"score": 0.375, "n": 8, "shots": 4, "metric": "number_match", "mode": "generate"},
    "perplexity": {"score": 33.0, "n": 4862, "shots": 0, "metric": "perplexity", "higher_is_better": False},
}}
Q5 = {"model": "model-q5_k_m.gguf", "backend": "gguf", "tasks": {
    "jcommonsenseqa": {"score": 0.3, "n": 10, "shots": 4, "metric": "exact_match", "mode": "loglikelihood"},
    "mgsm": {"skipped": "not run"},
}}


def test_score_deltas_per_task_scored_in_both():
    deltas = score_deltas(BASE, Q8)
    assert sorted(deltas) == ["jcommonsenseqa", "mgsm", "perplexity"]
    assert deltas["jcommonsenseqa"] == {"base": 0.5, "other": 0.4, "delta": pytest.approx(-0.1)}
    assert deltas["mgsm"]["delta"] == 0.125
    assert deltas["perplexity"]["delta"] == 1.5
    assert sorted(score_deltas(BASE, Q5)) == ["jcommonsenseqa"]


def test_comparison_table_shows_each_export_with_its_delta():
    assert comparison_table(BASE, {"q8_0": Q8, "q5_k_m": Q5}) == (
        "| task | base | q8_0 | q5_k_m |\n"
        "|---|---:|---:|---:|\n"
        "| jcommonsenseqa | 0.5000 | 0.4000 (-0.1000) | 0.3000 (-0.2000) |\n"
        "| mgsm | 0.2500 | 0.3750 (+0.1250) | – |\n"
        "| perplexity | 31.5000 | 33.0000 (+1.5000) | – |\n")


def test_markdown_table_lists_scores_and_skipped_tasks_with_the_reason():
    assert markdown_table(BASE) == (
        "Model `models/instruct`, backend `hf`.\n\n"
        "| task | metric | shots | n | score |\n"
        "|---|---|---:|---:|---:|\n"
        "| jcommonsenseqa | exact_match (loglikelihood) | 4 | 10 | 0.5000 |\n"
        "| mgsm | number_match | 4 | 8 | 0.2500 |\n"
        "| perplexity | perplexity | 0 | 4862 | 31.5000 |\n"
        "| mt_bench | – | – | – | skipped: no judge configured (evaluate.judge.url is not set) |\n")


def test_plot_rows_keep_the_zero_to_one_scores():
    assert plot_rows(BASE) == [{"task": "jcommonsenseqa", "metric": "exact_match", "score": 0.5},
                               {"task": "mgsm", "metric": "number_match", "score": 0.25}]


def test_compare_from_the_command_line(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    (tmp_path / "q8.json").write_text(json.dumps(Q8))
    result = subprocess.run([sys.executable, "-m", "eval", "--compare", str(tmp_path / "base.json"),
                             str(tmp_path / "q8.json")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| mgsm | 0.2500 | 0.3750 (+0.1250) |" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "eval", "--compare", str(tmp_path / "base.json"),
                              str(tmp_path / "nope.json")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 1 and "nope.json not found" in missing.stderr and "Traceback" not in missing.stderr
