"""Run a list of tasks on one backend: settings in, one results dict out (task → score, n, shots, …)."""
import time
from pathlib import Path

from tqdm import tqdm

from eval.data import DataError
from eval.judge import judge_from_settings
from eval.tasks import ALL_TASKS, RunContext, Skip, get_task

# the keys of params.yaml's evaluate section
SETTINGS = ("backend", "dtype", "device", "batch_size", "limit", "tasks", "judge")


def progress_bar(description, total):
    return tqdm(total=total, desc=description, unit="item", dynamic_ncols=True)


def evaluate(backend, task_names, data_dir, task_settings=None, batch_size=8, limit=0, valid_path=None,
             judge=None, model="", progress=progress_bar):
    """Every task of ``task_names`` on ``backend``; a task that cannot run here is reported as skipped."""
    task_settings = task_settings or {}
    unknown = sorted(set(task_settings) - set(ALL_TASKS))
    if unknown:
        raise DataError(f"evaluate.tasks: unknown tasks {unknown}; known: {', '.join(ALL_TASKS)}")
    results = {"model": str(model), "backend": backend.name, "tasks": {}}
    for name in task_names:
        task = get_task(name)
        context = RunContext(data_dir=Path(data_dir), settings=dict(task_settings.get(name) or {}),
                             batch_size=batch_size, limit=limit, valid_path=valid_path, judge=judge,
                             progress=progress)
        started = time.perf_counter()
        try:
            row = task.run(backend, context)
        except Skip as reason:
            row = {"skipped": str(reason)}
        row.update(backend=backend.name, seconds=round(time.perf_counter() - started, 2))
        results["tasks"][name] = row
        print(describe(name, row))
    return results


def describe(name, row):
    if "skipped" in row:
        return f"{name}: skipped ({row['skipped']})"
    mode = f", {row['mode']}" if "mode" in row else ""
    text = f"{name}: {row['metric']} {row['score']:.4f} (n={row['n']}, {row['shots']}-shot{mode}, {row['seconds']} s)"
    if row.get("malformed"):
        text += f"; {row['malformed']} malformed rows skipped, first: {'; '.join(row['malformed_first'])}"
    return text


def evaluate_with_settings(settings, model, data_dir, tasks=None, valid_path=None, backend=None):
    """The evaluate section of params.yaml applied: load the backend, build the judge, run the tasks.
    ``tasks`` (names) overrides the section's task list; ``backend`` an already loaded backend."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise DataError(f"evaluate: unknown keys {unknown}; known: {list(SETTINGS)}")
    task_settings = settings.get("tasks") or {}
    names = tasks or [name for name in ALL_TASKS if name in task_settings] or list(ALL_TASKS)
    if backend is None:
        from eval.backends import load_backend
        backend = load_backend(settings.get("backend", "hf"), model, settings.get("dtype", "float32"),
                               settings.get("device", "auto"))
    return evaluate(backend, names, data_dir, task_settings, batch_size=int(settings.get("batch_size", 8)),
                    limit=int(settings.get("limit", 0)), valid_path=valid_path,
                    judge=judge_from_settings(settings.get("judge")), model=model)
