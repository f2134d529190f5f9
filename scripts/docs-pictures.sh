#!/usr/bin/env bash
# Redraw the pictures that docs/walkthrough.md shows (docs/img/*.png) from a trained MNIST run
# whose training recorded its margins (any run of this vitcore; the docs' is
# `vitcore audit --data data/mnist --val-fraction 0`, the default recipe on all 60 000 images).
#
#   scripts/docs-pictures.sh runs/NAME
#
# Needs the release binary (cargo build --release) and python3 (only to write test digit 0, a 7,
# as a PNG). Look at every picture before committing it.
set -euo pipefail
run=${1:?usage: scripts/docs-pictures.sh RUN}
vitcore=${VITCORE:-${CARGO_TARGET_DIR:-target}/release/vitcore}
out=docs/img
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/digit.png" <<'PY'
import gzip, struct, sys, zlib
px = gzip.open("data/mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
raw = b"".join(b"\0" + px[r * 28:(r + 1) * 28] for r in range(28))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
"$vitcore" plot "$run"
"$vitcore" show patches "$tmp/digit.png" --patch 7 --out "$out/patches.png"
"$vitcore" attention "$run" --input "$tmp/digit.png" --out "$out/attention.png"
"$vitcore" audit "$run" --top 24
for f in curves confusion predictions audit; do cp "$run/$f.png" "$out/$f.png"; done
ls -l "$out"
