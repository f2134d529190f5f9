#!/bin/bash
# Sets up the cudasim simulator as this shell's CUDA driver, for running vitcore's GPU path (and
# its GPU tests) on a machine without a GPU:
#
#   eval "$(bash scripts/cudasim-env.sh)"
#   cargo run --release -- train mnist --device cuda      # now runs on the simulator
#
# It builds cudasim's libcuda.so if needed (cargo build --release -p cudasim), links it as
# target/cudasim/lib/libcuda.so (and .so.1), installs NVRTC 13.0 from PyPI (.ci/nvrtc-setup.sh)
# and prints export lines for LD_LIBRARY_PATH (simulator first, then NVRTC) and the NVRTC
# include folder. Everything else goes to stderr. Options for the simulator are environment
# variables (docs/cuda.md): CUDASIM_DEVICE=t4|h100, CUDASIM_SM_COUNT=N, CUDASIM_CHECKS=off, ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "cudasim-env: building the simulator (cargo build --release -p cudasim)" >&2
cargo build --release -p cudasim >&2
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
so="$target/release/libcudasim.so"
[ -f "$so" ] || { echo "cudasim-env: $so was not built" >&2; exit 1; }
lib="$target/cudasim/lib"
mkdir -p "$lib"
ln -sf "$so" "$lib/libcuda.so"
ln -sf "$so" "$lib/libcuda.so.1"
nvrtc_exports=$(bash "$root/.ci/nvrtc-setup.sh")
eval "$nvrtc_exports"
echo "cudasim-env: libcuda.so -> $so" >&2
echo "export LD_LIBRARY_PATH=\"$lib:$LD_LIBRARY_PATH\""
echo "export VITCORE_NVRTC_INCLUDE=\"$VITCORE_NVRTC_INCLUDE\""
