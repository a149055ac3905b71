#!/usr/bin/env bash
# The chunked-loss and distillation-step benchmarks on one GPU, in bf16: the same tables as `make bench`
# prints on CPU, with absolute times. Run from the repo root, with its .venv, on a GPU machine:
#
#   bash benchmarks/gpu.sh            # both: tables printed, results in benchmarks/results/*_gpu.json
#   bash benchmarks/gpu.sh chunked    # one of them: chunked | distill
#
# Each benchmark checks first that its two computations agree (bf16 tolerances) and exits non-zero when
# they do not. The README is left alone: its tables are the CPU runs'.
set -euo pipefail
PY=.venv/bin/python
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run this on a GPU machine')"
$PY -c "import trl" 2>/dev/null || .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev,tvm,bench]'
$PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"

chunked() {  # V = 151,936; the trainer's default chunk; N up to 16k tokens, where full logits take GiBs
  $PY benchmarks/chunked_loss.py --device cuda --dtype bfloat16 --hidden 896 1536 --tokens 1024 4096 16384 \
    --chunk 1024 --rounds 5 --results benchmarks/results/chunked_loss_gpu.json --no-readme
}

distill() {  # the tiny teacher and student at V = 151,936; a batch the size of a GPU step
  $PY benchmarks/distill_step.py --device cuda --dtype bfloat16 --batch 16 --seq-len 512 --chunk 1024 \
    --rounds 10 --results benchmarks/results/distill_step_gpu.json --no-readme
}

case "${1:-all}" in
  chunked) chunked ;;
  distill) distill ;;
  all) chunked; distill ;;
  *) echo "usage: $0 [all|chunked|distill]"; exit 2 ;;
esac
