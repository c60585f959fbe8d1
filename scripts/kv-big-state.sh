#!/usr/bin/env bash
# raft-kv's latency while its state grows large: 3 in-memory `raft-kv serve` nodes on
# loopback (the default snapshot policy on), loaded by `raft-kv bench put` with TOTAL
# distinct keys (default 2 000 000, 256-byte values) from 64 clients over 16 connections.
# Prints the bench's JSON summary (throughput and latency percentiles up to the slowest
# put), then each node's peak RSS. Snapshots of a large state are where a capture that copies the map shows, as a
# put that waits for the copy (see README-kv.md, "Snapshots").
#
# Usage: scripts/kv-big-state.sh [SERVE-ARGS...]
# Environment: RAFT_KV (the binary; default target/release/raft-kv), TOTAL,
# KV_BASE_PORT (default 27501: Raft ports +i, client ports +1000+i).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RAFT_KV=${RAFT_KV:-$ROOT/target/release/raft-kv}
TOTAL=${TOTAL:-2000000}
KV_BASE_PORT=${KV_BASE_PORT:-27501}
[ -x "$RAFT_KV" ] || { echo "no raft-kv binary at $RAFT_KV (cargo build --release -p raft-examples)" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap stop_all EXIT

PEERS="" CLUSTER=""
for i in 1 2 3; do
  PEERS+="${PEERS:+,}$i=127.0.0.1:$((KV_BASE_PORT + i))"
  CLUSTER+="${CLUSTER:+,}$i=127.0.0.1:$((KV_BASE_PORT + 1000 + i))"
done
for i in 1 2 3; do
  "$RAFT_KV" serve --id "$i" --listen "127.0.0.1:$((KV_BASE_PORT + i))" --peers "$PEERS" "$@" \
    > "$WORK/node-$i.log" 2>&1 &
  PIDS+=($!)
done
# The first put waits out the election.
"$RAFT_KV" put warm up --cluster "$CLUSTER" --timeout 30 > /dev/null
"$RAFT_KV" bench put --cluster "$CLUSTER" --clients 64 --conns 16 --total "$TOTAL" --json 2>/dev/null
for i in 1 2 3; do
  echo "node $i peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/${PIDS[$((i - 1))]}/status")"
done
