"""Results as a model-card table, as CSV rows for a DVC plot, and compared between a model and its exports."""
import json
from pathlib import Path

from eval.data import DataError


def load_results(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"results file {path} not found")
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results.get("tasks"), dict):
        raise DataError(f"{path}: not a results file (no 'tasks')")
    return results


def scored(results):
    """(task, row) of the tasks that ran, in results order."""
    return [(name, row) for name, row in results["tasks"].items() if "score" in row]


def markdown_table(results):
    lines = [f"Model `{results.get('model', '')}`, backend `{results.get('backend', '')}`.", "",
             "| task | metric | shots | n | score |", "|---|---|---:|---:|---:|"]
    for name, row in results["tasks"].items():
        if "skipped" in row:
            lines.append(f"| {name} | – | – | – | skipped: {row['skipped']} |")
            continue
        metric = row["metric"] + (f" ({row['mode']})" if row.get("mode") == "loglikelihood" else "")
        lines.append(f"| {name} | {metric} | {row['shots']} | {row['n']} | {row['score']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_rows(results):
    """One row per scored task whose score is in [0, 1] (higher is better); perplexity stays in the metrics."""
    return [{"task": name, "metric": row["metric"], "score": float(row["score"])}
            for name, row in scored(results) if row.get("higher_is_better", True)]


def score_deltas(base, other):
    """Per task scored in both: base score, other score and other − base."""
    theirs = dict(scored(other))
    return {name: {"base": row["score"], "other": theirs[name]["score"],
                   "delta": theirs[name]["score"] - row["score"]}
            for name, row in scored(base) if name in theirs}


def comparison_table(base, others):
    """Markdown: one column per compared results (label → results), each score with its delta to ``base``."""
    labels = list(others)
    lines = ["| task | base | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    deltas = {label: score_deltas(base, results) for label, results in others.items()}
    for name, row in scored(base):
        cells = []
        for label in labels:
            delta = deltas[label].get(name)
            cells.append("–" if delta is None else f"{delta['other']:.4f} ({delta['delta']:+.4f})")
        lines.append(f"| {name} | {row['score']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
