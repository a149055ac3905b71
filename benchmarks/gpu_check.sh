#!/usr/bin/env bash
# GPU checks the CPU test suite cannot make. Run from the repo root, with its .venv, on a GPU machine:
#
#   bash benchmarks/gpu_check.sh                 # memory, then launches in every layout the machine allows
#   bash benchmarks/gpu_check.sh memory|launch   # one of them
#   CPU=1 bash benchmarks/gpu_check.sh launch    # DDP and FSDP2 with 2 CPU processes (gloo): checks the script
#   NODES=2 NODE_RANK=<r> MAIN_IP=<node 0 address> bash benchmarks/gpu_check.sh launch   # on every node
#
# memory: one distillation of Qwen2.5-1.5B-shaped teacher into 0.5B-shaped student (random weights, one
#   GPU, the trainer's own loop); the planner's per-GPU memory against torch.cuda.max_memory_allocated.
# launch: tests/launched.py's tiny TAID run (fp32, 6 steps, adaptive t, a live teacher) with 1 process and N under
#   DDP, FSDP2 and DeepSpeed ZeRO-3 (when installed): final weights allclose, TAID t equal at every step.
# Prints PASS / FAIL per check and exits non-zero when one failed.
set -uo pipefail
PY=.venv/bin/python ACCELERATE=.venv/bin/accelerate
WORK=$(mktemp -d) && trap 'rm -rf "$WORK"' EXIT
FAILED=0
report() {  # name, exit status, log (kept in /tmp when the check failed)
  if [ "$2" = 0 ]; then echo "PASS $1"; else cp "$3" "/tmp/gpu_check_$1.log"; echo "FAIL $1 (log: /tmp/gpu_check_$1.log)"; FAILED=1; fi
}

cat > "$WORK/memory.py" <<'EOF'
import sys, numpy as np, torch
from transformers import AutoModelForCausalLM
from taid.models import config_for
from taid.objective import Objective
from taid.plan import GIB, Setup, make_plan, model_shape
from taid.schedule import TAIDSchedule
from taid.trainer import TrainConfig, train
student_cfg, teacher_cfg = (config_for(f"configs/models/qwen2.5-{n}-instruct.json") for n in ("0.5b", "1.5b"))
rows, seq = 4, 1024
cfg = TrainConfig(steps=2, batch_size=rows, lr=1e-4, precision="bf16", gradient_checkpointing=True, loss_chunk_size=512)
with torch.device("cuda"):
    student = AutoModelForCausalLM.from_config(student_cfg)
    teacher = AutoModelForCausalLM.from_config(teacher_cfg, dtype=torch.bfloat16).requires_grad_(False)
data = np.random.default_rng(0).integers(0, 151_665, (16, seq)).astype(np.int32)
torch.cuda.reset_peak_memory_stats()
train(student, Objective("taid", teacher=teacher, n_shared=151_665, chunk_size=512), data, data[:rows], cfg,
      schedule=TAIDSchedule(total_steps=2))
measured = torch.cuda.max_memory_allocated()
setup = Setup(gpus=1, gpu_mem_gib=1e3, layout="ddp", placement="replicated", batch_size=rows, seq_len=seq,
              loss_chunk=512, reserve_gib=0)
plan = make_plan(model_shape("student", student_cfg), model_shape("teacher", teacher_cfg), setup, 151_665)
predicted = sum(plan.memory.values())
for name, size in plan.memory.items():
    print(f"  planned {name:28s} {size / GIB:6.2f} GiB")
print(f"measured {measured / GIB:.2f} GiB, planned {predicted / GIB:.2f} GiB, ratio {measured / predicted:.2f}")
sys.exit(0 if 0.75 <= measured / predicted <= 1.10 else 1)
EOF

cat > "$WORK/compare.py" <<'EOF'
# a multi-process run of tests/launched.py against the single-process one: weights, and t on every rank
import json, sys, torch
from pathlib import Path
single, other = map(Path, sys.argv[1:3])
ref, got = (torch.load(d / "weights.pt") for d in (single, other))
worst = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
ref_t = json.loads((single / "rank0.json").read_text())["t"]
ranks = [json.loads(p.read_text()) for p in sorted(other.glob("rank*.json"))]
t_gap = max(abs(a - b) for r in ranks for a, b in zip(ref_t, r["t"]))
print(f"{len(ranks)} processes, {ranks[0]['engine']}: max weight difference {worst:.2e}, "
      f"max t difference {t_gap:.1e} over {len(ref_t)} steps")
sys.exit(0 if worst < 1e-4 and t_gap < 1e-6 and all(len(r["t"]) == len(ref_t) for r in ranks) else 1)
EOF

check_memory() {
  $PY "$WORK/memory.py" > "$WORK/memory.log" 2>&1; local rc=$?
  tail -n 12 "$WORK/memory.log"; report memory $rc "$WORK/memory.log"
}

run_launch() {  # tag, then accelerate launch arguments; the run is tests/launched.py (LAUNCHED_FLAGS: its flags)
  local tag=$1; shift
  mkdir -p "$WORK/$tag"
  $ACCELERATE launch "$@" tests/launched.py ${LAUNCHED_FLAGS:-} train "$WORK/$tag" > "$WORK/$tag.log" 2>&1
}

compare() {  # tag, then accelerate launch arguments; rank 0's node compares with the single run
  run_launch "$@"; local rc=$?
  [ $rc = 0 ] && [ "${NODE_RANK:-0}" = 0 ] && { $PY "$WORK/compare.py" "$WORK/single" "$WORK/$1" >> "$WORK/$1.log" 2>&1; rc=$?; }
  grep -E "max weight" "$WORK/$1.log"; report "$1" $rc "$WORK/$1.log"
}

check_launch() {
  if [ -n "${CPU:-}" ]; then
    export ACCELERATE_USE_CPU=1   # torchrun processes on CPU: accelerate picks MULTI_CPU with gloo
    run_launch single --cpu --num_processes 1 && compare ddp-cpu --multi_gpu --num_processes 2 --mixed_precision no
    LAUNCHED_FLAGS=--fsdp-on-cpu compare fsdp-cpu --config_file configs/accelerate/fsdp.yaml --num_processes 2 \
      --mixed_precision no
    return
  fi
  local gpus n=1; gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
  while [ $((n * 2)) -le "$gpus" ] && [ $((n * 2)) -le 8 ]; do n=$((n * 2)); done   # a power of two divides 16 rows
  run_launch single --config_file configs/accelerate/single-gpu.yaml || { report single 1 "$WORK/single.log"; return; }
  if [ -n "${NODES:-}" ]; then
    compare multi-node --config_file configs/accelerate/multi-node.yaml --num_machines "$NODES" \
      --num_processes $((NODES * n)) --machine_rank "$NODE_RANK" --main_process_ip "$MAIN_IP"
    return
  fi
  [ "$n" -lt 2 ] && { echo "SKIP multi-process launches: one GPU"; return; }
  compare ddp --config_file configs/accelerate/ddp.yaml --num_processes $n
  compare fsdp --config_file configs/accelerate/fsdp.yaml --num_processes $n --mixed_precision no
  if $PY -c "import deepspeed" 2>/dev/null; then
    printf '{"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0, "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": true}}' \
      $((16 / (2 * n))) > "$WORK/ds.json"
    compare zero3 --use_deepspeed --deepspeed_config_file "$WORK/ds.json" --num_processes $n --mixed_precision no
  else
    echo "SKIP zero3: deepspeed is not installed (pip install deepspeed)"
  fi
}

case "${1:-all}" in
  memory) check_memory ;;
  launch) check_launch ;;
  all) [ -z "${CPU:-}" ] && check_memory; check_launch ;;
  *) echo "usage: $0 [all|memory|launch]"; exit 2 ;;
esac
exit $FAILED
