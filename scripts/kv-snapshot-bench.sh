#!/usr/bin/env bash
# raft-kv put throughput and latency with snapshots on (--snapshot-entries 10000, the
# default) and off (0), for one or more raft-kv binaries, interleaved in one run: three
# durable `serve` processes on loopback, started afresh for every measurement.
#
# usage: scripts/kv-snapshot-bench.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
# env:   TOTAL (200000), CLIENTS ("256 64"), CONNS (64), BASE_PORT (17100),
#        STATUS_BIN (the last binary): the raft-kv whose `status` prints the snapshot
#        index and the log's entries, used for every label; MEMORY=1: no --data-dir
#        (storage in memory), to tell the state machine's share of a stall from storage's.
set -euo pipefail
rounds=$1; shift
TOTAL=${TOTAL:-200000}; CLIENTS=${CLIENTS:-"256 64"}; CONNS=${CONNS:-64}
BASE=${BASE_PORT:-17100}
last=${*: -1}; status_bin=${STATUS_BIN:-${last#*=}}
work=$(mktemp -d /tmp/kv-snapshot-bench.XXXXXX)
data_dir=1; [[ ${MEMORY:-0} == 1 ]] && data_dir=
peers="1=127.0.0.1:$((BASE+1)),2=127.0.0.1:$((BASE+2)),3=127.0.0.1:$((BASE+3))"
cluster="1=127.0.0.1:$((BASE+1001)),2=127.0.0.1:$((BASE+1002)),3=127.0.0.1:$((BASE+1003))"
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
trap stop EXIT
uptime
echo "label snapshot-entries clients ops/s p50-us p99-us max-log-entries last-snapshot-index"
for round in $(seq "$rounds"); do
  for variant in "$@"; do
    label=${variant%%=*}; bin=${variant#*=}
    for snap in 10000 0; do
      for clients in $CLIENTS; do
        rm -rf "$work/data"; mkdir -p "$work/data"
        for id in 1 2 3; do
          RUST_LOG=warn "$bin" serve --id $id --listen 127.0.0.1:$((BASE+id)) --peers "$peers" \
            ${data_dir:+--data-dir "$work/data/$id"} --snapshot-entries $snap >"$work/serve-$id.out" 2>"$work/serve-$id.log" &
          pids+=($!)
        done
        deadline=$((SECONDS+30))
        until "$status_bin" status --cluster "$cluster" --timeout 2 2>/dev/null | awk '$3 == "leader" { found = 1 } END { exit !found }'; do
          (( SECONDS < deadline )) || { echo "no leader"; exit 1; }
          sleep 0.2
        done
        # The log's size and the snapshot index on every node, sampled while the load runs.
        ( while true; do "$status_bin" status --cluster "$cluster" --timeout 2 2>/dev/null; sleep 1; done ) \
          >"$work/status.log" &
        sampler=$!
        "$bin" bench put --cluster "$cluster" --clients "$clients" --conns "$CONNS" \
          --total "$TOTAL" --json >"$work/bench.json"
        kill $sampler; wait $sampler 2>/dev/null || true
        "$status_bin" status --cluster "$cluster" --timeout 2 >>"$work/status.log" 2>/dev/null || true
        cp "$work/status.log" "$work/status-$round-$label-$snap-$clients.log"
        stats=$(python3 - "$work/bench.json" "$work/status.log" <<'PY'
import json, re, sys
b = json.load(open(sys.argv[1]))
def find(d, *names):
    for n in names:
        if n in d: return d[n]
    for v in d.values():
        if isinstance(v, dict):
            r = find(v, *names)
            if r is not None: return r
    return None
ops = find(b, "ops_per_sec", "throughput", "ops_s")
p50 = find(b, "p50_ms", "p50"); p99 = find(b, "p99_ms", "p99")
head = None; maxlog = 0; snap = 0
for line in open(sys.argv[2]):
    cols = line.split()
    if cols and cols[0] == "node":
        head = cols; continue
    if head and len(cols) == len(head) and "log" in head and cols[0].startswith("n"):
        try:
            maxlog = max(maxlog, int(cols[head.index("log")]))
            snap = max(snap, int(cols[head.index("snapshot")]))
        except ValueError:
            pass
print(ops, p50, p99, maxlog, snap)
PY
)
        echo "$label $snap $clients $stats"
        stop
      done
    done
  done
done
uptime
echo "logs in $work"
