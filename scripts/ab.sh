#!/usr/bin/env bash
# Two builds of raft-bench on one scenario, in interleaved pairs (issue 15: on this shared
# machine, read ratios from runs made back to back, not absolute figures).
#
# Usage: scripts/ab.sh BASE NEW REPS SCENARIO [RAFT-BENCH ARGS...]
#   scripts/ab.sh /tmp/base-target/release/raft-bench target/release/raft-bench 3 \
#       durable --clients 64
#
# Runs REPS pairs of `BASE SCENARIO ARGS --json` and `NEW SCENARIO ARGS --json`, one pair
# after the other, and swaps the order in every other pair: the second run of a pair is
# not a fair copy of the first (a durable run starts while the kernel still writes back
# the previous run's log, and measured 10-20% slower for it, whichever build it was).
# Prints each run's throughput, p50, p99 and CPU per write (the last row a run prints:
# give one scenario and one client count), then the median over the pairs of NEW / BASE
# for each (above 1 is better for throughput, below 1 for the rest).
# Build the base with, for example:
#   git worktree add /tmp/base REV && (cd /tmp/base && \
#     CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p raft-examples --bin raft-bench)
set -euo pipefail

[ $# -ge 4 ] || { sed -n '2,18p' "$0" >&2; exit 2; }
BASE=$1 NEW=$2 REPS=$3
shift 3
for bin in "$BASE" "$NEW"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done

run() { # BIN LABEL -> one line: label writes/s p50 p99 cpu
  "$1" "${@:3}" --json 2>/dev/null | python3 -c '
import json, sys
row = json.load(sys.stdin)[-1]
print(sys.argv[1], row["writes_per_sec"], row["p50_us"], row["p99_us"], row["cpu_us_per_write"])
' "$2"
}

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
printf '%4s %-5s %12s %9s %9s %11s\n' pair build "writes/s" "p50 us" "p99 us" "CPU us/op"
for pair in $(seq "$REPS"); do
  if [ $((pair % 2)) = 1 ]; then order="base new"; else order="new base"; fi
  for build in $order; do
    if [ "$build" = base ]; then bin=$BASE; else bin=$NEW; fi
    line=$(run "$bin" "$build" "$@")
    echo "$pair $line" >>"$rows"
    read -r label ops p50 p99 cpu <<<"$line"
    printf '%4s %-5s %12.0f %9.1f %9.1f %11.2f\n' "$pair" "$label" "$ops" "$p50" "$p99" "$cpu"
  done
done
python3 - "$rows" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    pair, build, *figures = line.split()
    runs.setdefault(pair, {})[build] = list(map(float, figures))
ratios = [[n / b if b else float("nan") for n, b in zip(r["new"], r["base"])]
          for r in runs.values() if "new" in r and "base" in r]
names = ["writes/s", "p50", "p99", "CPU/op"]
print("new / base, median of", len(ratios), "pairs:",
      ", ".join(f"{name} {statistics.median(column):.3f}"
                for name, column in zip(names, zip(*ratios))))
PY
