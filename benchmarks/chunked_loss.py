"""Peak memory and time of the TAID loss, forward + backward: chunked LM head vs full logits.

The grid is every hidden size × every token count at V = 151,936 (Qwen2.5's output size). Per cell:
1. each variant runs once in a fresh process (peak memory is per process) on the same seeded inputs, under
   a memory cap (on CPU: the memory available at the start, less a margin), so a full-logit form too large
   for the machine is reported as not fitting instead of pushing the machine out of memory;
2. loss values and gradients of the two are compared: a gap over the tolerance stops the benchmark;
3. both are timed in this process, interleaved (naive, chunked, naive, ...); the time ratio is the median
   of the rounds' ratios. Where the naive form does not fit, the chunked loss value is checked against the
   full-logit value computed without gradients, block by block, and the chunked time is that of its one run.

    python benchmarks/chunked_loss.py           # H 896 and 1,536 × N 1,024 and 4,096, fp32 on CPU
    python benchmarks/chunked_loss.py --hidden 512 --tokens 256 --vocab 32000 --results /tmp/x.json --no-readme
    bash benchmarks/gpu.sh chunked              # bf16 on a GPU
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from report import number, peak_memory, relative_gap, require_agreement, table, write_results
from taid.chunked import LossSpec, chunked_loss
from taid.losses import taid_loss
from taid.teachers import HeadLogits

VARIANTS = ("naive", "chunked")
OUT_OF_MEMORY = 3                        # a child's exit status when its variant does not fit under the cap
T = 0.5                                  # TAID's interpolation in the measured loss
TOLERANCE = {"float32": {"loss": 1e-5, "grad": 1e-4}, "bfloat16": {"loss": 1e-2, "grad": 3e-2}}


def inputs(tokens, vocab, hidden, device="cpu", dtype=torch.float32, seed=0):
    """Seeded hidden states and heads (drawn in fp32 on CPU, so every device and dtype sees the same
    values), labels and the kept mask. Scaling is in place: no temporary raises the memory baseline."""
    g = torch.Generator().manual_seed(seed)
    student_hidden = torch.randn(tokens, hidden, generator=g)
    student_head = torch.randn(vocab, hidden, generator=g).mul_(0.02)
    teacher_hidden = torch.randn(tokens, hidden, generator=g)
    teacher_head = torch.randn(vocab, hidden, generator=g).mul_(0.02)
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    move = dict(device=device, dtype=dtype)
    return (student_hidden.to(**move).requires_grad_(), student_head.to(**move).requires_grad_(),
            teacher_hidden.to(**move), teacher_head.to(**move), labels.to(device),
            torch.ones(tokens, dtype=torch.bool, device=device))


def forward_backward(variant, tensors, chunk, t=T):
    """One loss + backward of ``variant``: the loss value, and the gradients in the two leaves' ``.grad``."""
    h, w, th, tw, labels, mask = tensors
    h.grad = w.grad = None
    spec = LossSpec(taid_loss, {"t": t})
    if variant == "chunked":
        loss = chunked_loss(spec, h, w, HeadLogits(th, tw), labels, mask, chunk)
    else:
        loss = spec(h @ w.T, th @ tw.T, labels, mask)
    loss.backward()
    return float(loss.detach())


def timed(variant, tensors, chunk):
    """Seconds of one forward + backward, and the loss value."""
    cuda = tensors[0].device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    loss = forward_backward(variant, tensors, chunk)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, loss


def agreement(naive, chunked, dtype):
    """Stops unless the two variants' loss values and gradients (dicts of ``loss``, ``grad_hidden``,
    ``grad_head``; a naive value without gradients compares the loss alone) agree within the tolerance of
    ``dtype``; returns the relative gaps."""
    tol = TOLERANCE[dtype]
    gaps = {"loss": abs(naive["loss"] - chunked["loss"]) / max(abs(naive["loss"]), 1e-12), "grad": None}
    checks = {"loss": (gaps["loss"], tol["loss"])}
    if "grad_head" in naive:
        gaps["grad"] = max(relative_gap(naive[k], chunked[k]) for k in ("grad_hidden", "grad_head"))
        checks["gradients"] = (gaps["grad"], tol["grad"])
    require_agreement("chunked and naive TAID losses", **checks)
    return gaps


@torch.no_grad()
def naive_loss_by_blocks(tensors, block=1024, t=T):
    """The full-logit loss value, ``block`` tokens at a time (it is a sum over tokens): the reference
    where the naive forward + backward does not fit."""
    h, w, th, tw, labels, mask = tensors
    spec = LossSpec(taid_loss, {"t": t})
    return sum(float(spec(h[rows] @ w.T, th[rows] @ tw.T, labels[rows], mask[rows]))
               for rows in (slice(start, start + block) for start in range(0, h.shape[0], block)))


# -- one variant in a fresh process

def run_child(args):
    """One measured forward + backward in this process; saves loss and gradients for the comparison."""
    device = torch.device(args.device)
    if device.type == "cpu":  # RLIMIT_AS: a failed allocation here, instead of the kernel's OOM killer anywhere
        cap = int(args.memory_cap_gib * 1024 ** 3)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    dtype = getattr(torch, args.dtype)
    forward_backward(args.child, inputs(16, 64, args.hidden[0], device, dtype), 8)  # kernels and threads start up
    tensors = inputs(args.tokens[0], args.vocab, args.hidden[0], device, dtype)
    try:
        with peak_memory(device) as peak:
            seconds, loss = timed(args.child, tensors, args.chunk)
    except (RuntimeError, MemoryError) as error:  # torch reports a failed allocation as a RuntimeError
        if "memory" not in str(error).lower():
            raise
        print(json.dumps({"error": str(error).splitlines()[0][:200]}))
        sys.exit(OUT_OF_MEMORY)
    h, w = tensors[:2]
    torch.save({"loss": loss, "grad_hidden": h.grad.cpu(), "grad_head": w.grad.cpu()}, args.save)
    print(json.dumps({"seconds": seconds, "peak_mib": peak["mib"]}))


def measure(variant, tokens, hidden, args, save):
    """The variant's child run: seconds and peak MiB, or None when it did not fit under the cap."""
    command = [sys.executable, __file__, "--child", variant, "--tokens", str(tokens), "--hidden", str(hidden),
               "--vocab", str(args.vocab), "--chunk", str(args.chunk), "--device", args.device,
               "--dtype", args.dtype, "--memory-cap-gib", str(args.memory_cap_gib), "--save", str(save)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == OUT_OF_MEMORY:
        return None
    if done.returncode != 0:
        raise SystemExit(f"the {variant} run (N={tokens}, H={hidden}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- one cell of the grid

def cell(tokens, hidden, args, work):
    runs = {v: measure(v, tokens, hidden, args, work / f"{v}.pt") for v in VARIANTS}
    if runs["chunked"] is None:
        raise SystemExit(f"the chunked loss does not fit in {args.memory_cap_gib:.1f} GiB at N={tokens}, H={hidden}")
    row = {"tokens": tokens, "hidden": hidden, "vocab": args.vocab, "chunk": args.chunk, "dtype": args.dtype,
           "chunked_mib": runs["chunked"]["peak_mib"], "naive_fits": runs["naive"] is not None}
    if runs["naive"] is None:  # the value alone, by blocks; nothing to time against
        tensors = inputs(tokens, args.vocab, hidden, torch.device(args.device), getattr(torch, args.dtype))
        reference = {"loss": naive_loss_by_blocks(tensors, block=min(args.tokens))}
        gaps = agreement(reference, torch.load(work / "chunked.pt"), args.dtype)
        return {**row, "naive_mib": None, "memory_ratio": None, "naive_s": None, "time_ratio": None,
                "chunked_s": runs["chunked"]["seconds"], "loss_gap": gaps["loss"], "grad_gap": None,
                "loss_checked_by_blocks": True}
    gaps = agreement(*(torch.load(work / f"{v}.pt") for v in VARIANTS), args.dtype)
    times = interleaved_times(tokens, hidden, args)
    return {**row, "naive_mib": runs["naive"]["peak_mib"],
            "memory_ratio": runs["chunked"]["peak_mib"] / runs["naive"]["peak_mib"],
            "naive_s": statistics.median(times["naive"]), "chunked_s": statistics.median(times["chunked"]),
            "time_ratio": statistics.median(c / n for n, c in zip(times["naive"], times["chunked"])),
            "rounds": len(times["naive"]), "loss_gap": gaps["loss"], "grad_gap": gaps["grad"]}


def interleaved_times(tokens, hidden, args):
    tensors = inputs(tokens, args.vocab, hidden, torch.device(args.device), getattr(torch, args.dtype))
    times = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            times[variant].append(timed(variant, tensors, args.chunk)[0])
    return times


def _naive_mib(row):
    return number(row["naive_mib"], 0) if row["naive_fits"] else f"does not fit in {row['cap_gib']:.1f} GiB"


def _memory_ratio(row):  # where the naive form does not fit, its peak is at least the cap
    if row["naive_fits"]:
        return number(row["memory_ratio"])
    return f"< {row['chunked_mib'] / (row['cap_gib'] * 1024):.2f}"


def _gap(row, key):
    if row[key] is None:
        return "—"
    return f"{row[key]:.0e}" + (" (by blocks)" if row.get("loss_checked_by_blocks") else "")


COLUMNS = [
    ("H", lambda r: f"{r['hidden']:,}"), ("N tokens", lambda r: f"{r['tokens']:,}"),
    ("chunk", lambda r: f"{r['chunk']:,}"), ("naive peak MiB", _naive_mib),
    ("chunked peak MiB", lambda r: number(r["chunked_mib"], 0)), ("memory ratio", _memory_ratio),
    ("naive s", lambda r: number(r["naive_s"])), ("chunked s", lambda r: number(r["chunked_s"])),
    ("time ratio", lambda r: number(r["time_ratio"])),
    ("rel. loss gap", lambda r: _gap(r, "loss_gap")), ("rel. grad gap", lambda r: _gap(r, "grad_gap")),
]


def default_cap_gib(device):
    """CPU: the memory available now, less 1.5 GiB for everything else; CUDA: the GPU's memory (torch
    itself raises when it is exhausted)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
    return max(psutil.virtual_memory().available / 1024 ** 3 - 1.5, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--hidden", type=int, nargs="+", default=[896, 1536])
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--chunk", type=int, default=256, help="tokens per LM-head chunk")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds per cell")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="float32")
    parser.add_argument("--memory-cap-gib", type=float, default=None, help="default: available memory − 1.5 GiB")
    parser.add_argument("--results", default=None, help="default: benchmarks/results/chunked_loss.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    if args.memory_cap_gib is None:
        args.memory_cap_gib = default_cap_gib(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for hidden in args.hidden:
            for tokens in args.tokens:
                rows.append({**cell(tokens, hidden, args, Path(work)), "cap_gib": args.memory_cap_gib})
                print(json.dumps(rows[-1]), flush=True)
    machine = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    write_results("chunked_loss", {"machine": machine, "rows": rows}, table(COLUMNS, rows), args.results,
                  readme=not args.no_readme)


if __name__ == "__main__":
    main()
