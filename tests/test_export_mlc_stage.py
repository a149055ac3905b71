"""The export_mlc stage as a command (outputs, metrics, clear failures) and the web page's appConfig
against the files the exporter writes (its app-config.js run under node)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from taid.vocab import load_tokenizer
from taid.data import PAD
from tests.test_export_mlc import grid_model, tokenizer_dir  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "export" / "web"


def write_params(path, **export_mlc):
    settings = {"name": "demo", "verify": {"rows": 4, "min_top1_agreement": 0.85, "tvm_reader": True}}
    settings.update(export_mlc)
    path.write_text(yaml.safe_dump({"export": {"mlc": settings}}))
    return path


def write_valid(path, model_dir):
    tokenizer = load_tokenizer(model_dir)
    rows = np.full((3, 24), PAD, dtype=np.int32)
    for i, text in enumerate(["猫が庭で寝ています。今日は良い天気です。", "東京から大阪まで新幹線で行きます。",
                              "図書館で本を三冊借りました。駅の前に新しい店ができました。"]):
        ids = tokenizer(text)["input_ids"][:24]
        rows[i, :len(ids)] = ids
    np.save(path, rows)
    return path


def stage(tmp_path, model, params, *extra, quant="q4f32_1"):
    command = [sys.executable, "-m", "stages.export_mlc", "--params", str(params), "--model", str(model),
               "--out", str(tmp_path / "export" / f"mlc-{quant}"), "--quant", quant,
               "--metrics", str(tmp_path / "metrics" / f"{quant}.json"), *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_stage_writes_a_verified_export_and_its_metrics(grid_model, tmp_path):  # noqa: F811
    params = write_params(tmp_path / "params.yaml", generation={"temperature": 0.6})
    done = stage(tmp_path, grid_model, params, "--valid", str(write_valid(tmp_path / "valid.npy", grid_model)))
    assert done.returncode == 0, done.stderr
    for line in ("check index: ok", "check weights: ok", "check forward: ok", "check tvm_reader: ok",
                 "check chat_template: ok", "model library: compile with", "mlc_llm is not installed"):
        assert line in done.stdout
    out = tmp_path / "export" / "mlc-q4f32_1"
    metrics = json.loads((tmp_path / "metrics" / "q4f32_1.json").read_text())
    entry = metrics["quantizations"]["q4f32_1"]
    assert metrics["format"] == "mlc" and entry["held_out"].endswith("valid.npy")
    assert entry["checks"]["forward"]["rows"] == 3 and entry["checks"]["forward"]["positions"] > 10
    assert entry["top1_agreement"] == 1.0 and entry["perplexity_drift"] == 0.0   # the model is on the grid
    assert entry["size_bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert entry["library"]["compile_command"].endswith(f"-o {out}/demo-q4f32_1-webgpu.wasm")
    assert set(entry["seconds"]) == {"export", "verify"}
    assert json.loads((out / "mlc-chat-config.json").read_text())["temperature"] == 0.6
    assert not list((tmp_path / "export").glob(".*partial"))


@pytest.mark.parametrize("case,message", [
    ("no_model", "stage export_mlc failed: {tmp}/nowhere: not a model directory (no config.json)"),
    ("unknown_key", "stage export_mlc failed: export.mlc: unknown keys ['shard_size']; known: name, f32_format"),
    ("failed_check", "stage export_mlc failed: q4f32_1: checks failed: forward (details in "),
])
def test_bad_input_and_failed_checks_are_one_clear_line(grid_model, tmp_path, case, message):  # noqa: F811
    model, params = grid_model, write_params(tmp_path / "params.yaml")
    if case == "no_model":
        model = tmp_path / "nowhere"
    elif case == "unknown_key":
        params = write_params(tmp_path / "params.yaml", shard_size=1)
    else:   # no model reaches a top-1 agreement above 1
        params = write_params(tmp_path / "params.yaml", verify={"rows": 2, "min_top1_agreement": 1.01})
    done = stage(tmp_path, model, params)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(message.format(tmp=tmp_path))
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "export" / "mlc-q4f32_1").exists()   # an export that failed is never published


# -- the web page

def js_constant(name):
    text = (WEB / "app-config.js").read_text()
    return json.loads(re.search(rf"export const {name} = (.+);", text).group(1))


def build_app_config(descriptor, page_url, stock):
    script = (f"import {{ buildAppConfig }} from {json.dumps((WEB / 'app-config.js').as_uri())};"
              f"console.log(JSON.stringify(buildAppConfig({json.dumps(descriptor)}, {json.dumps(page_url)}, "
              f"{json.dumps(stock)})));")
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_page_reads_files_the_exporter_writes(grid_model, tmp_path):  # noqa: F811
    from export.mlc import export_mlc
    summary = export_mlc(grid_model, tmp_path / "mlc", "q4f16_1")
    for file in [js_constant("DESCRIPTOR_FILE"), *js_constant("MODEL_FILES")]:
        assert (tmp_path / "mlc" / file).is_file(), file
    descriptor = json.loads((tmp_path / "mlc" / js_constant("DESCRIPTOR_FILE")).read_text())
    stock = {"modelLibURLPrefix": "https://libs.example/", "modelVersion": "v0_2_86/base"}
    config = build_app_config(descriptor, "http://localhost:8000/index.html", stock)
    (record,) = config["model_list"]
    assert record["model"] == "http://localhost:8000/model/resolve/main/"
    assert js_constant("MODEL_PATH") == "model/resolve/main/"
    # the library the printed compile command writes, beside the weights
    built = summary["library"]["compile_command"].split(" -o ")[1].rsplit("/", 1)[1]
    assert record["model_lib"] == f"http://localhost:8000/model/resolve/main/{built}"
    assert (record["model_id"], record["overrides"], record["required_features"]) == (
        "tsubame-q4f16_1", {"context_window_size": 256}, ["shader-f16"])
    stock_descriptor = dict(descriptor, model_lib={"stock": "Qwen2-1.5B-Instruct-q4f32_1_cs1k-webgpu.wasm"})
    (record,) = build_app_config(stock_descriptor, "http://localhost:8000/", stock)["model_list"]
    assert record["model_lib"] == "https://libs.example/v0_2_86/base/Qwen2-1.5B-Instruct-q4f32_1_cs1k-webgpu.wasm"


def test_the_page_loads_the_pinned_webllm_package():
    package = json.loads((WEB / "package.json").read_text())
    version = package["dependencies"]["@mlc-ai/web-llm"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin an exact version"
    html = (WEB / "index.html").read_text()
    imports = json.loads(re.search(r'<script type="importmap">(.+?)</script>', html, re.S).group(1))["imports"]
    assert imports == {"@mlc-ai/web-llm": "./node_modules/@mlc-ai/web-llm/lib/index.js"}
    main = (WEB / "main.js").read_text()
    assert 'from "@mlc-ai/web-llm"' in main and 'from "./app-config.js"' in main
    assert '<script type="module" src="./main.js">' in html
