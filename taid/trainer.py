"""The training loop: one visible loop, nanoGPT-style, on accelerate.

Each optimizer step takes the next global batch (``batch_size × grad_accum × processes`` packed rows)
of a seeded, endless stream of per-epoch permutations. The loss is a token mean over the whole step:
every micro-batch's summed loss is divided by the step's kept-token count, so accumulation and the
number of processes do not change the gradient. After the step, TAID's t is updated once with that
same mean objective, which every process computes identically.
"""
import json
import math
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from taid import engines
from taid.data import as_split, sample_order, to_batch
from taid.objective import summarise_eval


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    steps: int                         # optimizer steps
    batch_size: int = 8                # packed rows per micro-batch, per process
    grad_accum: int = 1                # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0              # linear warm-up, then cosine decay to 0
    grad_clip: float = 1.0             # max global grad norm; 0 disables
    precision: str = "auto"            # auto: bf16 where the device supports it, else fp32 | bf16 | fp32
    gradient_checkpointing: bool = False
    loss_chunk_size: int = 1024        # tokens per LM-head chunk; 0 = plain full-logit loss
    eval_every: int = 0                # steps between validations; 0 = at the end only
    eval_batches: int = 0              # validation micro-batches; 0 = the whole split
    save_every: int = 0                # steps between checkpoints; 0 = none
    keep_checkpoints: int = 2
    resume: bool = False               # continue from the newest checkpoint in checkpoint_dir
    seed: int = 0
    stop_after: int = 0                # stop this invocation after this many steps (preemptible jobs); 0 = run to the end

    @classmethod
    def from_params(cls, params, where="train"):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**params)

    def fingerprint(self, global_batch):
        """The settings a resumed run must share with the run that wrote the checkpoint. The global batch
        stands for how it is split (per-process rows, accumulation, processes), which a resumed run may
        change: the data stream and the updates depend on the global batch only."""
        run_only = {"resume", "stop_after", "eval_every", "eval_batches", "save_every", "keep_checkpoints",
                    "batch_size", "grad_accum"}
        return {**{k: v for k, v in asdict(self).items() if k not in run_only}, "global_batch": global_batch}


@dataclass
class TrainResult:
    history: list        # one dict per optimizer step: step, loss, t, lr
    evals: list          # one dict per validation: step and its metrics
    finished: bool       # False when stop_after ended the invocation early


def train(model, objective, train_rows, valid_rows, cfg, *, schedule=None, checkpoint_dir=None, describe=None):
    """Train ``model`` on packed ``train_rows`` with ``objective``; see the module docstring. Rows are
    arrays or ``taid.data.Split`` (chat data: with targets)."""
    train_rows, valid_rows = as_split(train_rows, "train"), as_split(valid_rows, "valid")
    # step_scheduler_with_optimizer=False: accelerate would otherwise step the LR schedule once per process
    # on every optimizer step, running it N times too fast under N processes
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.precision), step_scheduler_with_optimizer=False)
    engines.configure(accelerator, cfg)
    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:  # renamed in later transformers 5 releases
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    model, optimizer, lr_schedule = accelerator.prepare(model, optimizer, lr_schedule)
    engines.place_teacher(accelerator, objective)

    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = cfg.batch_size * cfg.grad_accum * world
    fingerprint = json.loads(json.dumps({"train": cfg.fingerprint(global_batch), "run": describe or {}}))
    state = {"step": 0, "position": 0, "history": [], "evals": []}
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else None
    if cfg.resume and checkpoints and _latest(checkpoints):
        state = _load_checkpoint(accelerator, _latest(checkpoints), fingerprint, schedule)
        accelerator.print(f"resumed from {_latest(checkpoints)} at step {state['step']}")
    elif checkpoints and checkpoints.exists() and accelerator.is_main_process:
        shutil.rmtree(checkpoints)  # a fresh run must not later resume from another run's state

    started_at = state["step"]
    if state["step"] == 0:  # where the run starts from, so curves and metrics show the change
        state["evals"].append({"step": 0, **_validate(accelerator, model, objective, valid_rows, cfg)})
    progress = tqdm(total=cfg.steps, initial=state["step"], desc="train", disable=not accelerator.is_main_process)
    while state["step"] < cfg.steps:
        # -- the step's rows: micro-batch j of this rank is slice (j * world + rank) of the global batch
        rows = sample_order(len(train_rows), cfg.seed, state["position"], global_batch)
        step_tokens = int(train_rows[np.sort(rows)].kept_mask().sum())
        t = schedule.t if schedule is not None else None
        loss_sum = torch.zeros((), device=accelerator.device)
        for j in range(cfg.grad_accum):
            part = rows[(j * world + rank) * cfg.batch_size:(j * world + rank + 1) * cfg.batch_size]
            batch = to_batch(train_rows[np.sort(part)], accelerator.device)
            last = j == cfg.grad_accum - 1
            with (nullcontext() if last else accelerator.no_sync(model)), accelerator.autocast():
                micro_sum, _ = objective.loss_sum(model, batch, t)
                # DDP averages gradients over processes: scale so the result is the global token mean
                engines.backward(accelerator, micro_sum * world / max(step_tokens, 1), last, cfg.grad_accum)
            loss_sum += micro_sum.detach()

        # -- the step: one objective for logging, clipping, the optimizer and TAID's t
        step_objective = float(accelerator.reduce(loss_sum, "sum")) / max(step_tokens, 1)
        if not math.isfinite(step_objective):
            raise NonFiniteLossError(f"loss is {step_objective} at step {state['step'] + 1}; stopping before the update")
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = lr_schedule.get_last_lr()[0]
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["position"] += global_batch
        if schedule is not None:
            schedule.update(step_objective)
            engines.check_same_everywhere(accelerator, f"TAID's t after step {state['step']}", schedule.t)
        row = {"step": state["step"], "loss": step_objective, "lr": lr}
        if t is not None:
            row["t"] = t
        state["history"].append(row)
        progress.update(1)
        progress.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("loss", "t")})

        # -- validation, checkpoints, early stop
        done = state["step"] == cfg.steps
        if done or (cfg.eval_every and state["step"] % cfg.eval_every == 0):
            state["evals"].append({"step": state["step"], **_validate(accelerator, model, objective, valid_rows, cfg)})
        if checkpoints and cfg.save_every and (done or state["step"] % cfg.save_every == 0):
            _save_checkpoint(accelerator, checkpoints, state, fingerprint, schedule, cfg.keep_checkpoints)
        if cfg.stop_after and state["step"] - started_at >= cfg.stop_after and not done:
            break
    progress.close()
    finished = state["step"] == cfg.steps
    accelerator.wait_for_everyone()
    return TrainResult(state["history"], state["evals"], finished), engines.plain_model(accelerator, model)


def _validate(accelerator, model, objective, valid_rows, cfg):
    """Validation over the whole split (or ``eval_batches`` per process), its sums added over processes.
    Every process runs the same number of forward passes, since DDP and FSDP forwards are collectives: one
    with fewer batches than the others reruns its first and leaves it out of the sums."""
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = math.ceil(len(valid_rows) / (world * cfg.batch_size))
    if cfg.eval_batches:
        per_process = min(per_process, cfg.eval_batches)
    sums = torch.zeros(3, dtype=torch.float64)
    for j in range(per_process):
        start = (j * world + rank) * cfg.batch_size
        counted = start < len(valid_rows)
        rows = valid_rows[start:start + cfg.batch_size] if counted else valid_rows[:cfg.batch_size]
        with accelerator.autocast():
            batch_sums = objective.eval_sums(model, [to_batch(rows, accelerator.device)])
        sums += batch_sums if counted else 0.0
    model.train()
    return summarise_eval(accelerator.reduce(sums.to(accelerator.device), "sum").cpu(), objective.teacher is not None)


def _mixed_precision(precision):
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return "bf16" if precision == "bf16" else "no"


# -- checkpoints: accelerate saves model, optimizer, LR schedule and RNG states; we add ours beside them

def _latest(checkpoints):
    found = sorted(checkpoints.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    return found[-1] if found else None


def _save_checkpoint(accelerator, checkpoints, state, fingerprint, schedule, keep):
    final = checkpoints / f"step_{state['step']:08d}"
    partial = checkpoints / f".partial_{state['step']:08d}"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process writes its part (its RNG state; its shard under FSDP)
    if accelerator.is_main_process:
        trainer_state = {**state, "fingerprint": fingerprint,
                         "schedule": schedule.state_dict() if schedule is not None else None}
        (partial / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)  # a crash mid-save leaves only a .partial folder, never a broken step_ one
        for old in sorted(checkpoints.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_checkpoint(accelerator, path, fingerprint, schedule):
    saved = json.loads((path / "trainer_state.json").read_text())
    if saved["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint {path} was written by a run with other settings; "
                         f"saved {saved['fingerprint']}, now {fingerprint}. Delete it or set resume: false")
    accelerator.load_state(str(path))
    if schedule is not None:
        schedule.load_state_dict(saved["schedule"])
    return {k: saved[k] for k in ("step", "position", "history", "evals")}
