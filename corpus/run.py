"""The whole corpus pipeline behind the prepare stage: datatrove steps, then packing, then the report."""
import hashlib
import json
import shutil
import time
from pathlib import Path

from corpus.executors import run_steps
from corpus.pack import pack_corpus
from corpus.pipeline import build_steps
from corpus.report import build_report

CORPUS_KEYS = {"executor", "workers", "tasks", "seed", "valid_fraction", "sources", "boilerplate", "filters",
               "dedup", "slurm", "ray"}


class EmptyCorpusError(RuntimeError):
    """Filtering and deduplication left no document."""


def check_keys(corpus):
    unknown = set(corpus) - CORPUS_KEYS
    if unknown:
        raise ValueError(f"corpus: unknown keys {sorted(unknown)}; known: {sorted(CORPUS_KEYS)}")
    if not corpus.get("sources"):
        raise ValueError("corpus.sources is empty: name at least one source")


def fingerprint(corpus):
    """Identity of a run: its settings, its input files (size and mtime) and this package's code. A working
    directory left by a different run is cleared instead of resumed."""
    digest = hashlib.sha256(json.dumps(corpus, sort_keys=True, default=str).encode())
    for source in corpus["sources"]:
        path = Path(source.get("path", ""))
        files = sorted(path.rglob("*")) if path.is_dir() else [path] if path.is_file() else []
        for file in files:
            stat = file.stat()
            digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for code in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(code.read_bytes())
    return digest.hexdigest()


def prepare_work_dir(work, corpus):
    """Keep ``work`` for resumption when it belongs to this same run; otherwise start it afresh."""
    work, identity = Path(work), fingerprint(corpus)
    marker = work / "run.sha256"
    if work.exists() and (not marker.is_file() or marker.read_text().strip() != identity):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(identity + "\n")
    return work


def run_corpus(corpus, work, tokenizer, out, seq_len):
    """Read, clean, filter, deduplicate (datatrove), then pack into ``out``; return (report, counts)."""
    check_keys(corpus)
    work = prepare_work_dir(work, corpus)
    steps, final, notes = build_steps(corpus, work)
    started = time.perf_counter()
    run_steps(steps, work, corpus.get("executor", "local"), corpus.get("workers", 1),
              corpus.get(corpus.get("executor", "local")))
    report = build_report(work, [name for name, _, _ in steps], notes)
    report["seconds"] = {"clean_filter_dedup": round(time.perf_counter() - started, 2)}
    if report["documents_out"] == 0:
        raise EmptyCorpusError(f"no document is left after filtering and dedup; the most removed by "
                               f"{report['top_remover']} ({report['removed'].get(report['top_remover'], 0)} "
                               f"documents); see {work / 'excluded'}")
    weights = {source["name"]: source.get("weight", 1.0) for source in corpus["sources"]}
    started = time.perf_counter()
    report["splits"] = pack_corpus(final, tokenizer, out, seq_len, corpus.get("seed", 0),
                                   corpus.get("valid_fraction", 0.05), weights)
    report["seconds"]["tokenize_pack"] = round(time.perf_counter() - started, 2)
    return report
