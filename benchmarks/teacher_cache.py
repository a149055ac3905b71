"""How far training from the top-k teacher cache is from training beside the live teacher, on the default.

Needs the default pipeline's outputs (`make repro`): the tokenizer, the prepared corpus and the trained
teacher. Distils the default student three or more ways with the same seed and steps — live teacher, and
caches of several k — then scores every student against the LIVE teacher on the validation split, so the
comparison does not depend on the cache's own approximation. Prints a table and writes
benchmarks/results/teacher_cache.json.

    python benchmarks/teacher_cache.py            # k = 8, 64 and 512 against live
    python benchmarks/teacher_cache.py --k 64     # one cache
"""
import argparse
import copy
import json
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from stages import teacher_cache
from stages.common import load_params
from stages.student import train_student
from stages.teacher_block import load_live_teacher, teacher_block
from stages.training import load_prepared
from taid.data import to_batch
from taid.objective import Objective, summarise_eval
from taid.vocab import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results/teacher_cache.json"


def distil(params, mode, k, work):
    params = copy.deepcopy(params)
    block = params["distill"]["teacher"]
    block.update(mode=mode)
    block["cache"].update(k=k or block["cache"]["k"])
    out = work / (f"cache-k{k}" if mode == "cache" else "live")
    cache_dir, stats, started = out / "cache", {}, time.perf_counter()
    if mode == "cache":
        teacher_cache.run(Namespace(stage="distill", tokenizer=REPO / "models/tokenizer", data=REPO / "data/prepared",
                                    out=cache_dir, metrics=out / "cache.json"), params)
        stats = json.loads((out / "cache.json").read_text())
    cache_seconds, started = time.perf_counter() - started, time.perf_counter()
    args = Namespace(tokenizer=REPO / "models/tokenizer", data=REPO / "data/prepared", teacher_cache=cache_dir,
                     out=out / "student", metrics=out / "distill.json", plots=out / "plots",
                     checkpoints=out / "checkpoints")
    train_student("distill", args, params)
    metrics = json.loads((out / "distill.json").read_text())
    return {"mode": mode, "k": k, "cache_seconds": round(cache_seconds, 1),
            "train_seconds": round(time.perf_counter() - started, 1),
            "bytes_per_token": stats.get("bytes_per_token"), "train_loss_final": metrics["train_loss_final"],
            **score_against_live_teacher(params, out / "student")}


@torch.no_grad()
def score_against_live_teacher(params, student_dir):
    tokenizer = load_tokenizer(REPO / "models/tokenizer")
    block = {**teacher_block(params, "distill"), "mode": "live"}
    teacher = load_live_teacher(block, tokenizer, REPO / "models/tokenizer")
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    _, valid = load_prepared(REPO / "data/prepared", tokenizer)
    objective = Objective("forward_kl", teacher=teacher, n_shared=len(tokenizer))
    batches = (to_batch(valid[s:s + 16]) for s in range(0, len(valid), 16))
    return summarise_eval(objective.eval_sums(student, batches), with_teacher=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[8, 64, 512])
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory() as work:
        rows = [distil(params, "live", None, Path(work))]
        rows += [distil(params, "cache", k, Path(work)) for k in args.k]
    live = rows[0]
    print(f"\n{'teacher':>12} {'B/token':>8} {'cache s':>8} {'train s':>8} {'train loss':>11} "
          f"{'val KL (live)':>14} {'Δ':>8} {'val loss':>9} {'Δ':>8}")
    for row in rows:
        name = "live" if row["mode"] == "live" else f"cache k={row['k']}"
        row["val_kl_delta"] = row["val_kl"] - live["val_kl"]
        row["val_loss_delta"] = row["val_loss"] - live["val_loss"]
        print(f"{name:>12} {row['bytes_per_token'] or 0:8.1f} {row['cache_seconds']:8.1f} {row['train_seconds']:8.1f} "
              f"{row['train_loss_final']:11.4f} {row['val_kl']:14.4f} {row['val_kl_delta']:+8.4f} "
              f"{row['val_loss']:9.4f} {row['val_loss_delta']:+8.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
