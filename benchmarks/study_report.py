"""The TAID study's report: runs aggregated over seeds (mean ± sample standard deviation), the Markdown
tables, the results JSON, the plots and the tables in README.md's study section."""
import json
import math
import re
from pathlib import Path

# metric → (column heading, format of mean and std)
METRICS = {
    "val_kl": ("val KL(teacher ‖ student)", "{:.3f}"),
    "val_ppl": ("val perplexity", "{:.1f}"),
    "jcqa": ("JCommonsenseQA accuracy", "{:.2f}"),
}


def mean_std(values):
    """Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def cell(stat, fmt):
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def summarise(runs, form):
    """Per method on the largest teacher, and per teacher for the scaling methods: each metric over seeds."""
    largest = len(form.teachers) - 1

    def stats(method, teacher):
        chosen = [r for r in runs if r["method"] == method and r["teacher"] == teacher]
        if not chosen:
            return None
        return {"method": method, "label": chosen[0]["label"], "teacher": teacher, "n": len(chosen),
                **{m: mean_std([r[m] for r in chosen]) for m in METRICS}}

    by_method = [stats(m, largest) for m in form.methods]
    by_teacher = [stats(m, i) for i in range(len(form.teachers)) for m in form.scaling_methods]
    return {"methods": [s for s in by_method if s], "teacher_size": [s for s in by_teacher if s]}


def methods_table(summary, setup):
    top = setup["teachers"][-1]
    lines = ["| method | " + " | ".join(heading for heading, _ in METRICS.values()) + " |",
             "|---" * (len(METRICS) + 1) + "|",
             f"| the teacher ({_millions(top['n_params'])}) | – | {top['val_ppl']:.1f} | {top['jcqa']:.2f} |"]
    for row in summary["methods"]:
        lines.append(f"| {row['label']} | " + " | ".join(cell(row[m], fmt) for m, (_, fmt) in METRICS.items()) + " |")
    return "\n".join(lines) + "\n"


def teacher_size_table(summary, setup, form):
    student = setup["student"]["n_params"]
    labels = {row["method"]: row["label"] for row in summary["teacher_size"]}
    shown = [m for m in form.scaling_methods if m in labels]
    heading = "| teacher | parameters (× student) | teacher val perplexity |"
    heading += "".join(f" {labels[m]}: val KL | {labels[m]}: val perplexity |" for m in shown)
    lines = [heading, "|---" * (heading.count("|") - 1) + "|"]
    for i, teacher in enumerate(setup["teachers"]):
        size = f"{_millions(teacher['n_params'])} ({teacher['n_params'] / student:.1f}×)"
        row = f"| {Path(teacher['config']).stem} | {size} | {teacher['val_ppl']:.1f} |"
        for method in shown:
            found = [s for s in summary["teacher_size"] if s["method"] == method and s["teacher"] == i]
            for metric in ("val_kl", "val_ppl"):
                row += f" {cell(found[0][metric], METRICS[metric][1])} |" if found else " – |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_results(setup, agreement, runs, form, results_dir, seconds):
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, form)
    tables = methods_table(summary, setup) + "\n" + teacher_size_table(summary, setup, form)
    stem = Path(form.results).stem
    plots = write_plots(summary, runs, setup, form, results_dir, stem)
    results = {"setup": setup, "agreement": agreement, "seconds": seconds, **summary, "tables": tables,
               "plots": [str(p.name) for p in plots], "runs": runs}
    (results_dir / form.results).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results


# -- plots

def write_plots(summary, runs, setup, form, results_dir, stem):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = [results_dir / f"{stem}_methods.png", results_dir / f"{stem}_t.png",
             results_dir / f"{stem}_teacher_size.png"]
    for path, draw in zip(paths, (_methods_plot, _t_plot, _teacher_size_plot)):
        figure = draw(plt, summary, runs, setup, form)
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return paths


def _methods_plot(plt, summary, runs, setup, form):
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 4.2))
    rows = summary["methods"]
    for ax, (metric, (heading, _)) in zip(axes, METRICS.items()):
        ax.barh(range(len(rows)), [r[metric]["mean"] for r in rows], xerr=[r[metric]["std"] for r in rows],
                color="tab:blue", capsize=3)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows] if ax is axes[0] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_xlabel(heading)
    axes[0].figure.suptitle(f"{form.name} form: student {_millions(setup['student']['n_params'])}, teacher "
                            f"{_millions(setup['teachers'][-1]['n_params'])}, mean ± std over {len(form.seeds)} seeds")
    return figure


def _t_plot(plt, summary, runs, setup, form):
    figure, ax = plt.subplots(figsize=(6, 4))
    largest, seed = len(form.teachers) - 1, form.seeds[0]
    for run in runs:
        if run["t"] and run["teacher"] == largest and run["seed"] == seed:
            ax.plot(range(1, len(run["t"]) + 1), run["t"], label=run["label"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("t (interpolation toward the teacher)")
    ax.set_title(f"TAID's t, seed {seed}")
    ax.legend()
    return figure


def _teacher_size_plot(plt, summary, runs, setup, form):
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [t["n_params"] for t in setup["teachers"]]
    for method in form.scaling_methods:
        rows = sorted((r for r in summary["teacher_size"] if r["method"] == method), key=lambda r: r["teacher"])
        if not rows:
            continue
        x = [sizes[r["teacher"]] for r in rows]
        for ax, metric in zip(axes, ("val_kl", "val_ppl")):
            ax.errorbar(x, [r[metric]["mean"] for r in rows], yerr=[r[metric]["std"] for r in rows],
                        marker="o", capsize=3, label=rows[0]["label"])
    for ax, metric in zip(axes, ("val_kl", "val_ppl")):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [_millions(n) for n in sizes], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("teacher parameters")
        ax.set_ylabel(METRICS[metric][0] + (" (to its own teacher)" if metric == "val_kl" else ""))
        ax.legend()
    axes[1].plot(sizes, [t["val_ppl"] for t in setup["teachers"]], "k--", marker="s", label="the teacher itself")
    axes[1].legend()
    figure.tight_layout()
    return figure


# -- README

def update_readme(readme, form_name, tables):
    """Replace the text between README's ``<!-- study:<form> -->`` and ``<!-- /study:<form> -->`` markers."""
    readme = Path(readme)
    begin, end = f"<!-- study:{form_name} -->", f"<!-- /study:{form_name} -->"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        print(f"README: no {begin} … {end} markers in {readme}; tables not written there")
        return False
    readme.write_text(pattern.sub(lambda _: f"{begin}\n{tables}{end}", text), encoding="utf-8")
    print(f"README: tables of the {form_name} form written to {readme}")
    return True


def _millions(n):
    return f"{n / 1e6:.2f}M"
