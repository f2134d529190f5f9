#!/usr/bin/env bash
# Side-by-side GPU training-step comparison, vitcore vs PyTorch, in one session on one GPU:
# `vitcore bench step --device cuda` and `benches/torch_train.py --device cuda` on the same
# presets, same batch, same number of steps; prints both JSON records and the ratio of images/s.
# On the GPU machine (no Rust there) it uses the packed binary .gpu/vitcore
# (`scripts/gpu-check.sh pack`); VITCORE_BIN overrides. Needs python3 with torch (CUDA).
# Usage: bash benches/compare_gpu.sh [seed|small ...]   (STEPS=20 WARMUP=3 by default)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${VITCORE_BIN:-.gpu/vitcore}
[ -x "$bin" ] || bin=target/release/vitcore
presets=${*:-seed small}
steps=${STEPS:-20}
warmup=${WARMUP:-3}
echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); commit ${VITCORE_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"
echo "command: bash benches/compare_gpu.sh $presets (STEPS=$steps WARMUP=$warmup, binary $bin)"
fail=0
for p in $presets; do
  if ! v=$("$bin" bench step --preset "$p" --device cuda --steps "$steps" --warmup "$warmup" | tail -1); then
    echo "vitcore bench step --preset $p failed"; fail=1; continue
  fi
  if ! t=$(python3 benches/torch_train.py --preset "$p" --device cuda --steps "$steps" --warmup "$warmup" 2>/dev/null | tail -1); then
    echo "benches/torch_train.py --preset $p failed"; fail=1; continue
  fi
  echo "$v"
  echo "$t"
  python3 - "$v" "$t" <<'PY'
import json, sys
v, t = (json.loads(a) for a in sys.argv[1:3])
r = v["images_per_s"] / t["images_per_s"]
print(f"{v['preset']}: vitcore {v['images_per_s']:.0f} img/s, pytorch {t['images_per_s']:.0f} img/s, ratio {r:.2f}x")
PY
done
exit $fail
