"""The corpus report: what came in, what each filter and dedup step removed and why, what went out.

Figures come from the per-task stats datatrove leaves in ``<work>/logs/<step>/stats`` (tasks finished in an
earlier, interrupted run included), examples from the exclusion folders and the readers' bad-input logs.
"""
import gzip
import json
from collections import Counter
from pathlib import Path

from datatrove.utils.stats import PipelineStats

TOP_REASONS = 10
EXAMPLE_CHARS = 120
DEDUP_BLOCKS = {"exact-deduplication stage 3": "exact_dedup", "MinHash stage 4": "near_dedup"}


def step_stats(work, step):
    """Stats of every task of ``step``, summed block by block."""
    total = PipelineStats()
    for path in sorted((Path(work) / "logs" / step / "stats").glob("*.json")):
        total = total + PipelineStats.from_json(json.loads(path.read_text()))
    return total.stats


def _value(block, key):
    metric = block.stats.get(key)
    return int(metric.total) if metric is not None else 0


def _short_name(block):
    name = block.name.split(": ", 1)[-1]
    return next((short for marker, short in DEDUP_BLOCKS.items() if marker in name), name)


def build_report(work, steps, notes=()):
    """The report as a dict (``splits`` is added once the corpus is packed)."""
    work = Path(work)
    report = {"documents_in": 0, "characters_in": 0, "bad_input": {}, "bad_input_examples": [], "removed": {},
              "reasons": Counter(), "documents_out": 0, "characters_out": 0, "notes": list(notes)}
    for step in steps:
        for block in step_stats(work, step):
            _add_block(report, block)
    last_writer = [b for b in step_stats(work, steps[-1]) if "WRITER" in b.name][-1]
    report["documents_out"] = _value(last_writer, "total")
    report["characters_out"] = _value(last_writer, "doc_len")
    report["bad_input_examples"] = _bad_input_examples(work / "bad_input")
    report["top_reasons"] = [{"reason": reason, "documents": count, "example": _example(work, reason)}
                             for reason, count in report.pop("reasons").most_common(TOP_REASONS)]
    report["top_remover"] = max(report["removed"], key=report["removed"].get, default="none")
    return report


def _add_block(report, block):
    name = _short_name(block)
    if name.startswith("source "):
        report["documents_in"] += _value(block, "documents")
        report["characters_in"] += _value(block, "doc_len")
        for key in block.stats:
            if key.startswith("bad_"):
                reason = key.removeprefix("bad_")
                report["bad_input"][reason] = report["bad_input"].get(reason, 0) + _value(block, key)
    elif "FILTER" in block.name or name in ("normalise", *DEDUP_BLOCKS.values()):
        report["removed"][name] = report["removed"].get(name, 0) + _value(block, "dropped")
        reasons = {k.removeprefix("dropped_"): _value(block, k) for k in block.stats if k.startswith("dropped_")}
        reasons = reasons or {name: _value(block, "dropped")}
        report["reasons"].update({reason: count for reason, count in reasons.items() if count})


def _bad_input_examples(folder, limit=10):
    examples = []
    for path in sorted(Path(folder).glob("*.json")):
        examples += json.loads(path.read_text())
    return examples[:limit]


def _example(work, reason):
    """The start of one document removed for ``reason``, from the exclusion folders ('' if none was kept).
    Dedup folders are named after their reason; filter folders (``02_script``) after the reason's prefix."""
    for path in sorted((Path(work) / "excluded").glob("*/*.jsonl.gz")):
        folder = path.parent.name
        if folder != reason and folder.split("_", 1)[-1] != reason.split("_", 1)[0]:
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                if folder == reason or doc.get("metadata", {}).get("filter_reason") == reason:
                    return _truncate(doc["text"])
    return ""


def _truncate(text):
    text = text.replace("\n", " ")
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def summary(report):
    """A few readable lines for the end of the stage."""
    lines = [f"corpus: {report['documents_in']:,} documents ({report['characters_in']:,} characters) in, "
             f"{report['documents_out']:,} ({report['characters_out']:,} characters) out"]
    if report["bad_input"]:
        lines.append("  bad input skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(report["bad_input"].items())))
        lines += [f"    {e['where']}: {e['reason']}" for e in report["bad_input_examples"][:5]]
    lines.append("  removed: " + ", ".join(f"{k} {v:,}" for k, v in report["removed"].items()))
    lines.append("  top removal reasons:")
    lines += [f"    {r['documents']:>7,}  {r['reason']:<28} e.g. {r['example'] or '-'}" for r in report["top_reasons"]]
    for split, counts in report.get("splits", {}).items():
        lines.append(f"  {split}: {counts['documents']:,} documents, {counts['tokens']:,} tokens, "
                     f"{counts['sequences']:,} sequences")
    lines += [f"  note: {note}" for note in report["notes"]]
    return "\n".join(lines)
