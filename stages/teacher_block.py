"""A training stage's ``teacher:`` block: which model teaches the stage, and whether it runs live beside
every step or is read from the stage's offline top-k cache (stage ``teacher_cache@<stage>``).

    teacher:
      source: models/teacher   # hub id, local model directory, or the teacher stage's directory
      dtype: float32           # float32 | bfloat16 | float16 | auto
      device_map: null         # e.g. auto: spread a large teacher over the visible GPUs
      mode: cache              # live | cache
      cache: {k: 64, logprob_dtype: float16, shard_rows: 256, batch_size: 16}
"""
import json
from pathlib import Path


from stages.common import StageError
from stages.training import data_sha256
from taid.cache import CacheReader
from taid.models import config_for, config_hash, load_model
from taid.teachers import CachedTeacher, LiveTeacher
from taid.vocab import check_same_tokenizer, load_tokenizer, tokenizer_fingerprint

CACHE_DEFAULTS = {"k": 64, "logprob_dtype": "float16", "shard_rows": 256, "batch_size": 16}
DEFAULTS = {"dtype": "auto", "device_map": None, "mode": "live", "cache": CACHE_DEFAULTS}
MODES = ("live", "cache")


def teacher_block(params, stage):
    """The stage's teacher block with defaults filled in, checked."""
    block = (params.get(stage) or {}).get("teacher")
    where = f"params.yaml: {stage}.teacher"
    if not isinstance(block, dict) or "source" not in block:
        raise StageError(f"{where}: needs at least a 'source' (a hub id or a model directory)")
    unknown = sorted(set(block) - set(DEFAULTS) - {"source"})
    unknown_cache = sorted(set(block.get("cache") or {}) - set(CACHE_DEFAULTS))
    if unknown or unknown_cache:
        raise StageError(f"{where}: unknown keys {unknown + [f'cache.{k}' for k in unknown_cache]}")
    block = {**DEFAULTS, **block, "cache": {**CACHE_DEFAULTS, **(block.get("cache") or {})}}
    if block["mode"] not in MODES:
        raise StageError(f"{where}.mode must be one of {MODES}, got {block['mode']!r}")
    return block


def resolve(source):
    """The model a source names, and the teacher stage's record when the source is its directory."""
    record_path = Path(source) / "teacher.json"
    if not record_path.is_file():
        return str(source), None
    record = json.loads(record_path.read_text())
    return record["source"], record


def teacher_identity(block):
    """What a cache records about its teacher and a training stage checks: cheap, no weights loaded."""
    source, record = resolve(block["source"])
    try:
        config = config_for(source)
    except OSError as error:
        raise StageError(f"teacher {source!r} could not be resolved: {error}") from error
    identity = {"source": source, "config_sha256": config_hash(config), "dtype": block["dtype"],
                "output_size": config.vocab_size}
    if record is not None:
        if record["config_sha256"] != identity["config_sha256"]:
            raise StageError(f"teacher {source} is not the model recorded in {block['source']}/teacher.json; "
                             "rerun the teacher stage")
        identity["weights_sha256"] = record.get("weights_sha256")
    return identity


def load_live_teacher(block, tokenizer, tokenizer_dir):
    source, _ = resolve(block["source"])
    teacher_identity(block)  # refuses a source that no longer matches the teacher stage's record
    check_same_tokenizer(load_tokenizer(source), tokenizer, source, tokenizer_dir)
    model = load_model(source, dtype=block["dtype"], device_map=block["device_map"])
    return model.requires_grad_(False).eval()


def cache_identity(block, tokenizer, data_hashes):
    return {"teacher": teacher_identity(block), "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
            "data_sha256": data_hashes}


def stage_teacher(block, tokenizer, tokenizer_dir, n_shared, cache_dir, data_dir):
    """The teacher a training stage learns from: the model itself, or its top-k cache (checked against
    ``data_dir``'s hashes, which only the cache needs: a live teacher does not read the data twice)."""
    if block["mode"] == "live":
        return LiveTeacher(load_live_teacher(block, tokenizer, tokenizer_dir), n_shared)
    if cache_dir is None:
        raise StageError("teacher.mode is cache but no --teacher-cache directory was given")
    reader = CacheReader(cache_dir, cache_identity(block, tokenizer, data_sha256(data_dir)), vocab_size=n_shared)
    return CachedTeacher(reader, n_shared)
