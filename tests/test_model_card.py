"""The model card from hand-made params and metrics files, checked against the lines it must contain; missing
inputs are stated in the card; the stage as a command."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from export.model_card import lineage_rows, model_card

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "teacher": {"model": "Qwen/Qwen2.5-32B-Instruct"},
    "corpus": {"sources": [{"name": "wiki", "type": "hf", "dataset": "someone/ja-wiki"},
                           {"name": "web", "type": "warc", "path": "data/web.warc.gz"}]},
    "chat": {"sources": [{"name": "chat", "path": "data/chat/train.jsonl", "format": "messages"}]},
    "distill": {"student": "Qwen/Qwen2.5-1.5B-Instruct", "loss": "taid", "ce_weight": 0.0,
                "taid": {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "adaptive": True},
                "teacher": {"source": "Qwen/Qwen2.5-32B-Instruct", "mode": "cache", "cache": {"k": 64}}},
    "instruct": {"method": "distill", "loss": "forward_kl", "ce_weight": 0.5,
                 "teacher": {"source": "Qwen/Qwen2.5-7B-Instruct", "mode": "live"}},
    "model_card": {"model_name": "TinyTsubame-1.5B", "repo_id": "someone/TinyTsubame-1.5B",
                   "license": "apache-2.0", "tags": ["webllm"]},
}
EVAL = {"model": "models/instruct", "backend": "hf", "tasks": {
    "jcommonsenseqa": {"score": 0.5, "n": 4, "shots": 4, "metric": "exact_match", "mode": "loglikelihood"},
    "niilc": {"score": 0.25, "n": 8, "shots": 4, "metric": "char_f1"},
    "mt_bench": {"skipped": "no judge configured"}}}
GGUF = {"format": "gguf", "quantizations": {
    "Q8_0": {"size_bytes": 1_717_986_918, "perplexity": 12.5, "perplexity_reference": 12.0, "perplexity_drift": 0.5},
    "Q4_K_M": {"size_bytes": 986_000_000, "perplexity": 13.0, "perplexity_reference": 12.0, "perplexity_drift": 1.0}}}
MLC = {"format": "mlc", "quantizations": {"q4f32_1": {
    "size_bytes": 1_479_465, "perplexity": 12.827532, "perplexity_reference": 12.716123, "perplexity_drift": 0.111409,
    "top1_agreement": 0.921875, "library": {"stock": "Qwen2-1.5B-Instruct-q4f32_1_cs1k-webgpu.wasm"}}}}


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture
def card(tmp_path):
    return model_card(PARAMS, write(tmp_path / "eval.json", EVAL),
                      [write(tmp_path / "gguf.json", GGUF), write(tmp_path / "mlc.json", MLC)])


def test_front_matter(card):
    head = card.split("---\n")[1]
    assert yaml.safe_load(head) == {
        "license": "apache-2.0", "language": ["ja"], "base_model": ["Qwen/Qwen2.5-1.5B-Instruct"],
        "pipeline_tag": "text-generation", "library_name": "transformers",
        "tags": ["japanese", "distillation", "taid", "tsubame", "gguf", "mlc", "webllm"]}
    assert card.startswith("---\n") and "\n# TinyTsubame-1.5B\n" in card


def test_lineage_names_teachers_init_data_losses_and_schedule(card):
    assert ("| distill (TAID continued pre-training) | `Qwen/Qwen2.5-32B-Instruct (cache)` | `Qwen/Qwen2.5-1.5B-Instruct` "
            "| wiki (`someone/ja-wiki`), web (`data/web.warc.gz`) | taid | adaptive, t 0.4 → 1.0, α 0.0005, β 0.99 |"
            ) in card
    assert ("| instruct (instruction tuning) | `Qwen/Qwen2.5-7B-Instruct (live)` | `the distilled student` "
            "| chat (`data/chat/train.jsonl`) | forward_kl + 0.5 × cross-entropy | – |") in card
    assert "no `instruct` stage" not in card


def test_evaluation_table(card):
    assert "| jcommonsenseqa | exact_match (loglikelihood) | 4 | 4 | 0.5000 |" in card
    assert "| niilc | char_f1 | 4 | 8 | 0.2500 |" in card
    assert "| mt_bench | – | – | – | skipped: no judge configured |" in card


def test_quantization_table(card):
    # 1,717,986,918 B = 1.6 GiB; drift 0.5 on 12.0 = +4.17 %; 1,479,465 B = 1.4 MiB; 0.111409 / 12.716123 = +0.88 %
    assert "| GGUF | Q8_0 | 1.6 GiB | 12.500 | +0.500 (+4.17%) | – |" in card
    assert "| GGUF | Q4_K_M | 940.3 MiB | 13.000 | +1.000 (+8.33%) | – |" in card
    assert "| MLC | q4f32_1 | 1.4 MiB | 12.828 | +0.111 (+0.88%) | 0.9219 |" in card
    assert "Missing:" not in card


def test_usage_snippets(card):
    assert 'AutoModelForCausalLM.from_pretrained("someone/TinyTsubame-1.5B")' in card
    assert "llama-cli -hf someone/TinyTsubame-1.5B-GGUF:Q8_0 -cnv" in card
    assert 'model: "https://huggingface.co/someone/TinyTsubame-1.5B-q4f32_1-MLC",' in card
    assert ('model_lib: webllm.modelLibURLPrefix + webllm.modelVersion + '
            '"/Qwen2-1.5B-Instruct-q4f32_1_cs1k-webgpu.wasm",') in card
    assert card.rstrip().endswith("## License\n\napache-2.0.")


def test_missing_inputs_are_stated_not_fatal(tmp_path):
    params = {"distill": {"student": "configs/models/student-tiny.json", "loss": "forward_kl"}}
    card = model_card(params, tmp_path / "eval.json", [tmp_path / "export_gguf.json",
                                                      write(tmp_path / "odd.json", {"sizes": {}})])
    assert f"No evaluation results: {tmp_path}/eval.json not found." in card
    assert "No export metrics found." in card
    assert f"Missing: {tmp_path}/export_gguf.json not found; {tmp_path}/odd.json has no 'quantizations' table." in card
    assert "| distill (TAID continued pre-training) | not recorded in params.yaml |" in card
    assert "| not recorded in params.yaml | forward_kl | – |" in card
    assert "Instruction tuning: no `instruct` stage in params.yaml" in card
    assert "No license is set (`model_card.license` in params.yaml)" in card
    assert "base_model" not in card.split("---\n")[1]          # a config JSON is no hub model
    assert "license: other" in card


def test_unknown_card_settings_are_refused():
    with pytest.raises(ValueError, match=r"model_card: unknown keys \['licence'\]"):
        model_card({"model_card": {"licence": "mit"}})


def test_stage_writes_the_card(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, allow_unicode=True))
    done = subprocess.run([sys.executable, "-m", "stages.model_card", "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "card" / "README.md"), "--eval", str(tmp_path / "none.json"),
                           "--export-metrics", str(write(tmp_path / "mlc.json", MLC))],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    card = (tmp_path / "card" / "README.md").read_text()
    assert "| MLC | q4f32_1 | 1.4 MiB |" in card and "No evaluation results" in card


def test_a_teacher_stage_directory_is_shown_as_the_model_it_records_and_sft_has_no_teacher(tmp_path):
    (tmp_path / "teacher.json").write_text(json.dumps({"source": "Qwen/Qwen2.5-32B-Instruct"}))
    params = {**PARAMS, "distill": {**PARAMS["distill"], "teacher": {"source": str(tmp_path), "mode": "live"}},
              "instruct": {**PARAMS["instruct"], "method": "sft"}}
    rows = {stage.split()[0]: teacher for stage, teacher, *_ in lineage_rows(params)}
    assert rows == {"distill": "Qwen/Qwen2.5-32B-Instruct (live)", "instruct": "none (SFT)"}
