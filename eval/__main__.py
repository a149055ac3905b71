"""python -m eval: Japanese benchmarks on a model, outside DVC.

    python -m eval --model models/student --tasks jcommonsenseqa --data-dir eval/fixtures
    python -m eval --model models/student --tasks all --data-dir eval/fixtures --valid data/prepared/valid.npy \
        --params params.yaml --out eval.json --table eval.md
    python -m eval --compare metrics/eval.json metrics/eval-q8_0.json      # per-task score deltas
"""
import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from eval.backends import BACKENDS
from eval.data import DataError
from eval.report import comparison_table, load_results, markdown_table
from eval.runner import evaluate_with_settings
from eval.tasks import ALL_TASKS
from eval.tasks.base import MODES, REGISTRY


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (hf) or .gguf file (gguf)")
    parser.add_argument("--tasks", default="all", help=f"comma-separated tasks or 'all' ({', '.join(ALL_TASKS)})")
    parser.add_argument("--data-dir", default="eval/fixtures", help="folder holding the benchmarks' files")
    parser.add_argument("--valid", help="packed validation split for perplexity (data/prepared/valid.npy)")
    parser.add_argument("--params", help="params file whose 'evaluate' section to use (default: Swallow's settings)")
    parser.add_argument("--backend", choices=BACKENDS, help="overrides evaluate.backend (default hf)")
    parser.add_argument("--mc-mode", choices=MODES, help="scoring of multiple-choice tasks, overriding the params")
    parser.add_argument("--limit", type=int, help="at most this many items per task")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--out", help="results JSON to write")
    parser.add_argument("--table", help="Markdown table to write")
    parser.add_argument("--compare", nargs="+", metavar="RESULTS",
                        help="instead of evaluating: per-task score deltas of the 2nd.. results files against the 1st")
    return parser.parse_args(argv)


def settings_from(args):
    settings = {}
    if args.params:
        with open(args.params, encoding="utf-8") as f:
            settings = dict((yaml.safe_load(f) or {}).get("evaluate") or {})
    settings["tasks"] = {name: dict(s or {}) for name, s in (settings.get("tasks") or {}).items()}
    for key in ("backend", "limit", "batch_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.mc_mode:
        for name, task in REGISTRY.items():
            if getattr(task, "multiple_choice", False):
                settings["tasks"].setdefault(name, {})["mode"] = args.mc_mode
    return settings


def main(argv=None):
    args = parse_arguments(argv)
    if args.compare:
        if len(args.compare) < 2:
            raise DataError("--compare needs a base results file and at least one other")
        base = load_results(args.compare[0])
        print(comparison_table(base, {path: load_results(path) for path in args.compare[1:]}), end="")
        return
    if not args.model:
        raise DataError("--model is required (a model directory, or a .gguf file with --backend gguf)")
    tasks = list(ALL_TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    results = evaluate_with_settings(settings_from(args), args.model, args.data_dir, tasks=tasks,
                                     valid_path=Path(args.valid) if args.valid else None)
    table = markdown_table(results)
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as error:   # DataError is a ValueError
        if os.environ.get("TSUBAME_TRACEBACK"):
            raise
        print(f"eval failed: {error}", file=sys.stderr)
        sys.exit(1)
