"""Throughput and peak memory of the corpus stage on a generated Japanese corpus, for 1 and 2 workers.

A seeded generator writes ≥ 200 MB of Japanese-like JSON Lines in shards (sentences drawn from word lists,
so documents are distinct and pass the default filters); each worker count then runs the whole stage —
read, normalise, filter, exact and MinHash dedup, tokenize and pack — in a fresh process, with the default
corpus settings of params.yaml. Peak RSS is that of the whole process tree (the stage and its workers
together), sampled every 0.1 s.

    python benchmarks/corpus_throughput.py                 # 200 MB, workers 1 and 2
    python benchmarks/corpus_throughput.py --mb 20 --workers 1
"""
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["私", "彼", "先生", "母", "友だち", "店の人", "子どもたち", "駅員", "隣の家の人", "町の人たち"]
PLACES = ["駅前", "公園", "図書館", "川のそば", "山の上", "市場", "学校", "港", "神社", "商店街"]
TIMES = ["朝早く", "昼休みに", "夕方", "週末に", "雨の日に", "夏の夜", "冬の朝", "三時ごろ", "放課後", "休みの日に"]
OBJECTS = ["本", "野菜", "花", "手紙", "写真", "地図", "お茶", "魚", "傘", "自転車"]
VERBS = ["を買いました", "を見つけました", "を探しています", "を届けました", "を選びました", "を片づけました",
         "を借りました", "を描きました", "を運びました", "を直しました"]
ENDINGS = ["。", "。とても楽しかったです。", "。少し疲れました。", "。また行きたいと思います。", "。みんなが喜びました。"]


def sentence(rng):
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return (f"{pick(TIMES)}、{pick(SUBJECTS)}は{pick(PLACES)}で{rng.integers(1, 100)}個の{pick(OBJECTS)}"
            f"{pick(VERBS)}{pick(ENDINGS)}")


def generate(folder, megabytes, shards, seed=0):
    """Seeded JSON Lines shards totalling at least ``megabytes`` MB; returns their size in bytes."""
    rng = np.random.default_rng(seed)
    target, written = megabytes * 1_000_000, 0
    files = [(folder / f"shard-{i:03d}.jsonl").open("w", encoding="utf-8") for i in range(shards)]
    n = 0
    while written < target:
        paragraphs = ["".join(sentence(rng) for _ in range(rng.integers(3, 8))) for _ in range(rng.integers(2, 5))]
        line = json.dumps({"id": f"gen-{n}", "text": "\n\n".join(paragraphs)}, ensure_ascii=False) + "\n"
        files[n % shards].write(line)
        written += len(line.encode("utf-8"))
        n += 1
    for f in files:
        f.close()
    return written


def tree_rss(process):
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(command):
    """Run ``command``; return (its stdout, wall seconds, peak RSS of its process tree in bytes)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
    process, peak, done = psutil.Process(child.pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(process))
            except psutil.NoSuchProcess:
                return
            done.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed with {child.returncode}")
    return out, time.perf_counter() - started, peak[0]


def run_stage(scratch, corpus_dir, workers, tasks):
    """In a fresh process: the prepare stage's corpus pipeline with the default params on the corpus."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    corpus = {**params["corpus"], "workers": workers, "tasks": tasks,
              "sources": [{"name": "generated", "type": "jsonl", "path": str(corpus_dir)}]}
    from corpus.run import run_corpus
    from taid.vocab import load_tokenizer

    tokenizer = load_tokenizer(scratch / "tokenizer")
    report = run_corpus(corpus, scratch / f"work-{workers}", tokenizer, scratch / f"out-{workers}",
                        params["prepare"]["seq_len"])
    print(json.dumps({"seconds": report["seconds"], "documents_in": report["documents_in"],
                      "documents_out": report["documents_out"],
                      "tokens": sum(s["tokens"] for s in report["splits"].values())}))


def train_tokenizer(corpus_dir, out):
    from stages.tokenizer import train_sentencepiece

    with (corpus_dir / "shard-000.jsonl").open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in itertools.islice(f, 2000)]
    train_sentencepiece(texts, 1000, out)  # the generator's word lists hold few distinct pieces


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB (default 200)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", type=int, default=8, help="shards (tasks) of the pipeline")
    parser.add_argument("--child", nargs=3, metavar=("SCRATCH", "WORKERS", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scratch, workers, tasks = Path(args.child[0]), int(args.child[1]), int(args.child[2])
        return run_stage(scratch, scratch / "corpus", workers, tasks)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "corpus").mkdir()
        started = time.perf_counter()
        size = generate(scratch / "corpus", args.mb, args.tasks)
        print(f"generated {size / 1e6:.0f} MB of JSON Lines in {args.tasks} shards "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        train_tokenizer(scratch / "corpus", scratch / "tokenizer")
        print("| workers | MB in | docs in → out | tokens | clean+filter+dedup | tokenize+pack | total | MB/s | "
              "peak RSS (tree) |\n|---|---|---|---|---|---|---|---|---|", flush=True)
        for workers in args.workers:
            out, seconds, peak = run_measured([sys.executable, __file__, "--child", str(scratch), str(workers),
                                               str(args.tasks)])
            result = json.loads(out.strip().splitlines()[-1])
            phases = result["seconds"]
            print(f"| {workers} | {size / 1e6:.0f} | {result['documents_in']:,} → {result['documents_out']:,} | "
                  f"{result['tokens']:,} | {phases['clean_filter_dedup']:.0f} s | {phases['tokenize_pack']:.0f} s | "
                  f"{seconds:.0f} s | {size / 1e6 / seconds:.2f} | {peak / 2**20:,.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
