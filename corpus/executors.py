"""Run the pipeline's steps with datatrove's executors: local processes, Slurm jobs or Ray tasks.

Every step keeps its logs, stats and completion markers in ``<work>/logs/<step>``: a re-run after a crash
skips the tasks that completed and redoes only the rest.
"""
import contextlib
import os
import time
from pathlib import Path

from datatrove.utils.logging import setup_default_logger

EXECUTORS = ("local", "slurm", "ray")


def make_executor(kind, pipeline, tasks, logging_dir, depends=None, workers=1, options=None):
    options = dict(options or {})
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        # one worker runs tasks in this process; more use a pool, each process forked with the pipeline
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=logging_dir,
                                     depends=depends, start_method="fork")
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(pipeline, tasks=tasks, logging_dir=logging_dir, depends=depends, **options)
    if kind == "ray":
        try:
            from datatrove.executor.ray import RayPipelineExecutor
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError("corpus.executor 'ray' needs the ray package: pip install 'ray[default]'") from None
        return RayPipelineExecutor(pipeline, tasks=tasks, logging_dir=logging_dir, depends=depends, **options)
    raise ValueError(f"corpus.executor must be one of {EXECUTORS}, got {kind!r}")


def run_steps(steps, work, kind="local", workers=1, options=None, poll_seconds=30, quiet=True):
    """Chain the steps (each depends on the one before) and run them; a Slurm submission is waited for, at
    most ``wait_hours`` (an option of its own, default 48), so the stage can pack its output afterwards.
    ``quiet`` keeps datatrove's per-task console logging out of the stage's output; every task's full log
    stays in ``<work>/logs/<step>/logs``."""
    options = dict(options or {})
    wait_seconds = 3600 * float(options.pop("wait_hours", 48))
    executor = None
    for name, pipeline, tasks in steps:
        executor = make_executor(kind, pipeline, tasks, str(Path(work) / "logs" / name), executor, workers,
                                 options)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null) if quiet else contextlib.nullcontext():
            setup_default_logger()  # datatrove's logger holds the stderr it saw when set up: rebind it
            executor.run()
    finally:
        setup_default_logger()  # back to the real stderr
    if kind == "slurm":
        _wait_for_slurm(executor, steps[-1][0], work, wait_seconds, poll_seconds)


def _wait_for_slurm(executor, last_step, work, wait_seconds, poll_seconds):
    deadline = time.monotonic() + wait_seconds
    while incomplete := executor.get_incomplete_ranks(skip_completed=True):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"Slurm tasks {incomplete[:10]} of step '{last_step}' are still incomplete after "
                               f"{wait_seconds / 3600:g} h (corpus.slurm.wait_hours); a failed job never completes: "
                               f"see {Path(work) / 'logs'} and sacct, then rerun to resume")
        time.sleep(poll_seconds)
