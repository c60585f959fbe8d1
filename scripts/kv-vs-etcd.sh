#!/usr/bin/env bash
# raft-kv against etcd on this machine, in the same run (issue 13 item 5, issue 15 item 6).
#
# Usage: scripts/kv-vs-etcd.sh
#
# For each client count (CLIENTS_LIST, default "1 16 64 256"), interleaved:
#   1. `raft-kv bench put` against 3 `raft-kv serve --data-dir` processes on loopback
#      (file store: every append fsynced before it is acknowledged);
#   2. etcd's own benchmark against 3 etcd 3.4 members on loopback (WAL fsync on every
#      commit), through the shared ../shared/bench/etcd/run.sh (CLIENTS_LIST=<c> run.sh
#      bench, which also measures etcd's linearizable get at GET_CLIENTS clients);
# both with 8-byte sequential keys, 256-byte values, the same connection count
# (c for c <= 16, else c/4, as run.sh), for about SECS seconds (default 10) per point.
# Then one table: clients, raft-kv ops/s p50 p99, etcd ops/s p50 p99, ratio of ops/s.
# The same figures go to WORK/results/raft-kv.json (rows as `raft-bench --json` prints them)
# and WORK/results/etcd.json (an anchor for `raft-bench --anchor`); with PLOT=FILE.svg the
# script draws them with `raft-bench --plot` (throughput, p50/p99 latency and the ratio
# against clients; needs a release build of raft-bench too).
#
# Needs: etcd installed and its benchmark built (see ../shared/bench/etcd/README.md:
# run.sh install, run.sh build <etcd-git-dir>), python3, and a release build of raft-kv
# (cargo build --release -p raft-examples). Nothing in the project's build or tests
# needs this script or etcd.
#
# Environment: ETCD_RUN (the shared run.sh), ANCHOR_DIR (its work dir, holding the
# benchmark binary; default ${TMPDIR:-/tmp}/etcd-anchor), RAFT_KV (the binary), RAFT_BENCH
# (the binary that draws, for PLOT), PLOT (an SVG file to draw into), SECS,
# CLIENTS_LIST, KV_BASE_PORT (default 27301: Raft ports KV_BASE_PORT+i, client ports
# +1000), WORK (raft-kv data and raw results; default a new temporary directory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ETCD_RUN=${ETCD_RUN:-$ROOT/../shared/bench/etcd/run.sh}
export ANCHOR_DIR=${ANCHOR_DIR:-${TMPDIR:-/tmp}/etcd-anchor}
RAFT_KV=${RAFT_KV:-$ROOT/target/release/raft-kv}
RAFT_BENCH=${RAFT_BENCH:-$ROOT/target/release/raft-bench}
PLOT=${PLOT:-}
SECS=${SECS:-10}
CLIENTS_LIST=${CLIENTS_LIST:-"1 16 64 256"}
KV_BASE_PORT=${KV_BASE_PORT:-27301}
WORK=${WORK:-$(mktemp -d)}
VAL_SIZE=256
KEY_SIZE=8

[ -x "$RAFT_KV" ] || { echo "no raft-kv binary at $RAFT_KV (cargo build --release -p raft-examples)" >&2; exit 1; }
[ -f "$ETCD_RUN" ] || { echo "no etcd run.sh at $ETCD_RUN (set ETCD_RUN)" >&2; exit 1; }
[ -z "$PLOT" ] || [ -x "$RAFT_BENCH" ] || { echo "no raft-bench binary at $RAFT_BENCH for PLOT (cargo build --release -p raft-examples)" >&2; exit 1; }
[ -x "$ANCHOR_DIR/bin/benchmark" ] || { echo "no etcd benchmark in $ANCHOR_DIR/bin (run.sh build <etcd-git-dir>)" >&2; exit 1; }

conns_for() { local c=$1; if [ "$c" -le 16 ]; then echo "$c"; else echo $((c/4)); fi; }

raft_port() { echo $((KV_BASE_PORT + $1)); }
client_port() { echo $((KV_BASE_PORT + 1000 + $1)); }
PEERS="1=127.0.0.1:$(raft_port 1),2=127.0.0.1:$(raft_port 2),3=127.0.0.1:$(raft_port 3)"
CLUSTER="1=127.0.0.1:$(client_port 1),2=127.0.0.1:$(client_port 2),3=127.0.0.1:$(client_port 3)"

KV_PIDS=()
stop_all() {
  local p
  for p in "${KV_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${KV_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  KV_PIDS=()
  bash "$ETCD_RUN" stop >/dev/null 2>&1 || true
}
trap stop_all EXIT

mkdir -p "$WORK/results"
echo "work dir: $WORK"
echo "uptime before: $(uptime)"

# raft-kv: 3 durable nodes.
for i in 1 2 3; do
  "$RAFT_KV" serve --id "$i" --listen "127.0.0.1:$(raft_port "$i")" --peers "$PEERS" \
    --data-dir "$WORK/kv/$i" >"$WORK/kv-$i.log" 2>&1 &
  KV_PIDS+=($!)
done
# etcd: 3 fresh members.
bash "$ETCD_RUN" stop >/dev/null 2>&1 || true
rm -rf "$ANCHOR_DIR/data"
bash "$ETCD_RUN" start >"$WORK/etcd-start.log" 2>&1

# Wait (bounded) until the raft-kv cluster has a leader that commits.
deadline=$((SECONDS + 60))
until "$RAFT_KV" put kv-vs-etcd ready --cluster "$CLUSTER" --timeout 5 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "raft-kv cluster did not come up; see $WORK/kv-*.log" >&2; exit 1; }
  sleep 0.2
done

echo "raft-kv: $("$RAFT_KV" --version); etcd: $(etcd --version | head -1); nproc=$(nproc)"
for c in $CLIENTS_LIST; do
  conns=$(conns_for "$c")
  echo "--- clients $c (conns $conns)" >&2
  # raft-kv first, then etcd, at the same client count.
  "$RAFT_KV" bench put --clients "$c" --conns "$conns" --duration "$SECS" \
    --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --cluster "$CLUSTER" --timeout 30 --json \
    >"$WORK/results/kv-c$c.json" 2>"$WORK/results/kv-c$c.err" || true
  CLIENTS_LIST=$c TARGET_SECS=$SECS KEY_SIZE=$KEY_SIZE VAL_SIZE=$VAL_SIZE \
    bash "$ETCD_RUN" bench >"$WORK/results/etcd-c$c.txt" 2>&1 || true
done
echo "uptime after:  $(uptime)"

python3 - "$WORK/results" $CLIENTS_LIST <<'PY'
import json, sys, os
results, counts = sys.argv[1], sys.argv[2:]
kv_rows, etcd_points = [], []
print(f"{'clients':>7} | {'raft-kv ops/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | {'etcd ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>6}")
for c in counts:
    kv = None
    try:
        kv = json.load(open(os.path.join(results, f"kv-c{c}.json")))
    except Exception:
        pass
    etcd = None
    try:
        for line in open(os.path.join(results, f"etcd-c{c}.txt")):
            f = line.split()
            if len(f) > 7 and f[0] == "put" and f[1] == c:
                etcd = (float(f[4]), float(f[5]), float(f[6]))
    except Exception:
        pass
    if kv:
        l = kv["latency_us"]
        kvs = f"{kv['ops_per_sec']:>13.0f} {l['p50']/1000:>7.2f} {l['p99']/1000:>7.2f} {sum(kv['errors'].values()):>6}"
    else:
        kvs = f"{'failed':>13} {'-':>7} {'-':>7} {'-':>6}"
    es = f"{etcd[0]:>10.0f} {etcd[1]:>7.2f} {etcd[2]:>7.2f}" if etcd else f"{'failed':>10} {'-':>7} {'-':>7}"
    ratio = f"{kv['ops_per_sec']/etcd[0]:>5.1f}x" if kv and etcd and etcd[0] > 0 else f"{'-':>6}"
    print(f"{c:>7} | {kvs} | {es} | {ratio}")
    # For raft-bench --plot: latencies in µs (etcd's benchmark reports ms).
    if kv and kv["ops_per_sec"] > 0:
        kv_rows.append({"scenario": "raft-kv put", "operation": "write", "clients": int(c),
                        "writes_per_sec": kv["ops_per_sec"], "p50_us": kv["latency_us"]["p50"],
                        "p99_us": kv["latency_us"]["p99"]})
    if etcd and etcd[0] > 0:
        etcd_points.append({"clients": int(c), "ops_per_sec": etcd[0],
                            "p50_us": etcd[1] * 1000, "p99_us": etcd[2] * 1000})
json.dump(kv_rows, open(os.path.join(results, "raft-kv.json"), "w"), indent=1)
json.dump(etcd_points, open(os.path.join(results, "etcd.json"), "w"), indent=1)
PY
if [ -n "$PLOT" ]; then
  "$RAFT_BENCH" --rows "$WORK/results/raft-kv.json" --anchor "etcd=$WORK/results/etcd.json" \
    --plot "$PLOT" || echo "the plot failed (see above); the table stands" >&2
fi
echo "raw results: $WORK/results (etcd's rows include its linearizable get at GET_CLIENTS clients)"
