"""What the multi-process tests launch with ``accelerate launch``: a tiny TAID run, or a stage module.

    launched.py [--fsdp-on-cpu] train OUT [--stop-after N] [--resume]
    launched.py [--fsdp-on-cpu] module stages.distill <the stage's arguments>

``train`` writes, per process, ``OUT/rank<r>.json``: TAID's t after each step, the sample ids each step
trained on, the validation results and how the models were held; the main process also writes the final
weights, ``OUT/weights.pt``. Checkpoints go to ``OUT/checkpoints``.

accelerate turns FSDP on for accelerators only; ``--fsdp-on-cpu`` lifts that one gate (the processes run
on CPU with gloo), so that what follows it — fully_shard of student and teacher, sharded checkpoints, the
full state gathered for saving — is the code a GPU run takes.
"""
import argparse
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB, SEQ, GLOBAL_BATCH, GRAD_ACCUM, STEPS = 96, 33, 16, 2, 6


def allow_fsdp_on_cpu():
    import accelerate.state as accelerate_state

    original = accelerate_state.AcceleratorState.__init__
    plugins = []

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        plugins.extend([kwargs["fsdp_plugin"]] if kwargs.get("fsdp_plugin") is not None else [])
        # every AcceleratorState() copies the process state's type (MULTI_CPU) back: say FSDP again each time
        if plugins and self.distributed_type == accelerate_state.DistributedType.MULTI_CPU:
            self.distributed_type, self.fsdp_plugin = accelerate_state.DistributedType.FSDP, plugins[0]

    accelerate_state.AcceleratorState.__init__ = init


def tiny_model(hidden, seed):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64, tie_word_embeddings=True))


def data():
    """64 training rows; 20 validation rows, which 2 processes of 4-row batches cannot split evenly."""
    rows = np.random.default_rng(0).integers(0, VOCAB, (84, SEQ)).astype(np.int32)
    return rows[:64], rows[64:]


def run_training(out, world, stop_after=0, resume=False):
    """The tiny run; returns its result and this process's record."""
    from taid.data import as_split
    from taid.objective import Objective
    from taid.schedule import TAIDSchedule
    from taid.trainer import TrainConfig, train

    class RecordingObjective(Objective):
        def loss_sum(self, student, batch, t=None, spec=None):
            seen.append(batch["sample_ids"].tolist())
            return super().loss_sum(student, batch, t, spec)

    seen = []
    train_rows, valid_rows = data()
    cfg = TrainConfig(steps=STEPS, batch_size=GLOBAL_BATCH // (GRAD_ACCUM * world), grad_accum=GRAD_ACCUM, lr=1e-3,
                      precision="fp32", loss_chunk_size=16, eval_every=2, save_every=3, stop_after=stop_after,
                      resume=resume, seed=0)
    schedule = TAIDSchedule(alpha=0.05, total_steps=cfg.steps)
    objective = RecordingObjective("taid", teacher=tiny_model(64, seed=1).requires_grad_(False), chunk_size=16)
    result, student = train(tiny_model(32, seed=2), objective, as_split(train_rows), as_split(valid_rows, "valid"),
                            cfg, schedule=schedule, checkpoint_dir=Path(out) / "checkpoints")
    steps_run = len(seen) // GRAD_ACCUM
    record = {"t": [row["t"] for row in result.history][-steps_run:] if steps_run else [],
              "rows": [sorted(sum(seen[i * GRAD_ACCUM:(i + 1) * GRAD_ACCUM], [])) for i in range(steps_run)],
              "evals": result.evals, "teacher": holding(objective.teacher.model)}
    return result, student, record


def holding(model):
    """How this process holds a model: the share of its parameters stored here."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return {"sharded": any(isinstance(p, DTensor) for p in params), "local_share": local / sum(p.numel() for p in params)}


def train_main(args):
    from accelerate.state import AcceleratorState

    from taid.engines import process_state

    out, state = Path(args.out), process_state()
    result, student, record = run_training(out, state.num_processes, args.stop_after, args.resume)
    record.update(rank=state.process_index, world=state.num_processes, engine=str(AcceleratorState().distributed_type))
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))
    if state.is_main_process:
        torch.save({name: p.detach().clone() for name, p in student.state_dict().items()}, out / "weights.pt")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fsdp-on-cpu", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train")
    train_parser.add_argument("out")
    train_parser.add_argument("--stop-after", type=int, default=0)
    train_parser.add_argument("--resume", action="store_true")
    module_parser = commands.add_parser("module")
    module_parser.add_argument("name")
    module_parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.fsdp_on_cpu:
        allow_fsdp_on_cpu()
    if args.command == "train":
        train_main(args)
    else:
        sys.argv = [args.name, *args.rest]
        runpy.run_module(args.name, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
