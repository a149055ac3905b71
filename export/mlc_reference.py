"""mlc_llm itself as the reference, where it is installed (it is not on PyPI): run its convert_weight and
gen_config on the same model and compare their output with ours, tensor by tensor and key by key."""
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from export.mlc_cache import load_tensors
from export.mlc_config import rope_theta
from export.mlc_format import CHAT_CONFIG_FILE, get_quantization
from export.mlc_quant import unpack_codes

COMPARED_CONFIG_KEYS = ("model_type", "quantization", "vocab_size", "context_window_size", "tokenizer_files")


def mlc_llm_installed():
    return importlib.util.find_spec("mlc_llm") is not None


def mlc_llm_commands(model_dir, quant, out_dir, program=("mlc_llm",)):
    """convert_weight and gen_config as mlc_llm's CLI takes them."""
    base = list(program)
    return [base + ["convert_weight", str(model_dir), "--quantization", quant, "--model-type", "qwen2",
                    "--device", "cpu", "-o", str(out_dir)],
            base + ["gen_config", str(model_dir), "--quantization", quant, "--model-type", "qwen2",
                    "--conv-template", "qwen2", "-o", str(out_dir)]]


def source_with_rope_theta(model_dir, work_dir):
    """mlc_llm's qwen2 config needs rope_theta at the top of config.json, where transformers 5 keeps it
    under rope_parameters: a copy of the directory (links) with it put back."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if "rope_theta" in config:
        return model_dir
    source = Path(work_dir) / "source"
    source.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.name != "config.json" and not (source / path.name).exists():
            (source / path.name).symlink_to(path.resolve())
    config["rope_theta"] = rope_theta(config)
    (source / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return source


def run_mlc_llm(model_dir, quant, out_dir):
    model_dir = source_with_rope_theta(model_dir, Path(out_dir).parent / f"{Path(out_dir).name}-source")
    for command in mlc_llm_commands(model_dir, quant, out_dir, program=(sys.executable, "-m", "mlc_llm")):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return Path(out_dir)


def compare_caches(ours_dir, reference_dir, quant):
    """Names, shapes and dtypes must agree; per quantized tensor the share of equal 4-bit codes and the
    largest difference of the dequantized weights (codes differ where w / s + 7 sits on a rounding tie
    that another arithmetic breaks the other way); plain tensors by max |Δ|."""
    spec = get_quantization(quant)
    ours, theirs = load_tensors(ours_dir), load_tensors(reference_dir)
    report = {"only_ours": sorted(set(ours) - set(theirs)), "only_reference": sorted(set(theirs) - set(ours)),
              "layout_differs": [], "tensors": {}}
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name], theirs[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            report["layout_differs"].append(f"{name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        elif name.endswith(".q_weight"):
            codes_a, codes_b = unpack_codes(a, spec.elems_per_word), unpack_codes(b, spec.elems_per_word)
            report["tensors"][name] = {"equal_codes": float(np.mean(codes_a == codes_b)),
                                       "max_code_diff": int(np.abs(codes_a.astype(int) - codes_b).max())}
        else:
            report["tensors"][name] = {"max_abs_diff": float(np.abs(a.astype(np.float64) - b).max())}
    codes = [t["equal_codes"] for t in report["tensors"].values() if "equal_codes" in t]
    report["equal_codes_min"] = min(codes) if codes else None
    report["passed"] = not (report["only_ours"] or report["only_reference"] or report["layout_differs"])
    return report


def compare_chat_configs(ours_dir, reference_dir):
    ours, theirs = (json.loads((Path(d) / CHAT_CONFIG_FILE).read_text(encoding="utf-8"))
                    for d in (ours_dir, reference_dir))
    differing = {key: {"ours": ours.get(key), "mlc_llm": theirs.get(key)} for key in COMPARED_CONFIG_KEYS
                 if ours.get(key) != theirs.get(key)}
    shared = set(ours["model_config"]) & set(theirs["model_config"])
    differing.update({f"model_config.{key}": {"ours": ours["model_config"][key],
                                              "mlc_llm": theirs["model_config"][key]}
                      for key in sorted(shared) if ours["model_config"][key] != theirs["model_config"][key]})
    return {"passed": not differing, "differing": differing}


def mlc_llm_reference(model_dir, quant, ours_dir, work_dir):
    """The comparison with mlc_llm's own output, or a note saying it is not installed."""
    if not mlc_llm_installed():
        commands = mlc_llm_commands(model_dir, quant, "<reference folder>")
        return {"ran": False, "note": "mlc_llm is not installed (it is not on PyPI); with it, the reference is "
                + " && ".join(shlex.join(c) for c in commands)}
    reference = run_mlc_llm(model_dir, quant, work_dir)
    return {"ran": True, "weights": compare_caches(ours_dir, reference, quant),
            "chat_config": compare_chat_configs(ours_dir, reference)}
