"""Stage `model_card`: the Hugging Face README.md of the exported model.

    python -m stages.model_card --out models/export/README.md --eval metrics/eval.json \\
        --export-metrics metrics/export_gguf.json metrics/export_mlc/q4f16_1.json metrics/export_mlc/q4f32_1.json

Reads params.yaml (lineage; the optional `model_card` section: model_name, repo_id, license, base_model,
language, tags, description) and whichever metrics files exist; a missing one is stated in the card.
"""
from pathlib import Path

from export.model_card import model_card
from stages.common import stage_main


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="README.md to write")
    parser.add_argument("--eval", help="results of the evaluate stage (metrics/eval.json)")
    parser.add_argument("--export-metrics", nargs="*", default=[], help="export metrics files (GGUF, MLC)")


def run(args, params):
    card = model_card(params, args.eval, args.export_metrics)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card, encoding="utf-8")
    print(f"model card → {out} ({len(card.splitlines())} lines)")


if __name__ == "__main__":
    stage_main("model_card", __doc__, add_arguments, run)
