"""What the benchmarks share: peak-memory readings, the agreement check, result files and README tables.

Peak memory is the growth of a process's peak resident set (Linux VmHWM, reset through
/proc/self/clear_refs just before the measured work) on CPU, and of torch's peak allocated memory on CUDA.
A README table sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` and is rewritten whole.
"""
import json
import math
import re
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
README = REPO / "README.md"
MIB = 1024 ** 2


def _proc_status_mib(field):
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


@contextmanager
def peak_memory(device="cpu"):
    """Measures the peak memory the body adds: ``with peak_memory(device) as peak: ...`` then
    ``peak["mib"]``."""
    import torch

    peak = {}
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield peak
        torch.cuda.synchronize()
        peak["mib"] = (torch.cuda.max_memory_allocated() - before) / MIB
        return
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _proc_status_mib("VmRSS")
    yield peak
    peak["mib"] = _proc_status_mib("VmHWM") - before


def require_agreement(what, **checks):
    """Each check is ``name=(difference, tolerance)``; exits non-zero naming every one over its tolerance
    (a NaN difference fails too), so no number is reported for computations that disagree."""
    failed = [f"{name} {diff:.3g} > {tol:.3g}" for name, (diff, tol) in checks.items() if not diff <= tol]
    if failed:
        raise SystemExit(f"{what} disagree: {', '.join(failed)}; not timing computations that differ")


def relative_gap(a, b):
    """Largest elementwise |a − b| over the largest |a| (two tensors of the same shape)."""
    scale = float(a.abs().max())
    return float((a.float() - b.float()).abs().max()) / (scale if scale > 0 else 1.0)


def table(columns, rows):
    """Markdown table lines; ``columns`` are ``(header, format function of a row)``."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |",
             "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return lines


def number(value, digits=2):
    """A table cell: the value with ``digits`` decimals, thousands separated; — when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def write_results(name, payload, lines, path=None, readme=True):
    """Prints the table, writes ``benchmarks/results/<name>.json`` (or ``path``) and, when ``readme``,
    replaces the README block of the same name with the table."""
    print("\n".join(lines))
    path = Path(path) if path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    if readme:
        replace_block(README, name, lines)


def replace_block(readme, name, lines):
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: no {start} … {end} block to write the table into")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")
    print(f"updated {readme.name} ({name})")
