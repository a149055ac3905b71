"""The export_gguf stage as a command: files, checksums and metrics of a passing export; a failing check fails
it with one line after the metrics are written; an earlier F16 export is quantized only when its checksum
holds; the params section refuses what it does not know."""
import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from export.gguf_pipeline import GGUFSettings, export_gguf
from export.gguf_verify import VerificationError
from tests.test_export_gguf_support import REPO, model_dir, sentencepiece_tokenizer_dir

VALID = REPO / "data" / "sample" / "valid.jsonl.gz"
SETTINGS = {"name": "tiny", "heldout": str(VALID), "heldout_tokens": 512, "n_ctx": 64, "generation_tokens": 8,
            "threads": 1}


def run_stage(tmp_path, model, *extra):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"export": {"gguf": SETTINGS}}), encoding="utf-8")
    command = [sys.executable, "-m", "stages.export_gguf", "--params", str(params), "--model", str(model),
               "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics.json"), *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_stage_writes_verified_files_their_checksums_and_metrics(tmp_path):
    model, _, _ = model_dir(tmp_path, sentencepiece_tokenizer_dir())
    done = run_stage(tmp_path, model, "--quant", "q8_0", "q4_k_m")
    assert done.returncode == 0, done.stderr
    assert "stage export_gguf: done" in done.stdout
    names = ["tiny-f16.gguf", "tiny-q8_0.gguf", "tiny-q4_k_m.gguf"]
    sums = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{hashlib.sha256((tmp_path / 'out' / n).read_bytes()).hexdigest()}  {n}" for n in names]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["failures"] == []
    assert list(metrics["files"]) == ["f16", "q8_0", "q4_k_m"]
    f16, q4 = metrics["files"]["f16"], metrics["files"]["q4_k_m"]
    assert f16["top1_agreement"] >= 0.99 and f16["max_abs_logit_diff"] < 2e-2
    assert f16["perplexity"] == pytest.approx(f16["hf_perplexity"], rel=1e-3)
    assert all(m["tokenizer"]["mismatches"] == 0 and m["chat_template"] == "same" for m in metrics["files"].values())
    assert abs(metrics["files"]["q8_0"]["ppl_drift_vs_f16"]) < 0.01 and abs(q4["ppl_drift_vs_f16"]) < 0.1
    assert q4["fallbacks"] and set(q4["fallbacks"]) <= {"Q4_K→Q5_0", "Q6_K→Q8_0"}   # rows of 64 hold no K-quant
    assert isinstance(q4["generation"], str)
    assert metrics["heldout"] == {"source": str(VALID), "tokens": 512, "n_ctx": 64}
    assert {"convert_f16_s", "quantize_q8_0_s", "quantize_q4_k_m_s", "verify_s"} <= set(metrics["timing"])


def test_a_failed_check_fails_the_stage_in_one_line_after_the_metrics_are_written(tmp_path):
    model, _, _ = model_dir(tmp_path, sentencepiece_tokenizer_dir(prefix_space=True))
    done = run_stage(tmp_path, model, "--quant", "q8_0")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("stage export_gguf failed: ") and "tiny-f16.gguf: tokenizer: " in last
    assert "the likely cause: " in last and "add_prefix_space=False" in last
    assert "Traceback" not in done.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["failures"] and metrics["files"]["f16"]["tokenizer"]["mismatches"] > 0


def test_an_earlier_f16_export_is_quantized_only_while_its_checksum_holds(tmp_path):
    model, _, _ = model_dir(tmp_path, sentencepiece_tokenizer_dir())
    settings = GGUFSettings.from_params({**SETTINGS, "quants": []})
    metrics, failures = export_gguf(model, tmp_path / "f16", settings, log=lambda line: None)
    assert failures == [] and list(metrics["files"]) == ["f16"]
    quant_settings = GGUFSettings.from_params({**SETTINGS, "quants": ["q8_0"]})
    metrics, failures = export_gguf(model, tmp_path / "q8_0", quant_settings, f16_from=tmp_path / "f16",
                                    log=lambda line: None)
    assert failures == [] and sorted(p.name for p in (tmp_path / "q8_0").iterdir()) == ["SHA256SUMS", "tiny-q8_0.gguf"]
    assert "ppl_drift_vs_f16" in metrics["files"]["q8_0"]
    with open(tmp_path / "f16" / "tiny-f16.gguf", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(VerificationError, match="tiny-f16.gguf: content changed since export"):
        export_gguf(model, tmp_path / "again", quant_settings, f16_from=tmp_path / "f16", log=lambda line: None)


@pytest.mark.parametrize("section,message", [
    ({"type": ["f16"]}, r"unknown key\(s\) type; known: .*types"),
    ({"quants": ["q3_k"]}, "unknown GGUF quantization 'q3_k'; supported: q4_k_m, q5_k_m, q8_0"),
    ({"types": ["f32"]}, "quantizations are made from the f16 file"),
    ({"max_ppl_drift": {"q8_0": 0.01}}, "max_ppl_drift has no limit for q5_k_m"),
])
def test_the_params_section_refuses_what_it_does_not_know(section, message):
    with pytest.raises(ValueError, match=message):
        GGUFSettings.from_params(section)
