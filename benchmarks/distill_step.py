"""Seconds per step and peak memory of a distillation step: ours against TRL's GKDTrainer, side by side.

Both distil the same tiny Qwen2 teacher (configs/models/teacher-tiny.json) into the same tiny student
(configs/models/student-tiny.json), both at V = 151,936 (Qwen2.5's output size), on the same packed batch
with every position kept, minimising the supervised forward KL(teacher ‖ student), token mean:
- ours: the trainer's step, ``Objective("forward_kl")`` with the chunked LM head; the summed loss over the
  kept tokens divided by their count, then backward;
- TRL: ``GKDTrainer.training_step`` with beta=0 (its generalized_jsd_loss is then
  ``F.kl_div(log q, log p, log_target=True)`` = KL(p‖q) per token), lmbda=0 (never generates on-policy),
  seq_kd off, the loss at temperature 1 (the default it is called with), mean over labels != -100, fp32
  unless bf16 is asked for (TRL's config would default to bf16 autocast), no gradient checkpointing (TRL's
  default would turn it on; our trainer's is off).
Each step then clips the gradients and takes a torch AdamW update, the same code on both sides.

First both must give the same loss and the same student gradients on the same batch and weights. Then
steps are timed interleaved (ours, TRL, ours, ...) after one warm-up step each; the time ratio is the median
of the rounds' ratios. Each variant's peak memory is measured in a fresh process over two steps (the
second includes AdamW's state), as the growth over the models and batch already in memory.

bf16 (autocast over fp32 weights, both sides) is for a GPU: CPU autocast keeps log_softmax in bf16, so
there TRL's loss drifts a few % from ours, which computes it in fp32, and the check stops the run.

    python benchmarks/distill_step.py                       # 8 rows × 128 tokens, fp32 on CPU
    bash benchmarks/gpu.sh distill                          # bf16 on a GPU
"""
import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from report import REPO, number, peak_memory, relative_gap, require_agreement, table, write_results
from taid.data import Split, to_batch
from taid.models import config_for
from taid.objective import Objective

VARIANTS = ("ours", "trl")
STUDENT, TEACHER = REPO / "configs/models/student-tiny.json", REPO / "configs/models/teacher-tiny.json"
TOLERANCE = {"float32": {"loss": 1e-5, "grad": 1e-4}, "bfloat16": {"loss": 1e-2, "grad": 5e-2}}
LR, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.01, 1.0   # the update after either loss: TrainConfig's defaults


def tiny_model(config_path, vocab, seed):
    config = config_for(config_path)
    config.vocab_size = vocab
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def random_rows(batch, seq_len, vocab, seed=0):
    """Packed rows of token ids, no padding: every position but each row's last is kept."""
    return np.random.default_rng(seed).integers(0, vocab, (batch, seq_len)).astype(np.int32)


class OursStep:
    """The trainer's micro-batch: ``Objective.loss_sum`` over the kept tokens, divided by their count."""

    def __init__(self, student, teacher, rows, device, chunk):
        self.student = student.to(device).train()
        self.objective = Objective("forward_kl", teacher=teacher, chunk_size=chunk).to(device)
        self.batch = to_batch(Split(rows), device)

    def loss_backward(self):
        loss_sum, n_tokens = self.objective.loss_sum(self.student, self.batch)
        loss = loss_sum / n_tokens
        loss.backward()
        return float(loss.detach())


class TRLStep:
    """``GKDTrainer.training_step`` (forward of both models, generalized JSD at beta=0, backward)."""

    def __init__(self, student, teacher, rows, device, bf16, work):
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from datasets import Dataset
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(output_dir=str(work), per_device_train_batch_size=len(rows), max_length=rows.shape[1],
                           lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, gradient_checkpointing=False,
                           bf16=bf16, use_cpu=device.type == "cpu", report_to="none", save_strategy="no",
                           logging_strategy="no", learning_rate=LR, weight_decay=WEIGHT_DECAY, seed=0)
        self.trainer = GKDTrainer(model=student.to(device), teacher_model=teacher.to(device), args=config,
                                  train_dataset=Dataset.from_dict({"input_ids": rows.tolist()}),
                                  processing_class=_word_tokenizer(), data_collator=lambda features: features)
        self.trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which is not run here
        self.student = self.trainer.model
        input_ids = torch.from_numpy(rows).long().to(device)
        self.inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}

    def loss_backward(self):
        return float(self.trainer.training_step(self.student, dict(self.inputs)))


def _word_tokenizer():
    """GKDTrainer needs a tokenizer for its pad id only: a two-word one, built here (nothing downloaded)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="<eos>")


def make_step(variant, args, work, beta=0.0):
    """A fresh step of ``variant`` with its own copies of the seeded models; ``beta`` only for TRL (the
    tests use another to check that a wrong comparison is caught)."""
    device = torch.device(args.device)
    student = tiny_model(STUDENT, args.vocab, seed=2)
    teacher = tiny_model(TEACHER, args.vocab, seed=1).requires_grad_(False)
    rows = random_rows(args.batch, args.seq_len, args.vocab)
    if variant == "ours":
        step = OursStep(student, teacher, rows, device, args.chunk)
    else:
        step = TRLStep(student, teacher, rows, device, args.dtype == "bfloat16", work)
        step.trainer.beta = beta
    step.optimizer = torch.optim.AdamW(step.student.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    return step


def autocast(args):
    if args.dtype == "bfloat16":
        return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
    return nullcontext()


def train_step(step, args):
    """One optimizer step; seconds and the loss."""
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    with autocast(args):
        loss = step.loss_backward()
    torch.nn.utils.clip_grad_norm_(step.student.parameters(), GRAD_CLIP)
    step.optimizer.step()
    step.optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, loss


def agreement(steps, args):
    """Stops unless both sides' losses and student gradients agree on the same batch and initial weights;
    returns the relative gaps. Leaves the gradients cleared."""
    values, grads = {}, {}
    for variant, step in steps.items():
        with autocast(args):
            values[variant] = step.loss_backward()
        grads[variant] = {name: p.grad.detach().clone() for name, p in step.student.named_parameters()}
        step.optimizer.zero_grad(set_to_none=True)
    tol = TOLERANCE[args.dtype]
    gaps = {"loss": abs(values["ours"] - values["trl"]) / max(abs(values["trl"]), 1e-12),
            "grad": max(relative_gap(grads["trl"][name], grads["ours"][name]) for name in grads["trl"])}
    require_agreement("our forward-KL step and TRL's GKD step (beta=0)", loss=(gaps["loss"], tol["loss"]),
                      gradients=(gaps["grad"], tol["grad"]))
    return {"loss": values["trl"], "loss_gap": gaps["loss"], "grad_gap": gaps["grad"]}


def interleaved_times(args, work):
    steps = {variant: make_step(variant, args, work) for variant in VARIANTS}
    checked = agreement(steps, args)
    for step in steps.values():  # warm-up
        train_step(step, args)
    times = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            times[variant].append(train_step(step, args)[0])
    return checked, times


# -- peak memory of one variant in a fresh process

def run_child(args):
    with tempfile.TemporaryDirectory() as work:
        step = make_step(args.child, args, Path(work))
        with peak_memory(args.device) as peak:
            seconds = [train_step(step, args)[0] for _ in range(2)]
    print(json.dumps({"peak_mib": peak["mib"], "seconds": seconds}))


def measure_memory(variant, args):
    command = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch), "--seq-len",
               str(args.seq_len), "--vocab", str(args.vocab), "--chunk", str(args.chunk), "--device", args.device,
               "--dtype", args.dtype]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {variant} memory run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


COLUMNS = [
    ("batch × seq_len", lambda r: f"{r['batch']} × {r['seq_len']}"), ("V", lambda r: f"{r['vocab']:,}"),
    ("chunk", lambda r: f"{r['chunk']:,}"), ("dtype", lambda r: r["dtype"]),
    ("ours s/step", lambda r: number(r["ours_s"])), ("TRL s/step", lambda r: number(r["trl_s"])),
    ("time ratio", lambda r: number(r["time_ratio"])),
    ("ours peak MiB", lambda r: number(r["ours_mib"], 0)), ("TRL peak MiB", lambda r: number(r["trl_mib"], 0)),
    ("memory ratio", lambda r: number(r["memory_ratio"])),
    ("loss (KL)", lambda r: f"{r['loss']:.4f}"), ("rel. loss gap", lambda r: f"{r['loss_gap']:.0e}"),
    ("rel. grad gap", lambda r: f"{r['grad_gap']:.0e}"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="packed rows per step")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per row (the default pipeline's)")
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--chunk", type=int, default=256, help="our LM-head chunk (loss_chunk_size)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed steps per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(TOLERANCE), default="float32")
    parser.add_argument("--results", default=None, help="default: benchmarks/results/distill_step.json")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    with tempfile.TemporaryDirectory() as work:
        checked, times = interleaved_times(args, Path(work))
    memory = {variant: measure_memory(variant, args) for variant in VARIANTS}
    row = {"batch": args.batch, "seq_len": args.seq_len, "tokens": args.batch * (args.seq_len - 1),
           "vocab": args.vocab, "chunk": args.chunk, "dtype": args.dtype, "device": args.device,
           "ours_s": statistics.median(times["ours"]), "trl_s": statistics.median(times["trl"]),
           "time_ratio": statistics.median(o / t for o, t in zip(times["ours"], times["trl"])),
           "times": times, "ours_mib": memory["ours"], "trl_mib": memory["trl"],
           "memory_ratio": memory["ours"] / memory["trl"], **checked}
    write_results("distill_step", {"threads": torch.get_num_threads(), "rows": [row]}, table(COLUMNS, [row]),
                  args.results, readme=not args.no_readme)


if __name__ == "__main__":
    main()
