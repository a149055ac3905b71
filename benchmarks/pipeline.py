"""Wall time of the default pipeline, stage by stage (`dvc repro` on a fresh copy of the project), and of
a second `dvc repro` with nothing changed.

The copy holds what tests/test_dvc.py's project fixture copies (dvc.yaml, params.yaml, the packages,
configs and bundled data) in a new git + DVC repository, so no cache or lock of this checkout is reused.
Every stage prints "stage NAME: done in S s" (stages.common.stage_main); the time belongs to the stage
dvc announced last ("Running stage 'X'"). The benchmark fails when a stage ran without reporting its time,
or when the second run reran anything.

    python benchmarks/pipeline.py                        # ~10 min on 2 cores
    python benchmarks/pipeline.py --keep /tmp/project    # keep the copy (an empty or new folder)
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import REPO, number, table, write_results

COPIED = ("dvc.yaml", "params.yaml", "stages", "taid", "corpus", "chat", "eval", "export", "configs",
          "data/sample", "data/fixtures")
RUNNING = re.compile(r"Running stage '([^']+)'")
DONE = re.compile(r"^stage (\S+): done in ([\d.]+) s$")


def copy_project(repo):
    for name in COPIED:
        source, target = REPO / name, repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")


def dvc(repo, *args, echo=None):
    """Runs ``dvc ARGS`` in ``repo`` with this venv's python first on PATH (dvc.yaml says ``python``);
    returns its output (stdout and stderr) and wall seconds. Lines matching ``echo`` are printed as they come."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo)}
    started, lines = time.perf_counter(), []
    with subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        for line in process.stdout:
            lines.append(line)
            if echo and echo.search(line):
                print(line.rstrip(), flush=True)
    output, seconds = "".join(lines), time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed (exit {process.returncode}):\n{output[-4000:]}")
    return output, seconds


def stage_times(output):
    """``[(stage, seconds)]`` in the order dvc ran them, from a ``dvc repro`` log; stops when a stage ran
    without reporting its time, or a time comes with no stage running."""
    times, running = [], None
    for line in output.splitlines():
        if started := RUNNING.search(line):
            if running is not None:
                raise SystemExit(f"stage {running!r} ran without a 'stage …: done in' line")
            running = started.group(1)
        elif done := DONE.match(line.strip()):
            if running is None:
                raise SystemExit(f"a stage time with no stage running: {line.strip()!r}")
            times.append((running, float(done.group(2))))
            running = None
    if running is not None:
        raise SystemExit(f"stage {running!r} ran without a 'stage …: done in' line")
    if not times:
        raise SystemExit("dvc repro ran no stage: is this a fresh copy?")
    return times


def require_nothing_rerun(output):
    rerun = RUNNING.findall(output)
    if rerun:
        raise SystemExit(f"the no-change re-run reran {len(rerun)} stages: {', '.join(rerun)}")


def reproduce(repo):
    first, first_s = dvc(repo, "repro", echo=re.compile(r"Running stage|: done in"))
    stages = stage_times(first)
    second, second_s = dvc(repo, "repro")
    require_nothing_rerun(second)
    stages_s = sum(seconds for _, seconds in stages)
    return {"stages": [{"stage": name, "seconds": seconds} for name, seconds in stages],
            "stages_s": stages_s, "repro_s": first_s, "dvc_overhead_s": first_s - stages_s, "rerun_s": second_s}


def rows_of(result):
    rows = [(stage["stage"], stage["seconds"]) for stage in result["stages"]]
    return rows + [("all stages (sum)", result["stages_s"]), ("`dvc repro`, wall", result["repro_s"]),
                   ("`dvc repro` again, nothing changed", result["rerun_s"])]


COLUMNS = [("stage", lambda r: r[0]), ("seconds", lambda r: number(r[1], 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the copy here and keep it (an empty or new folder)")
    parser.add_argument("--results", default=None, help="default: benchmarks/results/pipeline.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    args = parser.parse_args()
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"{args.keep} is not empty: the pipeline must start from a fresh copy")
    with tempfile.TemporaryDirectory() as scratch:
        repo = args.keep or Path(scratch) / "project"
        repo.mkdir(parents=True, exist_ok=True)
        copy_project(repo)
        result = reproduce(repo)
    write_results("pipeline", result, table(COLUMNS, rows_of(result)), args.results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
