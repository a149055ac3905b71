"""Stage `export_mlc`: a Qwen2 model as an MLC (WebLLM) folder in one quantization, verified.

    python -m stages.export_mlc --model models/instruct --out models/export/mlc-q4f16_1 --quant q4f16_1 \\
        --valid data/prepared/valid.npy --metrics metrics/export_mlc/q4f16_1.json

Writes the folder (shards, tensor-cache.json and ndarray-cache.json, mlc-chat-config.json, tokenizer
files, webllm.json), reads it back and checks it (export/mlc_verify.py), and fails when a check fails.
The metrics file holds sizes, perplexity drift, top-1 agreement, every check and the model library plan.
"""
import tempfile
import time
from pathlib import Path

import numpy as np

from export.mlc import export_mlc
from taid.vocab import load_tokenizer
from export.mlc_format import QUANTIZATIONS
from export.mlc_reference import mlc_llm_reference
from export.mlc_verify import failed_checks, verify_mlc
from stages.common import StageError, atomic_dir, section, stage_main, write_json
from taid.data import PAD, load_packed

SETTINGS = ("name", "f32_format", "context_window_size", "prefill_chunk_size", "system_message", "generation",
            "verify", "mlc_llm_reference")
VERIFY_SETTINGS = ("rows", "min_top1_agreement", "tvm_reader")
# held-out text when no packed validation split is given
FALLBACK_TEXTS = ["吾輩は猫である。名前はまだ無い。", "東京から大阪まで新幹線で二時間半ほどかかります。",
                  "明日の天気は晴れのち曇り、夕方から雨が降るでしょう。", "図書館で日本の歴史についての本を三冊借りました。"]


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="Hugging Face model directory (Qwen2)")
    parser.add_argument("--out", required=True, help="MLC model folder to write")
    parser.add_argument("--quant", required=True, choices=sorted(QUANTIZATIONS))
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--valid", help="packed validation split (.npy) for the forward check")


def held_out_rows(valid_path, model_dir, n_rows):
    """Token rows for the forward check: the first ``n_rows`` rows of the packed split, padding removed,
    or a few Japanese sentences tokenized by the model's tokenizer."""
    if valid_path:
        if not Path(valid_path).is_file():
            raise StageError(f"validation split {valid_path} not found")
        packed = load_packed(valid_path)
        return [np.asarray(row[row != PAD]) for row in packed[:n_rows]], str(valid_path)
    tokenizer = load_tokenizer(model_dir)
    return [np.asarray(tokenizer(text)["input_ids"]) for text in FALLBACK_TEXTS], "built-in sentences"


def checked(settings, known, where):
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise StageError(f"{where}: unknown keys {unknown}; known: {', '.join(known)}")
    return settings


def run(args, params):
    settings = checked(section(section(params, "export"), "mlc", "params.yaml: export"), SETTINGS, "export.mlc")
    verify = checked(settings.get("verify") or {}, VERIFY_SETTINGS, "export.mlc.verify")
    if not (Path(args.model) / "config.json").is_file():
        raise StageError(f"{args.model}: not a model directory (no config.json)")
    rows, text_source = held_out_rows(args.valid, args.model, int(verify.get("rows", 16)))
    with atomic_dir(args.out) as out:
        started = time.perf_counter()
        summary = export_mlc(args.model, out, args.quant, final_dir=args.out, name=settings.get("name", "tsubame"),
                             f32_format=settings.get("f32_format", "f32-to-bf16"),
                             context_window_size=settings.get("context_window_size"),
                             prefill_chunk_size=settings.get("prefill_chunk_size"),
                             system_message=settings.get("system_message"), generation=settings.get("generation"))
        exported = time.perf_counter()
        checks = verify_mlc(args.model, out, args.quant, rows,
                            min_top1_agreement=float(verify.get("min_top1_agreement", 0.85)),
                            tvm_reader=bool(verify.get("tvm_reader", True)))
        verified = time.perf_counter()
        reference = None
        if settings.get("mlc_llm_reference", True):
            with tempfile.TemporaryDirectory() as scratch:
                reference = mlc_llm_reference(args.model, args.quant, out, Path(scratch) / "mlc_llm")
        entry = dict(summary, held_out=text_source, **_forward_figures(checks), checks=checks, mlc_llm=reference,
                     seconds={"export": round(exported - started, 2), "verify": round(verified - exported, 2)})
        write_json(args.metrics, {"format": "mlc", "model": str(args.model), "quantizations": {args.quant: entry}})
        report(args.quant, entry)
        failed = failed_checks(checks)
        if failed:
            raise StageError(f"{args.quant}: checks failed: {', '.join(failed)} (details in {args.metrics})")


def _forward_figures(checks):
    forward = checks.get("forward", {})
    return {key: forward[key] for key in ("perplexity", "perplexity_reference", "perplexity_drift",
                                          "top1_agreement", "max_abs_logit_diff") if key in forward}


def report(quant, entry):
    print(f"{quant}: {entry['tensors']} tensors in {entry['shards']} shard(s), {entry['size_bytes']:,} bytes, "
          f"{entry['bits_per_param']} bits/parameter")
    for name, result in entry["checks"].items():
        note = f" ({result['note']})" if "note" in result else ""
        print(f"  check {name}: {'ok' if result['passed'] else 'FAILED'}{note}")
    if "top1_agreement" in entry:
        print(f"  top-1 agreement {entry['top1_agreement']:.4f}, max |Δlogit| {entry['max_abs_logit_diff']:.4f}, "
              f"perplexity {entry['perplexity']:.3f} vs {entry['perplexity_reference']:.3f} "
              f"({entry['perplexity_drift']:+.3f}) on {entry['held_out']}")
    library = entry["library"]
    if "stock" in library:
        print(f"  model library: stock WebLLM {library['stock']} (shapes match; no compile needed)")
    else:
        print(f"  model library: compile with\n    {library['compile_command']}")
    if entry["mlc_llm"] is not None and not entry["mlc_llm"]["ran"]:
        print(f"  {entry['mlc_llm']['note']}")


if __name__ == "__main__":
    stage_main("export_mlc", __doc__, add_arguments, run)
