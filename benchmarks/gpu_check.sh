#!/usr/bin/env bash
# GPU checks the CPU test suite cannot make. Run from the repo root, with its .venv, on a GPU machine:
#
#   bash benchmarks/gpu_check.sh                 # memory, then launches in every layout the machine allows
#   bash benchmarks/gpu_check.sh memory|launch   # one of them
#   CPU=1 bash benchmarks/gpu_check.sh launch    # DDP with 2 CPU processes (gloo): checks this script itself
#   NODES=2 NODE_RANK=<r> MAIN_IP=<node 0 address> bash benchmarks/gpu_check.sh launch   # on every node
#
# memory: one distillation of Qwen2.5-1.5B-shaped teacher into 0.5B-shaped student (random weights, one
#   GPU, the trainer's own loop); the planner's per-GPU memory against torch.cuda.max_memory_allocated.
# launch: the same tiny TAID run (fp32, 6 steps, adaptive t) with 1 process and with N processes under
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

cat > "$WORK/launch.py" <<'EOF'
# one tiny TAID run under whatever accelerate launched; rank 0 saves full weights and the t per step
import os, sys, numpy as np, torch
from accelerate import PartialState
from transformers import Qwen2Config, Qwen2ForCausalLM
from taid.objective import Objective
from taid.schedule import TAIDSchedule
from taid.trainer import TrainConfig, train
out, global_rows, world = sys.argv[1], 32, int(os.environ.get("WORLD_SIZE", "1"))   # up to 32 processes
def tiny(hidden, layers, seed):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
data = np.random.default_rng(0).integers(0, 96, (64, 33)).astype(np.int32)
cfg = TrainConfig(steps=6, batch_size=global_rows // world, grad_accum=2, lr=1e-3, precision="fp32",
                  loss_chunk_size=16, seed=0)
schedule = TAIDSchedule(alpha=0.05, total_steps=cfg.steps)
teacher = tiny(64, 2, seed=1).requires_grad_(False)
valid = data[:global_rows]   # one validation batch per process (a process with none waits forever)
result, student = train(tiny(32, 2, seed=2), Objective("taid", teacher=teacher, chunk_size=16), data, valid, cfg,
                        schedule=schedule)
def full(param):  # the whole tensor, whichever engine sharded it
    if hasattr(param, "ds_id"):
        import deepspeed
        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().cpu().clone()
    return (param.full_tensor() if hasattr(param, "full_tensor") else param).detach().cpu().clone()
weights = {name: full(p) for name, p in student.named_parameters()}
state = PartialState()   # after train(): its Accelerator sets the state up (and reads ACCELERATE_USE_CPU)
if state.is_main_process:
    print(f"{state.num_processes} processes, {state.distributed_type}")
    torch.save({"weights": weights, "t": [row["t"] for row in result.history]}, out)
EOF

cat > "$WORK/compare.py" <<'EOF'
import sys, torch
ref, other = (torch.load(path) for path in sys.argv[1:3])
worst = max(float((ref["weights"][k] - other["weights"][k]).abs().max()) for k in ref["weights"])
t_gap = max(abs(a - b) for a, b in zip(ref["t"], other["t"]))
print(f"max weight difference {worst:.2e}, max t difference {t_gap:.1e} over {len(ref['t'])} steps")
sys.exit(0 if worst < 1e-4 and t_gap < 1e-6 and len(ref["t"]) == len(other["t"]) else 1)
EOF

check_memory() {
  $PY "$WORK/memory.py" > "$WORK/memory.log" 2>&1; local rc=$?
  tail -n 12 "$WORK/memory.log"; report memory $rc "$WORK/memory.log"
}

run_launch() {  # tag, then accelerate launch arguments
  local tag=$1; shift
  $ACCELERATE launch "$@" "$WORK/launch.py" "$WORK/$tag.pt" > "$WORK/$tag.log" 2>&1
}

compare() {  # tag, then accelerate launch arguments; rank 0's node compares with the single run
  run_launch "$@"; local rc=$?
  [ $rc = 0 ] && [ "${NODE_RANK:-0}" = 0 ] && { $PY "$WORK/compare.py" "$WORK/single.pt" "$WORK/$1.pt" >> "$WORK/$1.log" 2>&1; rc=$?; }
  grep -E "processes,|max weight" "$WORK/$1.log"; report "$1" $rc "$WORK/$1.log"
}

check_launch() {
  if [ -n "${CPU:-}" ]; then
    export ACCELERATE_USE_CPU=1   # torchrun processes on CPU: accelerate picks MULTI_CPU with gloo
    run_launch single --cpu --num_processes 1 && compare ddp-cpu --multi_gpu --num_processes 2
    return
  fi
  local gpus n=1; gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
  while [ $((n * 2)) -le "$gpus" ] && [ $((n * 2)) -le 8 ]; do n=$((n * 2)); done   # a power of two divides 32 rows
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
    printf '{"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0, "zero_optimization": {"stage": 3}}' \
      $((32 / n)) > "$WORK/ds.json"
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
