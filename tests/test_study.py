"""The TAID study (benchmarks/study.py): its aggregation against hand values, its agreement check, its run
plan, the README markers, and a 2-step run of every method on a slice of the data writing the JSON, the
tables and the plots."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from stages.common import load_params
from tests.conftest import random_rows, tiny_qwen2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import study  # noqa: E402
import study_report  # noqa: E402


def test_mean_and_sample_std_against_hand_values():
    assert study_report.mean_std([1, 2, 3, 4]) == pytest.approx({"mean": 2.5, "std": math.sqrt(5 / 3), "n": 4})
    assert study_report.mean_std([0.1, 0.3]) == pytest.approx({"mean": 0.2, "std": math.sqrt(0.02), "n": 2})
    assert study_report.mean_std([7.0]) == {"mean": 7.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        study_report.mean_std([])


def test_summary_groups_runs_by_method_on_the_largest_teacher_and_by_teacher_for_scaling():
    form = study.Form(name="t", student="s.json", teachers=("a.json", "b.json"), methods=("sft", "taid"),
                      seeds=(0, 1), fast_alpha=0.1)

    def run(method, teacher, seed, kl, ppl, jcqa):
        return {"method": method, "teacher": teacher, "seed": seed, "label": method.upper(), "val_kl": kl,
                "val_ppl": ppl, "jcqa": jcqa}

    runs = [run("sft", 1, 0, 1.0, 10.0, 0.2), run("sft", 1, 1, 3.0, 20.0, 0.4),
            run("taid", 1, 0, 0.5, 8.0, 0.2), run("taid", 1, 1, 0.5, 8.0, 0.2),
            run("taid", 0, 0, 2.0, 30.0, 0.0), run("taid", 0, 1, 4.0, 50.0, 0.6),
            run("forward_kl", 0, 0, 1.5, 12.0, 0.2), run("forward_kl", 0, 1, 2.5, 14.0, 0.2)]
    summary = study_report.summarise(runs, form)
    sft, taid = summary["methods"]
    assert (sft["method"], sft["n"]) == ("sft", 2)
    assert sft["val_kl"] == pytest.approx({"mean": 2.0, "std": math.sqrt(2), "n": 2})
    assert sft["val_ppl"] == pytest.approx({"mean": 15.0, "std": math.sqrt(50), "n": 2})
    assert taid["val_kl"] == pytest.approx({"mean": 0.5, "std": 0.0, "n": 2})
    scaling = {(r["method"], r["teacher"]): r for r in summary["teacher_size"]}
    assert set(scaling) == {("forward_kl", 0), ("taid", 0), ("taid", 1)}
    assert scaling["forward_kl", 0]["val_kl"] == pytest.approx({"mean": 2.0, "std": math.sqrt(0.5), "n": 2})
    assert scaling["taid", 0]["jcqa"] == pytest.approx({"mean": 0.3, "std": math.sqrt(0.18), "n": 2})
    assert study_report.cell(sft["val_kl"], "{:.3f}") == "2.000 ± 1.414"


def test_plan_runs_every_method_and_seed_on_the_largest_teacher_then_the_scaling_methods_on_the_others():
    form = study.FORMS["full"]
    specs = study.plan_runs(form)
    largest = len(form.teachers) - 1
    comparison = [s for s in specs if s.teacher == largest]
    assert sorted((s.method, s.seed) for s in comparison) == sorted(
        (m, seed) for m in form.methods for seed in form.seeds)
    others = [s for s in specs if s.teacher != largest]
    assert len(others) == largest * len(form.scaling_methods) * len(form.seeds)
    assert {s.method for s in others} == set(form.scaling_methods)
    assert set(study.ALL_METHODS) == set(study.methods(load_params(REPO / "params.yaml"), 0.1))


def test_the_short_and_full_forms_have_the_capacity_gap_and_seeds_the_issue_asks_for():
    for form in study.FORMS.values():
        assert len(form.seeds) >= 2 and len(form.teachers) == 3 and set(form.methods) == set(study.ALL_METHODS)
    assert len(study.FORMS["full"].seeds) >= 3
    # parameter counts at each form's vocabulary, counted from the configs on the meta device
    params = load_params(REPO / "params.yaml")
    for form in study.FORMS.values():
        vocab = form.vocab_size or params["tokenizer"]["vocab_size"]
        student, teacher = (_n_params(form.student, vocab), _n_params(form.teachers[-1], vocab))
        assert teacher >= 20 * student, (form.name, teacher / student)


def _n_params(config, vocab):
    from transformers import AutoModelForCausalLM

    from taid.models import config_for
    settings = config_for(str(REPO / config))
    settings.vocab_size = vocab
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(settings).parameters())


def test_objectives_of_the_taid_variants():
    params = load_params(REPO / "params.yaml")
    variants = study.methods(params, fast_alpha=0.25)
    teacher = tiny_qwen2(seed=1)
    _, linear = study.objective_for(variants["taid_linear"], teacher, None, params, 10, 0)
    _, official = study.objective_for(variants["taid"], teacher, None, params, 10, 0)
    _, fast = study.objective_for(variants["taid_fast"], teacher, None, params, 10, 0)
    assert (linear.adaptive, official.adaptive, fast.adaptive) == (False, True, True)
    assert official.alpha == params["distill"]["taid"]["alpha"] and fast.alpha == 0.25
    sft, schedule = study.objective_for(variants["sft"], teacher, None, params, 10, 0)
    assert sft.teacher is None and sft.ce_weight == 1.0 and schedule is None


def test_agreement_check_passes_on_real_models_and_fails_loudly_on_a_disagreement():
    checks = study.check_agreement(tiny_qwen2(seed=2), tiny_qwen2(hidden_size=32, layers=2, seed=1),
                                   random_rows(8, 12, 64), n_shared=60)
    assert checks["taid_t1_vs_forward_kl"]["relative_difference"] < 1e-5
    assert checks["val_kl_chunked_vs_full_logits"]["relative_difference"] < 1e-4
    assert checks["taid_t1_vs_forward_kl"]["a"] > 0.01  # distinct models: the compared values are not both 0
    with pytest.raises(study.StudyError, match="agreement check failed: x: 1 vs 1.1"):
        study.agree("x", 1.0, 1.1, 1e-5)


def test_readme_tables_are_replaced_between_the_form_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- study:short -->\nold\n<!-- /study:short -->\nafter\n", encoding="utf-8")
    assert study_report.update_readme(readme, "short", "| new |\n")
    assert readme.read_text(encoding="utf-8") == "intro\n<!-- study:short -->\n| new |\n<!-- /study:short -->\nafter\n"
    assert not study_report.update_readme(readme, "full", "| x |\n")
    assert "| x |" not in readme.read_text(encoding="utf-8")


def test_every_method_runs_two_steps_on_a_slice_and_the_report_is_written(tmp_path):
    form = study.Form(
        name="short", student=study.FORMS["short"].student, teachers=study.FORMS["short"].teachers,
        methods=study.ALL_METHODS, seeds=(0, 1), fast_alpha=0.1, vocab_size=2000, rows=8,
        teacher_train=dict(steps=2, batch_size=4, lr=3e-3, eval_batches=1),
        student_train=dict(steps=2, batch_size=4, lr=3e-3, eval_batches=1))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- study:short -->\n<!-- /study:short -->\n", encoding="utf-8")
    results = study.run_study(form, load_params(REPO / "params.yaml"), tmp_path / "work", tmp_path / "results",
                              readme=readme)

    written = json.loads((tmp_path / "results/study.json").read_text())
    assert [row["method"] for row in written["methods"]] == list(study.ALL_METHODS)
    assert all(row["n"] == 2 for row in written["methods"] + written["teacher_size"])
    assert {(r["method"], r["teacher"]) for r in written["teacher_size"]} == {
        (m, i) for m in form.scaling_methods for i in range(3)}
    for run in written["runs"]:
        assert math.isfinite(run["val_kl"]) and run["val_kl"] >= 0 and run["val_ppl"] > 1
        assert 0 <= run["jcqa"] <= 1
        assert (run["t"] is not None) == run["method"].startswith("taid")
    linear = next(r for r in written["runs"] if r["method"] == "taid_linear")
    assert linear["t"] == pytest.approx([0.4, 0.7])  # t used at steps 1 and 2: the floor 0.4 + 0.6 k / 2
    for label in (row["label"] for row in written["methods"]):
        assert label in results["tables"]
    assert results["tables"] in readme.read_text(encoding="utf-8")
    for name in written["plots"]:
        assert (tmp_path / "results" / name).stat().st_size > 1000
    assert len(written["plots"]) == 3

    # a rerun finds every teacher and run in the cache
    again = study.run_study(form, load_params(REPO / "params.yaml"), tmp_path / "work", tmp_path / "results2",
                            readme=None)
    assert again["runs"] == results["runs"]


def test_parallel_returns_results_in_order_from_worker_processes():
    assert list(study.parallel(math.sqrt, [16, 1, 9, 4], jobs=2)) == [4, 1, 3, 2]
    assert list(study.parallel(math.sqrt, [16, 1], jobs=1)) == [4, 1]
