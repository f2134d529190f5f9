#!/bin/bash
# Test accuracy and wall time of a training recipe at three data sizes, as users meet them:
#
#   54000  `vitcore train mnist` (MNIST's 60,000 training images, 10% held out for validation)
#   42000  `vitcore train csv` on a Kaggle-format CSV of the first 42,000 MNIST training rows
#          (the size of Kaggle's digit-recognizer train.csv)
#   5400   the same with the first 5,400 rows (small data, as in factory inspection)
#
# Every run is scored by `vitcore eval` on MNIST's t10k files, which no run trains or validates
# on. Wall time is the whole `train` command (loading, training, validation, its own test pass).
#
#   scripts/accuracy.sh [--sizes "5400 42000 54000"] [--seeds "1"] [--label NAME]
#                       [--out DIR] [-- TRAIN FLAGS...]
#
# Flags after `--` go to every `train` command (`-- --epochs 30 --batch-size 64`), so one
# recipe change is one call; --label names it in the results. Prints one line per run and
# appends it to DIR/results.tsv (default target/accuracy/): label, size, seed, test accuracy of
# a single pass and with test-time augmentation (`eval --tta`), wall seconds, the flags. Runs
# one at a time: the machine's cores are the trainer's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sizes="5400 42000 54000"
seeds="1"
label="default"
out="$root/target/accuracy"
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "accuracy.sh: unknown option $1 (flags for train go after --)" >&2; exit 2 ;;
  esac
done
flags=("$@")
mnist="$root/data/mnist"
cargo build --release --quiet
# A copy, so that a build during the runs (the next change being written) cannot change them.
mkdir -p "$out/data" "$out/bin"
bin="$out/bin/vitcore-$label-$$"
cp "${CARGO_TARGET_DIR:-$root/target}/release/vitcore" "$bin"
trap 'rm -f "$bin"' EXIT
results="$out/results.tsv"
[ -f "$results" ] || printf 'label\tsize\tseed\ttest_accuracy\ttta_accuracy\twall_s\tcommit\tflags\n' > "$results"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

for size in $sizes; do
  if [ "$size" != 54000 ]; then
    csv="$out/data/train-$size.csv"
    [ -f "$csv" ] || python3 "$root/scripts/mnist_to_csv.py" "$mnist" "$size" "$csv"
  fi
  for seed in $seeds; do
    run="$out/runs/$label-$size-s$seed"
    rm -rf "$run"
    mkdir -p "$out/runs"
    t0=$(date +%s.%N)
    if [ "$size" = 54000 ]; then
      "$bin" train mnist --data "$mnist" --seed "$seed" --quiet --out "$run" "${flags[@]}" > "$run.log" 2>&1 \
        || { echo "accuracy.sh: training failed, see $run.log" >&2; exit 1; }
    else
      "$bin" train csv --train "$csv" --seed "$seed" --quiet --out "$run" "${flags[@]}" > "$run.log" 2>&1 \
        || { echo "accuracy.sh: training failed, see $run.log" >&2; exit 1; }
    fi
    t1=$(date +%s.%N)
    score() { "$bin" eval "$run" --data "$mnist" --device cpu --tta "$1" 2>>"$run.log" | sed -n 's/.*accuracy \([0-9.]*\)%.*/\1/p'; }
    acc=$(score false)
    tta=$(score true)
    wall=$(python3 -c "print(round($t1 - $t0, 1))")
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$label" "$size" "$seed" "$acc" "$tta" "$wall" "$commit" "${flags[*]:-}")
    echo "$line" | tee -a "$results"
  done
done
