#!/bin/bash
# Installs NVRTC 13.0 (the compiler library, its builtins, the CUDA headers and crt/ headers) from
# PyPI into the repository's ignored target/ folder, for compiling the CUDA kernels on a machine
# with no GPU and no CUDA toolkit (CI). Needs python3 with pip (or venv); no root.
#
# Prints export lines on stdout, for the caller to eval:
#   eval "$(bash .ci/nvrtc-setup.sh)"
# Everything else goes to stderr.
#
# Why pinned to 13.0: an unpinned install takes the newest NVRTC (13.5+), whose PTX ISA a CUDA 13.0
# driver rejects; 13.0 matches the GPU machine's driver. cudarc (feature cuda-13000) dlopens
# libnvrtc.so.13, and NVRTC 13 dlopens libnvrtc-builtins.so.13.0 by name, so the lib folder must be
# on LD_LIBRARY_PATH (the 13.x wheels set no $ORIGIN runpath).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/nvrtc"
pkgs=('nvidia-cuda-nvrtc==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-crt==13.0.*')
py=${PYTHON:-python3}
command -v "$py" >/dev/null || { echo "nvrtc-setup: $py not found" >&2; exit 1; }

find_cu13() {
  # The wheels put everything under <site-packages>/nvidia/cu13/{lib,include}.
  find "$dest" -type d -path "*/nvidia/cu13" 2>/dev/null | head -1 || true
}

cu13=$(find_cu13)
if [ -z "$cu13" ] || [ ! -e "$cu13/lib/libnvrtc.so.13" ]; then
  mkdir -p "$dest"
  # First choice: a venv (works on Debian's externally-managed python too). If the venv module
  # is missing (no python3-venv package), fall back to pip --target, which installs plain files.
  if "$py" -m venv "$dest/venv" >/dev/null 2>&1 && "$dest/venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "nvrtc-setup: installing into venv $dest/venv" >&2
    "$dest/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" >&2
  else
    rm -rf "$dest/venv"
    echo "nvrtc-setup: no venv available, installing with pip --target $dest/site" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --target "$dest/site" "${pkgs[@]}" >&2
  fi
  cu13=$(find_cu13)
fi
if [ -z "$cu13" ] || [ ! -e "$cu13/lib/libnvrtc.so.13" ] || [ ! -e "$cu13/include/cuda_fp16.h" ]; then
  echo "nvrtc-setup: install finished but nvidia/cu13/{lib/libnvrtc.so.13,include/cuda_fp16.h} not found under $dest" >&2
  exit 1
fi
echo "nvrtc-setup: NVRTC at $cu13/lib" >&2
echo "export LD_LIBRARY_PATH=\"$cu13/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export VITCORE_NVRTC_INCLUDE=\"$cu13/include\""
echo "export VITCORE_REQUIRE_NVRTC=1"
