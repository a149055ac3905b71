"""Stage `teacher_cache@<stage>`: run a training stage's teacher once over that stage's tokenized data and
store, per trained position, its top-k token ids and log-probabilities plus the log of the remaining mass
(``taid.cache``), keyed by sample id. The stage then trains from the cache (``<stage>.teacher.mode: cache``)
without a teacher model beside it.

With ``mode: live`` there is nothing to compute: the stage writes a marker saying so. A killed run resumes
from its finished shards; a cache built for another teacher, tokenizer, data or k is cleared and rebuilt.
Under ``accelerate launch`` each process computes every world-th shard.
"""
import shutil
import time
from pathlib import Path

from tqdm.auto import tqdm

from stages.common import atomic_dir, stage_main, write_json
from stages.teacher_block import cache_identity, load_live_teacher, teacher_block
from stages.training import data_sha256, load_prepared
from taid.cache import CacheWriter, TopK, top_k
from taid.data import to_batch
from taid.engines import process_state
from taid.teachers import LiveTeacher
from taid.vocab import load_tokenizer, shared_vocab_size


FIELDS = ("ids", "logprobs", "log_rest")


def shard_entries(teacher, rows, k, batch_size, device, chunk_size=1024):
    """One ``TopK`` per row of ``rows`` (a ``Split``), over the row's kept positions."""
    entries = []
    for start in range(0, len(rows), batch_size):
        batch = to_batch(rows[start:start + batch_size], device)
        logits, counts = teacher.kept(batch), batch["mask"].sum(dim=1).tolist()
        parts = [top_k(logits(slice(s, s + chunk_size)), k) for s in range(0, max(sum(counts), 1), chunk_size)]
        top = TopK.cat(parts).to("cpu")
        columns = [getattr(top, field).split(counts) for field in FIELDS]
        entries.extend(TopK(*fields) for fields in zip(*columns))
    return entries


def build_cache(block, tokenizer, tokenizer_dir, data_dir, out_dir):
    settings = block["cache"]
    splits = load_prepared(data_dir, tokenizer)
    model = load_live_teacher(block, tokenizer, tokenizer_dir)
    n_ids = shared_vocab_size(tokenizer, model.get_output_embeddings().weight.shape[0], len(tokenizer))
    state = process_state()
    teacher = LiveTeacher(model, n_ids).to(state.device)
    identity = cache_identity(block, tokenizer, data_sha256(data_dir))
    with state.main_process_first():  # rank 0 may clear a stale cache before the others look at it
        writer = CacheWriter(out_dir, identity, settings["k"], n_ids, settings["logprob_dtype"], settings["shard_rows"])
    for split in splits:
        pending = writer.pending(split.name, len(split), state.process_index, state.num_processes)
        for shard in tqdm(pending, desc=f"cache {split.name}", disable=not state.is_main_process):
            rows = writer.shard_rows_of(split.name, shard)
            entries = shard_entries(teacher, split[rows.start:rows.stop], settings["k"], settings["batch_size"],
                                    state.device)
            writer.write(split.name, shard, entries)
    state.wait_for_everyone()
    return writer.finish() if state.is_main_process else None


def add_arguments(parser):
    parser.add_argument("--stage", required=True, help="the training stage whose teacher block to use")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (stage tokenizer)")
    parser.add_argument("--data", required=True, help="that stage's prepared data directory")
    parser.add_argument("--out", required=True, help="cache directory to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write (sizes, bytes per token)")


def run(args, params):
    block = teacher_block(params, args.stage)
    if block["mode"] == "live":
        with atomic_dir(args.out) as out:
            write_json(out / "mode.json", {"mode": "live", "note": f"{args.stage} runs its teacher live; no cache"})
        write_json(args.metrics, {"mode": "live"})
        print(f"teacher_cache: {args.stage}.teacher.mode is live, nothing to cache")
        return
    if (Path(args.out) / "mode.json").is_file():  # the marker of an earlier live-mode run
        shutil.rmtree(args.out)
    started = time.perf_counter()
    tokenizer = load_tokenizer(args.tokenizer)
    stats = build_cache(block, tokenizer, args.tokenizer, args.data, args.out)
    if stats is None:  # not the main process
        return
    total = stats["total"]
    write_json(args.metrics, {"mode": "cache", "k": block["cache"]["k"], "logprob_dtype": block["cache"]["logprob_dtype"],
                              "seconds": round(time.perf_counter() - started, 2),
                              "bytes_per_token": total["bytes_per_position"], "splits": stats})
    print(f"teacher_cache: {total['positions']:,} positions, {total['bytes'] / 2**20:.1f} MiB, "
          f"{total['bytes_per_position']} bytes per token (k = {block['cache']['k']})")


if __name__ == "__main__":
    stage_main("teacher_cache", __doc__, add_arguments, run)
