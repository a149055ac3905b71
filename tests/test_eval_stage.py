"""The evaluate stage and `python -m eval` as commands on a tiny model: every fixture task scored or skipped
with its reason, the three outputs, perplexity on a packed split, and bad input as one clear line."""
import csv
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from eval.runner import evaluate
from eval.backends.hf import HFBackend
from eval.tasks import ALL_TASKS
from taid.data import PAD, pack_documents
from taid.vocab import tokenizer_fingerprint
from tests.test_eval_support import FIXTURES, REPO, fixture_texts, no_progress, tiny_model, tokenizer

# the evaluate section proposed for params.yaml (the stage reads nothing else)
PARAMS = """
evaluate:
  backend: hf
  dtype: float32
  device: auto
  batch_size: 8
  limit: 0
  tasks:
    jcommonsenseqa: {mode: loglikelihood}
    jemhopqa: {max_new_tokens: 12}
    niilc: {max_new_tokens: 12}
    jsquad: {max_new_tokens: 12}
    jmmlu: {mode: loglikelihood}
    mgsm: {max_new_tokens: 12}
    xlsum: {max_new_tokens: 24}
    wmt20_en_ja: {max_new_tokens: 24}
    wmt20_ja_en: {max_new_tokens: 24}
    perplexity: {}
    mt_bench: {max_new_tokens: 32}
  judge:
    url: null
    model: null
    api_key_env: OPENAI_API_KEY
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    tok = tokenizer()
    tiny_model(tok, hidden_size=64, layers=2).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    documents = [tok(text)["input_ids"] for text in list(fixture_texts())[:20]]
    (root / "prepared").mkdir()
    np.save(root / "prepared" / "valid.npy", pack_documents(documents, tok.eos_token_id, 64))
    (root / "prepared" / "meta.json").write_text(json.dumps({"tokenizer_sha256": tokenizer_fingerprint(tok)}))
    (root / "params.yaml").write_text(PARAMS)
    return root


def command(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True)


def test_stage_scores_every_fixture_task_and_writes_json_table_and_plot(workspace):
    out = workspace / "metrics"
    started = time.perf_counter()
    result = command("stages.evaluate", "--params", workspace / "params.yaml", "--model", workspace / "model",
                     "--data-dir", FIXTURES, "--valid", workspace / "prepared" / "valid.npy",
                     "--out", out / "eval.json", "--table", out / "eval.md", "--plot", out / "eval.csv")
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    print(f"evaluate stage on the fixtures: {seconds:.1f} s")

    results = json.loads((out / "eval.json").read_text())
    assert list(results["tasks"]) == list(ALL_TASKS) and results["backend"] == "hf"
    assert results["tasks"]["mt_bench"]["skipped"] == "no judge configured (evaluate.judge.url is not set)"
    for name in set(ALL_TASKS) - {"mt_bench", "perplexity"}:
        row = results["tasks"][name]
        assert 0.0 <= row["score"] <= 1.0 and row["n"] > 0 and row["backend"] == "hf", name
    assert results["tasks"]["jcommonsenseqa"]["mode"] == "loglikelihood"
    assert results["tasks"]["jsquad"]["shots"] == 4 and results["tasks"]["xlsum"]["shots"] == 1

    rows = np.load(workspace / "prepared" / "valid.npy")
    predicted = int(((rows[:, :-1] != PAD) & (rows[:, 1:] != PAD)).sum())
    perplexity = results["tasks"]["perplexity"]
    assert perplexity["n"] == predicted and perplexity["score"] == pytest.approx(math.exp(perplexity["loss"]))

    table = (out / "eval.md").read_text()
    assert "| jcommonsenseqa | exact_match (loglikelihood) | 4 | 5 |" in table and "| mt_bench | – |" in table
    with open(out / "eval.csv") as f:
        plot = list(csv.DictReader(f))
    assert [r["task"] for r in plot] == [t for t in ALL_TASKS if t not in ("perplexity", "mt_bench")]
    assert "jemhopqa: char_f1" in result.stdout   # one line per task on the console


def test_perplexity_of_a_split_made_by_another_tokenizer_is_skipped(workspace, tmp_path):
    (tmp_path / "valid.npy").write_bytes((workspace / "prepared" / "valid.npy").read_bytes())
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer_sha256": "another"}))
    tok = tokenizer()
    backend = HFBackend(tiny_model(tok), tok)
    results = evaluate(backend, ["perplexity"], FIXTURES, valid_path=tmp_path / "valid.npy", progress=no_progress)
    assert "tokenized with another tokenizer" in results["tasks"]["perplexity"]["skipped"]


def test_python_m_eval_runs_one_task_outside_dvc(workspace, tmp_path):
    result = command("eval", "--model", workspace / "model", "--tasks", "jcommonsenseqa", "--data-dir", FIXTURES,
                     "--mc-mode", "loglikelihood", "--out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "| jcommonsenseqa | exact_match (loglikelihood) | 4 | 5 |" in result.stdout
    assert list(json.loads((tmp_path / "r.json").read_text())["tasks"]) == ["jcommonsenseqa"]


@pytest.mark.parametrize("args, message", [
    (["--tasks", "jcommonsenseqa", "--data-dir", "{tmp}"], "task jcommonsenseqa: {tmp}/JCommonsenseQA/valid-v1.1.json not found"),
    (["--tasks", "jcqa"], "unknown task 'jcqa'"),
    (["--tasks", "perplexity", "--valid", "{tmp}/valid.npy"], "task perplexity: {tmp}/valid.npy not found"),
])
def test_bad_input_is_one_clear_line(workspace, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = command("eval", "--model", workspace / "model", *args)
    assert result.returncode == 1 and message.format(tmp=tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_stage_refuses_unknown_evaluate_keys(workspace, tmp_path):
    params = yaml.safe_load(PARAMS)
    params["evaluate"]["batchsize"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = command("stages.evaluate", "--params", tmp_path / "params.yaml", "--model", workspace / "model",
                     "--data-dir", FIXTURES, "--out", tmp_path / "e.json", "--table", tmp_path / "e.md",
                     "--plot", tmp_path / "e.csv")
    assert result.returncode == 1 and "unknown keys ['batchsize']" in result.stderr
    assert "Traceback" not in result.stderr
