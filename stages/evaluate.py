"""Stage `evaluate`: the Japanese benchmarks (Swallow conventions) on a model, from local files.

Writes ``metrics/eval.json`` (task → score, n, shots, metric, backend; skipped tasks with the reason),
a Markdown table for the model card and a CSV of the scores for ``dvc plots`` comparing runs.
"""
from pathlib import Path

from eval.report import comparison_table, load_results, markdown_table, plot_rows
from eval.runner import evaluate_with_settings
from stages.common import section, stage_main, write_csv, write_json, write_text


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="model directory (hf backend) or .gguf file (gguf)")
    parser.add_argument("--data-dir", required=True, help="folder with the benchmarks' files (eval/fixtures)")
    parser.add_argument("--valid", help="packed validation split for the perplexity task")
    parser.add_argument("--out", required=True, help="results JSON (a DVC metric)")
    parser.add_argument("--table", required=True, help="Markdown table for the model card")
    parser.add_argument("--plot", required=True, help="CSV of task scores for dvc plots")
    parser.add_argument("--backend", choices=("hf", "gguf"), help="overrides evaluate.backend (gguf: a .gguf file)")
    parser.add_argument("--compare-to", help="results of the unquantized model: the table then shows per-task deltas")


def run(args, params):
    settings = dict(section(params, "evaluate"))
    if args.backend:
        settings["backend"] = args.backend
    results = evaluate_with_settings(settings, args.model, args.data_dir,
                                     valid_path=Path(args.valid) if args.valid else None)
    write_json(args.out, results)
    table = markdown_table(results)
    if args.compare_to:
        table += "\n" + comparison_table(load_results(args.compare_to), {Path(args.model).name: results})
    write_text(args.table, table)
    write_csv(args.plot, plot_rows(results), ["task", "metric", "score"])
    print(table, end="")


if __name__ == "__main__":
    stage_main("evaluate", __doc__, add_arguments, run)
