#!/usr/bin/env bash
# Side-by-side CPU training-step comparison, vitcore vs PyTorch, in one session on one machine.
# Needs: python3 with torch (pip install torch). Usage: bash benches/compare_cpu.sh [seed|small ...]
set -euo pipefail
cd "$(dirname "$0")/.."
presets=${*:-seed small}
export RAYON_NUM_THREADS=2
echo "machine: $(lscpu | sed -n 's/^Model name: *//p') x $(nproc) cores; commit $(git rev-parse --short HEAD)"
cargo bench --bench train_step --no-run >/dev/null 2>&1
for p in $presets; do
  steps=5; [ "$p" = small ] && steps=10
  cargo bench --bench train_step -- "$p" --steps "$steps" --warmup 2 2>/dev/null
  python3 benches/torch_train.py --preset "$p" --threads 2 --steps "$steps" --warmup 2 2>/dev/null
done
