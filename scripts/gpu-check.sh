#!/bin/bash
# Checks the CUDA backend on a GPU machine, in one call.
#
# The GPU machine has no Rust toolchain, so the test binaries are built on the build machine:
#   scripts/gpu-check.sh pack        # here: gpu-pack.sh builds .gpu/, plus .gpu/COMMIT
# then, on the GPU machine, from the repository root (with .gpu/ carried along):
#   bash scripts/gpu-check.sh        # runs the CUDA tests, prints device, commit and a summary
#
# It runs the NVRTC test (every kernel compiled for sm_75 and sm_90, no spills), the GPU-vs-CPU
# test of every kernel (tests/cuda_vs_cpu.rs), the ops, autograd and a whole ViT training step on
# GPU tensors against the CPU (tests/cuda_graph.rs), and the backend's unit tests, with
# --nocapture so the per-kernel
# register/spill table and the per-check relative errors are in the log. It sets
# VITCORE_REQUIRE_NVRTC=1 and VITCORE_REQUIRE_CUDA=1: on this machine a test that would skip
# (no NVRTC, no GPU) fails instead. Then the kernel benchmark of the packed release binary,
#   .gpu/vitcore bench kernels --device cuda --json $VITCORE_BENCH_JSON
# (default: $OUT/bench-kernels.json when $OUT is set, else .gpu/bench-kernels.json; extra flags in
# $VITCORE_BENCH_ARGS, e.g. "--quick" or "--filter linear"; VITCORE_BENCH=0 skips it), which
# validates every GPU result against the CPU after timing. Then a short training run on the GPU,
#   .gpu/vitcore train mnist --device cuda --epochs $VITCORE_TRAIN_EPOCHS (default 2) --quiet
# (the default preset on all 60k images; VITCORE_TRAIN=0 skips it), whose test accuracy and
# time go in the summary. Last, benches/compare_gpu.sh: vitcore's and PyTorch's training step
# side by side on this GPU, seed and small presets (VITCORE_COMPARE=0 skips it). Exit status: the
# number of failed test binaries, plus one for each of benchmark, training run and comparison
# that failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd); cd "$root"

if [ "${1:-}" = "pack" ]; then
  set -e
  pack=${GPU_PACK:-../shared/tools/gpu-pack.sh}
  [ -x "$pack" ] || pack=/work/shared/tools/gpu-pack.sh
  bash "$pack"
  { git rev-parse HEAD; git diff --quiet HEAD || echo "(plus uncommitted changes)"; } > .gpu/COMMIT
  echo "packed commit $(head -1 .gpu/COMMIT)"
  exit 0
fi

if [ ! -x .gpu/run.sh ] || ! ls .gpu/tests/* >/dev/null 2>&1; then
  echo "no .gpu/ test binaries: run 'scripts/gpu-check.sh pack' on the build machine first" >&2
  exit 2
fi

commit=$(git rev-parse HEAD 2>/dev/null || head -1 .gpu/COMMIT 2>/dev/null || echo unknown)
echo "== vitcore CUDA check, commit $commit $(sed -n 2p .gpu/COMMIT 2>/dev/null)"
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
# The benchmark reports the commit it measured (the packed binary has no repository beside it).
export VITCORE_COMMIT="$commit"
export VITCORE_BENCH="${VITCORE_BENCH:-1}" VITCORE_BENCH_ARGS="${VITCORE_BENCH_ARGS:-}"
if [ -n "${OUT:-}" ]; then default_json="$OUT/bench-kernels.json"; else default_json=.gpu/bench-kernels.json; fi
export VITCORE_BENCH_JSON="${VITCORE_BENCH_JSON:-$default_json}"
export VITCORE_COMPARE="${VITCORE_COMPARE:-1}"
export VITCORE_TRAIN="${VITCORE_TRAIN:-1}" VITCORE_TRAIN_EPOCHS="${VITCORE_TRAIN_EPOCHS:-2}"
if [ -n "${OUT:-}" ]; then export VITCORE_TRAIN_OUT="$OUT/gpu-train-run"; else export VITCORE_TRAIN_OUT=.gpu/gpu-train-run; fi

# .gpu/run.sh sets LD_LIBRARY_PATH / VITCORE_NVRTC_INCLUDE for this machine's CUDA, prints the
# GPU (nvidia-smi) and then runs the command given.
bash .gpu/run.sh bash -c '
  export VITCORE_REQUIRE_NVRTC=1 VITCORE_REQUIRE_CUDA=1 RUST_BACKTRACE=1
  ls -d /usr/local/cuda*/lib64/libnvrtc.so* 2>/dev/null | head -3
  summary=""; failed=0
  run() {  # run <label> <binary> [test args...]
    label=$1; bin=$2; shift 2
    echo; echo "================ $label ($bin)"
    out=$("$bin" "$@" --nocapture --test-threads=1 2>&1); rc=$?
    echo "$out"
    res=$(echo "$out" | grep -E "^test result:" | tail -1)
    skips=$(echo "$out" | grep -c "^skipped:")
    [ $rc -eq 0 ] || failed=$((failed + 1))
    summary="$summary\n  $(printf "%-14s" "$label") rc=$rc  ${res:-no result line}  (skipped: $skips)"
  }
  found=0
  for t in .gpu/tests/nvrtc_kernels-*; do [ -x "$t" ] && { run nvrtc "$t"; found=1; }; done
  for t in .gpu/tests/cuda_vs_cpu-*; do [ -x "$t" ] && { run cuda_vs_cpu "$t"; found=1; }; done
  for t in .gpu/tests/cuda_graph-*; do [ -x "$t" ] && { run cuda_graph "$t"; found=1; }; done
  for t in .gpu/tests/vitcore-*; do [ -x "$t" ] && { run "unit (cuda)" "$t" backend::cuda; found=1; }; done
  [ $found -eq 1 ] || { echo "no nvrtc_kernels / cuda_vs_cpu test binaries in .gpu/tests"; exit 2; }
  if [ "$VITCORE_BENCH" != "0" ]; then
    echo; echo "================ bench kernels (.gpu/vitcore, json: $VITCORE_BENCH_JSON)"
    if [ -x .gpu/vitcore ]; then
      # shellcheck disable=SC2086  # VITCORE_BENCH_ARGS is a list of flags
      .gpu/vitcore bench kernels --device cuda --json "$VITCORE_BENCH_JSON" $VITCORE_BENCH_ARGS; rc=$?
    else
      echo "no .gpu/vitcore release binary: run scripts/gpu-check.sh pack"; rc=2
    fi
    [ $rc -eq 0 ] || failed=$((failed + 1))
    summary="$summary\n  $(printf "%-14s" "bench kernels") rc=$rc  (json: $VITCORE_BENCH_JSON)"
  fi
  if [ "$VITCORE_TRAIN" != "0" ]; then
    echo; echo "================ train mnist --device cuda ($VITCORE_TRAIN_EPOCHS epochs, run folder $VITCORE_TRAIN_OUT)"
    rm -rf "$VITCORE_TRAIN_OUT"
    start=$(date +%s)
    .gpu/vitcore train mnist --device cuda --epochs "$VITCORE_TRAIN_EPOCHS" --quiet --out "$VITCORE_TRAIN_OUT" 2>&1 | tee .gpu/train.log
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    acc=$(grep -E "^test accuracy" .gpu/train.log | tail -1)
    [ $rc -eq 0 ] || failed=$((failed + 1))
    summary="$summary\n  $(printf "%-14s" "train (gpu)") rc=$rc  ${acc:-no accuracy line}  (${secs}s wall)"
  fi
  if [ "$VITCORE_COMPARE" != "0" ]; then
    echo; echo "================ training step, vitcore vs PyTorch on this GPU"
    VITCORE_BIN=.gpu/vitcore bash benches/compare_gpu.sh seed small 2>&1 | tee .gpu/compare.log
    rc=${PIPESTATUS[0]}
    [ $rc -eq 0 ] || failed=$((failed + 1))
    while read -r line; do
      summary="$summary\n  $(printf "%-14s" "step vs torch") $line"
    done < <(grep " ratio " .gpu/compare.log)
    summary="$summary\n  $(printf "%-14s" "compare") rc=$rc"
  fi
  echo; echo "================ summary"
  nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null
  printf "%b\n" "$summary"
  echo "failed (test binaries + benchmark): $failed"
  exit $failed
'
