"""The corpus pipeline as datatrove steps, each run by the configured executor (local, Slurm or Ray).

Working directory layout (``work``):
  logs/<step>/        datatrove logs, per-task stats and completion markers (a re-run skips completed tasks)
  bad_input/          where each reader's first skipped records were
  excluded/<n>_<why>/ documents each filter or dedup step removed, with the reason in their metadata
  filtered/ unique/ deduped/   shards after the filters, after exact dedup, after near dedup
"""
from pathlib import Path

from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from corpus import dedup
from corpus.filters import BlocklistFilter, JapaneseScriptFilter, LanguageFilter, LengthFilter, Normaliser, \
    RepetitionFilter
from corpus.readers import JsonlSource, ParquetSource, TextSource, WarcSource, hf_source

FILTERS = {"length": LengthFilter, "script": JapaneseScriptFilter, "repetition": RepetitionFilter,
           "blocklist": BlocklistFilter}
DISK_SOURCES = {"jsonl": JsonlSource, "parquet": ParquetSource, "text": TextSource, "warc": WarcSource}
SOURCE_KEYS = {"name", "type", "path", "glob", "text_key", "split", "weight", "dataset", "config"}


class ShardReader(JsonlReader):
    """Reads back exactly the shard this rank wrote in an earlier step, so document indexes line up with the
    dedup signatures that step computed."""

    def run(self, data=None, rank=0, world_size=1):
        name = f"{rank:05d}.jsonl"
        if self.data_folder.isfile(name):
            yield from self.read_file(name)


def shard_writer(folder, compression=None):
    """Intermediate shards stay uncompressed (read again at once); exclusion folders are gzipped."""
    suffix = ".gz" if compression == "gzip" else ""
    return JsonlWriter(str(folder), output_filename="${rank}.jsonl" + suffix, compression=compression)


def readers(sources, bad_input):
    """One reader per source, chained: each shards its own files over the tasks."""
    blocks = []
    for source in sources:
        unknown = set(source) - SOURCE_KEYS
        if unknown:
            raise ValueError(f"corpus source {source.get('name')!r}: unknown keys {sorted(unknown)}")
        kind, name = source.get("type"), source["name"]
        if kind == "hf":
            blocks.append(hf_source(source["dataset"], name, source.get("text_key", "text"),
                                    source.get("split", "train"), source.get("config")))
        elif kind in DISK_SOURCES:
            blocks.append(_disk_reader(DISK_SOURCES[kind], source, bad_input))
        else:
            raise ValueError(f"corpus source {name!r}: type {kind!r} is not one of {sorted(DISK_SOURCES) + ['hf']}")
    return blocks


def _disk_reader(reader_class, source, bad_input):
    path = Path(source["path"])
    if not path.exists():
        raise FileNotFoundError(f"corpus source {source['name']!r}: {path} not found")
    folder, glob = (path.parent, path.name) if path.is_file() else (path, source.get("glob"))
    options = {"text_key": source.get("text_key", "text")} if reader_class in (JsonlSource, ParquetSource) else {}
    if reader_class is TextSource:
        options["split"] = source.get("split", "file")
    return reader_class(str(folder), source["name"], glob_pattern=glob, report_folder=str(bad_input), **options)


def quality_filters(settings, excluded):
    """The enabled filters in order, each with its numbered exclusion folder; and why any was skipped."""
    blocks, notes = [], []
    for number, (name, keywords) in enumerate(settings.items(), start=1):
        writer = shard_writer(excluded / f"{number:02d}_{name}", "gzip")
        if name == "language":
            block, note = _language_filter(keywords, writer)
            notes += [note] if note else []
            blocks += [block] if block else []
        elif name in FILTERS:
            blocks.append(FILTERS[name](**(keywords or {}), exclusion_writer=writer))
        else:
            raise ValueError(f"corpus.filters: unknown filter {name!r}; known: {sorted(FILTERS) + ['language']}")
    return blocks, notes


def _language_filter(keywords, writer):
    keywords = dict(keywords or {})
    model = keywords.pop("model", None)
    if not model:
        return None, "language identification skipped: corpus.filters.language.model names no local fastText model"
    if not Path(model).is_file():
        return None, f"language identification skipped: model file {model} not found"
    return LanguageFilter(model, **keywords, exclusion_writer=writer), None


def build_steps(corpus, work):
    """[(step name, pipeline, tasks)] in order, the folder of the final shards, and notes on skipped filters.

    A dedup signature block consumes documents, so it closes the step whose writer produced the shard; the
    next step reads that shard back in the same order (document indexes are what the signatures name)."""
    work, tasks = Path(work), corpus.get("tasks", 1)
    filters, notes = quality_filters(corpus.get("filters", {}), work / "excluded")
    settings = corpus.get("dedup", {})
    minhash = dict(settings.get("minhash") or {})
    steps, current = [], work / "filtered"
    name, blocks = "filter", [*readers(corpus["sources"], work / "bad_input"),
                              Normaliser(corpus.get("boilerplate", [])), *filters, shard_writer(current)]
    if settings.get("exact", True):
        steps += [(name, blocks + [dedup.exact_signature(work / "exact/sigs")], tasks),
                  ("exact_find", [dedup.exact_find(work / "exact/sigs", work / "exact/dups")], 1)]
        name, blocks = "exact_filter", [
            ShardReader(str(current)),
            dedup.exact_filter(work / "exact/dups", shard_writer(work / "excluded/exact_dedup", "gzip")),
            shard_writer(work / "unique")]
        current = work / "unique"
    if minhash.pop("enabled", True):
        config, folder = dedup.minhash_config(**minhash), work / "minhash"
        steps += [(name, blocks + [dedup.minhash_signature(folder / "sigs", config)], tasks),
                  ("minhash_buckets", [dedup.minhash_buckets(folder / "sigs", folder / "buckets", config)],
                   config.num_buckets),
                  ("minhash_cluster", [dedup.minhash_cluster(folder / "buckets", folder / "clusters", config)], 1)]
        name, blocks = "minhash_filter", [
            ShardReader(str(current)),
            dedup.minhash_filter(folder / "clusters", shard_writer(work / "excluded/near_dedup", "gzip")),
            shard_writer(work / "deduped")]
        current = work / "deduped"
    steps.append((name, blocks, tasks))
    return steps, current, notes
