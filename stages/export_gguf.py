"""Stage `export_gguf`: the model as GGUF files for llama.cpp (F16, then Q8_0, Q5_K_M, Q4_K_M by llama.cpp's
quantizer), each verified in llama.cpp against the Hugging Face model: token ids, chat template, logits
(F16), perplexity and its drift per quantization, a greedy chat reply.

Writes the files and their SHA256SUMS to ``--out`` and the results to ``--metrics``; a failed check fails
the stage after the metrics are written. ``--f16 DIR`` quantizes an F16 export made earlier (one DVC stage
per quantization) instead of converting again.
"""
from export.gguf_pipeline import GGUFSettings, export_gguf
from stages.common import StageError, atomic_dir, section, stage_main, write_json


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="Hugging Face model directory (config.json, safetensors)")
    parser.add_argument("--out", required=True, help="folder for the .gguf files")
    parser.add_argument("--metrics", required=True, help="results JSON (a DVC metric)")
    parser.add_argument("--tokenizer", help="tokenizer directory when not in --model (and its tokenizer.model)")
    parser.add_argument("--quant", nargs="*", help="quantizations to make (default: export.gguf.quants)")
    parser.add_argument("--f16", help="folder of an earlier F16 export to quantize instead of converting")


def run(args, params):
    settings = GGUFSettings.from_params(section(section(params, "export"), "gguf", "params.yaml: export"))
    if args.quant is not None:
        settings.quants = args.quant
    if args.f16 is not None:
        settings.types = ["f16"]
    settings.check("--quant" if args.quant is not None else "params.yaml: export.gguf")
    with atomic_dir(args.out) as out:
        metrics, failures = export_gguf(args.model, out, settings, tokenizer_dir=args.tokenizer, f16_from=args.f16)
    metrics["failures"] = failures
    write_json(args.metrics, metrics)
    if failures:
        raise StageError(f"{len(failures)} GGUF check(s) failed (see {args.metrics}): " + "; ".join(failures))


if __name__ == "__main__":
    stage_main("export_gguf", __doc__, add_arguments, run)
