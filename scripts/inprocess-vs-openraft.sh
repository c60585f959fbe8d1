#!/usr/bin/env bash
# The in-process comparison with openraft 0.9 (issue 15), drawn as a chart.
#
# Usage: scripts/inprocess-vs-openraft.sh [--plot FILE.svg] [--from-log LOG] [REPS] [CLIENTS...]
#
# Runs the shared ../shared/bench/openraft/side-by-side.sh (both systems interleaved in one
# run; it prints one line per measurement on stderr and a table of medians on stdout),
# keeps its per-run lines in WORK/side-by-side.log, and writes the medians per client
# count as WORK/ours.json (rows as `raft-bench --json` prints them) and WORK/openraft.json
# (an anchor for `raft-bench --anchor`, with the median of the per-run ratios as
# `ours_over`, which the chart's ratio panel draws). With --plot it draws them with
# `raft-bench --rows WORK/ours.json --anchor openraft=WORK/openraft.json --plot FILE.svg`.
# With --from-log it runs nothing and reads the stderr of an earlier side-by-side.sh run.
# The shared script reports throughput only, so the chart has no latency panel.
#
# Environment: SIDE_BY_SIDE (the shared script), WORK (default a new temporary directory),
# RAFT_BENCH (default target/release/raft-bench, which side-by-side.sh builds).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIDE_BY_SIDE=${SIDE_BY_SIDE:-$ROOT/../shared/bench/openraft/side-by-side.sh}
RAFT_BENCH=${RAFT_BENCH:-$ROOT/target/release/raft-bench}
WORK=${WORK:-$(mktemp -d)}
plot=""
from_log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --plot) plot=${2:?--plot needs a file}; shift 2 ;;
    --from-log) from_log=${2:?--from-log needs a file}; shift 2 ;;
    *) break ;;
  esac
done
mkdir -p "$WORK"
log=$WORK/side-by-side.log

if [ -n "$from_log" ]; then
  cp "$from_log" "$log"
else
  [ -f "$SIDE_BY_SIDE" ] || { echo "no side-by-side.sh at $SIDE_BY_SIDE (set SIDE_BY_SIDE)" >&2; exit 1; }
  echo "uptime before: $(uptime)"
  (cd "$ROOT" && bash "$SIDE_BY_SIDE" "$@" 2> >(tee "$log" >&2))
  echo "uptime after:  $(uptime)"
fi

python3 - "$log" "$WORK" <<'PY'
import json, os, re, statistics as st, sys
log, work = sys.argv[1], sys.argv[2]
runs = {}
for line in open(log):
    m = re.fullmatch(r"clients=(\d+) openraft=([0-9.]+) ours=([0-9.]+)\s*", line)
    if m:
        runs.setdefault(int(m[1]), []).append((float(m[2]), float(m[3])))
if not runs:
    sys.exit(f"no 'clients=C openraft=O ours=U' lines in {log}")
ours = [{"scenario": "ours", "operation": "write", "clients": c,
         "writes_per_sec": st.median(u for _, u in runs[c])} for c in sorted(runs)]
# ours_over: the median of the per-run ratios, as side-by-side.sh reports it (each pair ran
# back to back, so a load that changes between runs distorts it less than the ratio of
# the two medians); the chart's ratio panel draws it.
theirs = [{"clients": c, "ops_per_sec": st.median(o for o, _ in runs[c]),
           "ours_over": st.median(u / o for o, u in runs[c])} for c in sorted(runs)]
json.dump(ours, open(os.path.join(work, "ours.json"), "w"), indent=1)
json.dump(theirs, open(os.path.join(work, "openraft.json"), "w"), indent=1)
print("| clients | runs | openraft w/s (median) | ours w/s (median) | median of per-run ratios | ratio of medians |")
print("|---:|---:|---:|---:|---:|---:|")
for o, u in zip(theirs, ours):
    c = o["clients"]
    print(f"| {c} | {len(runs[c])} | {o['ops_per_sec']:,.0f} | {u['writes_per_sec']:,.0f} | "
          f"{o['ours_over']:.2f}x | {u['writes_per_sec'] / o['ops_per_sec']:.2f}x |")
PY

if [ -n "$plot" ]; then
  [ -x "$RAFT_BENCH" ] || { echo "no raft-bench at $RAFT_BENCH (cargo build --release -p raft-examples --bin raft-bench)" >&2; exit 1; }
  "$RAFT_BENCH" --rows "$WORK/ours.json" --anchor "openraft=$WORK/openraft.json" --plot "$plot"
fi
echo "medians and per-run lines: $WORK"
