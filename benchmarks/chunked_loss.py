"""Peak memory and time of the TAID loss, forward + backward: chunked LM head vs full logits.

Each variant runs in a fresh process (peak RSS is per process), on the same seeded inputs; the values
and gradients of both are compared before any number is printed.

    python benchmarks/chunked_loss.py                  # V = 151,936 (Qwen2.5), H = 896, N = 1,024 and 2,048
    python benchmarks/chunked_loss.py --tokens 512 --vocab 32000 --hidden 512
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from taid.chunked import LossSpec, chunked_loss
from taid.losses import taid_loss
from taid.teachers import HeadLogits


def inputs(tokens, vocab, hidden, seed=0):
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(tokens, hidden, generator=g).requires_grad_()
    student_head = (0.02 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    teacher_hidden = torch.randn(tokens, hidden, generator=g)
    teacher_head = 0.02 * torch.randn(vocab, hidden, generator=g)
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    return student_hidden, student_head, teacher_hidden, teacher_head, labels, torch.ones(tokens, dtype=torch.bool)


def run_variant(variant, tokens, vocab, hidden, chunk):
    """In this process: one forward + backward; prints loss, grad checksums, seconds and peak-RSS growth."""
    h, w, th, tw, labels, mask = inputs(tokens, vocab, hidden)
    spec = LossSpec(taid_loss, {"t": 0.5})
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if variant == "chunked":
        loss = chunked_loss(spec, h, w, HeadLogits(th, tw), labels, mask, chunk)
    else:
        loss = spec(h @ w.T, th @ tw.T, labels, mask)
    loss.backward()
    seconds = time.perf_counter() - started
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    torch.save({"grad_hidden": h.grad, "grad_head": w.grad}, f"/tmp/chunked_loss_{variant}.pt")
    print(json.dumps({"loss": float(loss), "seconds": seconds, "peak_mib": peak_mib}))


def measure(variant, tokens, vocab, hidden, chunk):
    command = [sys.executable, __file__, "--child", variant, "--tokens", str(tokens), "--vocab", str(vocab),
               "--hidden", str(hidden), "--chunk", str(chunk)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(tokens, vocab, hidden, chunk):
    naive, chunked = measure("naive", tokens, vocab, hidden, chunk), measure("chunked", tokens, vocab, hidden, chunk)
    grads = {v: torch.load(f"/tmp/chunked_loss_{v}.pt") for v in ("naive", "chunked")}
    max_grad_diff = max(float((grads["naive"][k] - grads["chunked"][k]).abs().max()) for k in grads["naive"])
    loss_diff = abs(naive["loss"] - chunked["loss"])
    if loss_diff > 1e-3 * abs(naive["loss"]) or max_grad_diff > 1e-4:
        raise SystemExit(f"chunked and naive disagree: loss diff {loss_diff}, max grad diff {max_grad_diff}")
    return {"tokens": tokens, "vocab": vocab, "hidden": hidden, "chunk": chunk,
            "naive_mib": naive["peak_mib"], "chunked_mib": chunked["peak_mib"],
            "memory_ratio": chunked["peak_mib"] / naive["peak_mib"],
            "naive_s": naive["seconds"], "chunked_s": chunked["seconds"],
            "time_ratio": chunked["seconds"] / naive["seconds"], "loss_diff": loss_diff, "grad_diff": max_grad_diff}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--child", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_variant(args.child, args.tokens[0], args.vocab, args.hidden, args.chunk)
    torch.set_num_threads(torch.get_num_threads())
    print("| tokens | vocab | hidden | chunk | naive peak MiB | chunked peak MiB | memory ratio | naive s | chunked s "
          "| time ratio | max |Δloss| | max |Δgrad| |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tokens in args.tokens:
        r = compare(tokens, args.vocab, args.hidden, args.chunk)
        print(f"| {tokens} | {r['vocab']} | {r['hidden']} | {r['chunk']} | {r['naive_mib']:.0f} | {r['chunked_mib']:.0f} "
              f"| {r['memory_ratio']:.2f} | {r['naive_s']:.2f} | {r['chunked_s']:.2f} | {r['time_ratio']:.2f} "
              f"| {r['loss_diff']:.1e} | {r['grad_diff']:.1e} |")


if __name__ == "__main__":
    main()
