"""The stages end to end on a tiny corpus: in-process where speed matters, as commands where the CLI does."""
import gzip
import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from stages import prepare, teacher, tokenizer
from stages.student import train_student
from taid.data import unpack
from taid.losses import LOSSES
from taid.models import load_model
from taid.vocab import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ["今日は良い天気です。", "東京から大阪まで新幹線で行きます。", "猫が庭で寝ています。",
             "りんごを{n}個買いました。", "明日は雨が降るでしょう。", "私は毎朝{n}時に起きます。",
             "図書館で本を{n}冊借りました。", "駅の前に新しい店ができました。"]
BAD_LINES = [b"{not json\n", json.dumps({"body": "no text field"}).encode() + b"\n",
             json.dumps({"text": "   "}).encode() + b"\n"]


def write_corpus(path, n_docs, seed, bad_lines=()):
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wb") as f:
        for i in range(n_docs):
            text = "".join(rng.choice(SENTENCES).format(n=rng.integers(1, 20)) for _ in range(rng.integers(3, 12)))
            if i == 0:
                text = "ＡＢＣとｶﾀｶﾅ。" + text  # NFKC turns these into ABC and カタカナ
            f.write(json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n")
        f.writelines(bad_lines)


def write_params(root, **overrides):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["train"] = str(root / "train.jsonl.gz")
    params["corpus"].update(sources=[{"name": "test", "type": "jsonl", "path": str(root / "train.jsonl.gz")}],
                            valid_fraction=0.1)
    params["corpus"]["filters"]["length"]["min_chars"] = 20
    params["corpus"]["dedup"]["minhash"]["enabled"] = False  # random picks of 8 sentences are near-duplicates
    params["tokenizer"]["vocab_size"] = 400
    params["prepare"]["seq_len"] = 32
    small = dict(steps=30, batch_size=8, warmup_steps=3, eval_every=10)
    params["teacher"]["train"].update(small)
    params["distill"]["train"].update(small, save_every=0)
    params["distill"]["teacher"].update(source=str(root / "teacher"), mode="live")
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[key] = value
    path = root / f"params-{len(list(root.glob('params-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    return params, path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """tokenizer → prepare → teacher, once for the module."""
    root = tmp_path_factory.mktemp("pipeline")
    write_corpus(root / "train.jsonl.gz", 300, seed=0, bad_lines=BAD_LINES)
    params, _ = write_params(root)
    paths = Namespace(root=root, tokenizer=root / "tokenizer", data=root / "prepared", teacher=root / "teacher")
    tokenizer.run(Namespace(out=paths.tokenizer), params)
    prepare.run(Namespace(tokenizer=paths.tokenizer, out=paths.data, work=root / "corpus",
                          report=root / "corpus.json"), params)
    teacher.run(Namespace(tokenizer=paths.tokenizer, data=paths.data, init=None, out=paths.teacher,
                          metrics=root / "teacher.json", checkpoints=root / "teacher-checkpoints"), params)
    return paths


def run_student(stage, paths, data, params, name, teacher_cache=None):
    """A student-training stage in process; its output folder (the model in ``model/``) and metrics."""
    out = paths.root / name
    args = Namespace(tokenizer=paths.tokenizer, data=data, teacher_cache=teacher_cache, out=out / "model",
                     metrics=out / f"{stage}.json", plots=out / "plots", checkpoints=out / "checkpoints")
    train_student(stage, args, params)
    return out, json.loads((out / f"{stage}.json").read_text())


def run_distill(paths, params, name, teacher_cache=None):
    return run_student("distill", paths, paths.data, params, name, teacher_cache)


def test_prepare_normalises_packs_with_eos_and_reports_bad_lines(pipeline):
    meta = json.loads((pipeline.data / "meta.json").read_text())
    report = json.loads((pipeline.root / "corpus.json").read_text())
    assert report["documents_in"] == 300
    assert report["bad_input"] == {"malformed_json": 1, "missing_text_field": 1, "empty_document": 1}
    assert meta["train"]["documents"] + meta["valid"]["documents"] == report["documents_out"]
    assert meta["valid"]["documents"] > 0
    tok = AutoTokenizer.from_pretrained(pipeline.tokenizer)
    text = ""
    for split in ("train", "valid"):
        stream = unpack(np.load(pipeline.data / f"{split}.npy"))
        assert int((stream == tok.eos_token_id).sum()) == meta[split]["documents"]
        text += tok.decode(stream.tolist())
    assert "ABCとカタカナ。" in text and "ＡＢＣ" not in text


def test_distill_with_taid_writes_a_loadable_student_metrics_and_curves(pipeline):
    params, _ = write_params(pipeline.root)
    out, metrics = run_distill(pipeline, params, "taid")
    assert metrics["val_kl"] < metrics["val_kl_initial"]
    assert metrics["t_final"] == 1.0 and metrics["loss"] == "taid"
    student = AutoModelForCausalLM.from_pretrained(out / "model")
    assert student.config.hidden_size == 128
    curve = (out / "plots" / "train.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,t" and len(curve) == 1 + 30
    t_values = [float(line.split(",")[3]) for line in curve[1:]]
    assert t_values[0] == 0.4 and t_values == sorted(t_values)


@pytest.mark.parametrize("loss", sorted(set(LOSSES) - {"taid"}))
def test_every_baseline_loss_runs_the_same_stage(pipeline, loss):
    params, _ = write_params(pipeline.root, **{"distill.loss": loss, "distill.train.steps": 3,
                                              "distill.train.eval_every": 0})
    _, metrics = run_distill(pipeline, params, loss)
    assert metrics["loss"] == loss and "t_final" not in metrics
    assert np.isfinite(metrics["val_kl"]) and metrics["val_kl"] < metrics["val_kl_initial"]


def test_real_recipe_path_loads_teacher_student_and_tokenizer_from_local_directories(pipeline, tmp_path):
    """The hub-id/path code path, on local directories: nothing is trained from a config here."""
    student_dir = tmp_path / "pretrained-student"
    tok = load_tokenizer(pipeline.teacher)
    load_model(REPO / "configs/models/student-tiny.json", tok, seed=7).save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    params, _ = write_params(pipeline.root, **{"tokenizer.source": str(pipeline.teacher),
                                               "teacher.model": str(pipeline.teacher),
                                               "distill.student": str(student_dir), "distill.train.steps": 3,
                                               "distill.teacher.source": str(tmp_path / "teacher")})
    paths = Namespace(root=tmp_path, tokenizer=tmp_path / "tokenizer", data=pipeline.data,
                      teacher=tmp_path / "teacher")
    tokenizer.run(Namespace(out=paths.tokenizer), params)
    teacher.run(Namespace(tokenizer=paths.tokenizer, data=paths.data, init=None, out=paths.teacher,
                          metrics=tmp_path / "teacher.json", checkpoints=None), params)
    record = json.loads((paths.teacher / "teacher.json").read_text())
    assert record["source"] == str(pipeline.teacher) and record["output_size"] == len(tok)
    assert sorted(p.name for p in paths.teacher.iterdir()) == ["teacher.json"]  # no copy of the weights
    _, metrics = run_distill(paths, params, "from-directories")
    assert metrics["val_kl"] < metrics["val_kl_initial"]


def stage_command(name, params_path, *args):
    return subprocess.run([sys.executable, "-m", f"stages.{name}", "--params", str(params_path), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True)


def test_a_teacher_with_another_tokenizer_is_refused_with_a_clear_message(pipeline, tmp_path):
    other_root = tmp_path / "other"
    other_root.mkdir()
    write_corpus(other_root / "train.jsonl.gz", 100, seed=5)
    other_params, other_path = write_params(other_root, **{"tokenizer.vocab_size": 380})
    assert stage_command("tokenizer", other_path, "--out", tmp_path / "other-tok").returncode == 0
    _, params_path = write_params(pipeline.root, **{"teacher.model": str(pipeline.teacher)})
    result = stage_command("teacher", params_path, "--tokenizer", tmp_path / "other-tok", "--data", pipeline.data,
                           "--out", tmp_path / "t", "--metrics", tmp_path / "t.json")
    assert result.returncode == 1
    assert "stage teacher failed" in result.stderr and str(pipeline.teacher) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_params_key_fails_with_the_key_named(pipeline, tmp_path):
    _, params_path = write_params(pipeline.root, **{"distill.train.stepz": 3})
    result = stage_command("distill", params_path, "--tokenizer", pipeline.tokenizer, "--data", pipeline.data,
                           "--out", tmp_path / "s", "--metrics", tmp_path / "m.json", "--plots", tmp_path / "p")
    assert result.returncode == 1 and "unknown keys ['stepz']" in result.stderr
    assert "Traceback" not in result.stderr
