#!/usr/bin/env python3
"""Write rows of MNIST's IDX files as a Kaggle digit-recognizer CSV (`label,pixel0..pixel783`).

The accuracy measurements (scripts/accuracy.sh) train `vitcore train csv` on the first N rows of
MNIST's training files, the form a Kaggle user has, and score on the t10k files, which no run
sees. Standard library only (gzip or raw IDX).

Usage:
  python3 scripts/mnist_to_csv.py DIR N OUT.csv [--start S] [--no-labels]

DIR holds train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]; rows S..S+N are written.
"""
import argparse
import gzip
import os
import struct
import sys


def read_idx(path):
    """The bytes of an IDX file (gzip or raw) and its dimensions."""
    for candidate in (path + ".gz", path):
        if os.path.exists(candidate):
            opener = gzip.open if candidate.endswith(".gz") else open
            with opener(candidate, "rb") as f:
                data = f.read()
            break
    else:
        sys.exit(f"mnist_to_csv: {path}[.gz] not found")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"mnist_to_csv: {candidate} is not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return data[4 + 4 * ndim :], dims


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--prefix", default="train", help="train or t10k")
    ap.add_argument("--no-labels", action="store_true", help="a test.csv: pixels only")
    args = ap.parse_args()

    images, (count, rows, cols) = read_idx(os.path.join(args.dir, f"{args.prefix}-images-idx3-ubyte"))
    labels, (lcount,) = read_idx(os.path.join(args.dir, f"{args.prefix}-labels-idx1-ubyte"))
    if lcount != count:
        sys.exit(f"mnist_to_csv: {count} images but {lcount} labels")
    if args.start < 0 or args.n <= 0 or args.start + args.n > count:
        sys.exit(f"mnist_to_csv: rows {args.start}..{args.start + args.n} are not within the {count} images")
    px = rows * cols
    if os.path.exists(args.out):
        sys.exit(f"mnist_to_csv: {args.out} exists; not overwriting it")
    tmp = args.out + ".partial"
    with open(tmp, "w") as f:
        head = [] if args.no_labels else ["label"]
        f.write(",".join(head + [f"pixel{i}" for i in range(px)]) + "\n")
        for r in range(args.start, args.start + args.n):
            row = images[r * px : (r + 1) * px]
            cells = [] if args.no_labels else [str(labels[r])]
            f.write(",".join(cells + [str(v) for v in row]) + "\n")
    os.replace(tmp, args.out)
    print(f"mnist_to_csv: wrote rows {args.start}..{args.start + args.n} of {args.prefix} to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
