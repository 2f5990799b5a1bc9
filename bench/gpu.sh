#!/usr/bin/env bash
# Every benchmark of bench/ at its full configuration on this machine's GPU, in one go
# (each bench has a time limit, about 21 minutes in all; on an H200 the first seven benches
# took about 7), then one table of all figures:
#   bash bench/gpu.sh [RESULTS_DIR]      (default bench/results)
# Logs and JSON land in RESULTS_DIR; the table is RESULTS_DIR/gpu-<GPU name>.md, for
# BENCHMARKS.md to quote. Uses .venv/bin/python when there is one, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
out=${1:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  echo "bench/gpu.sh needs a CUDA GPU; on a CPU run the benchmarks one by one." >&2
  exit 2
fi

# name, time limit (s), command: each bench's last stdout line is its JSON summary.
bench() {
  local name=$1 limit=$2
  shift 2
  echo "== $name" >&2
  timeout "$limit" "$py" "$@" 2>"$out/$name.err" | tee "$out/$name.log"
  tail -n 1 "$out/$name.log" >"$out/$name.json"
}

bench fp8_accuracy 40 bench/fp8_accuracy.py
bench flux_speed 400 bench/flux_speed.py --budget-s 300 --json "$out/flux_speed.partial.json"
bench studio_memory 90 bench/studio_memory.py
bench lora_switch 45 bench/lora_switch.py --device cuda --heads 24 --runs 5
bench regrade 45 bench/regrade.py --runs 5
bench expression 120 bench/expression.py --moves 20
bench refine 180 bench/refine.py
bench identity 150 bench/identity.py
bench upscale 120 bench/upscale.py
bench regions 90 bench/regions.py
"$py" bench/gpu_table.py "$out"
