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
# KV_BASE_PORT (default 27501: Raft ports +i, client ports +1000+i; see kv-cluster.sh).
set -euo pipefail

TOTAL=${TOTAL:-2000000}
KV_BASE_PORT=${KV_BASE_PORT:-27501}
# shellcheck source=kv-cluster.sh
. "$(dirname "$0")/kv-cluster.sh"
kv_serve_three "$@"
"$RAFT_KV" bench put --cluster "$CLUSTER" --clients 64 --conns 16 --total "$TOTAL" --json 2>/dev/null
for i in 1 2 3; do
  echo "node $i peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/${PIDS[$((i - 1))]}/status")"
done
