# Sourced by the raft-kv scripts that start a local cluster of their own: 3 `raft-kv
# serve` nodes on loopback, stopped (and their directory removed) when the script exits.
#
# Before sourcing, set KV_BASE_PORT (Raft ports KV_BASE_PORT+i, client ports +1000+i,
# metrics +2000+i). It defines RAFT_KV (default target/release/raft-kv), WORK (a
# temporary directory), PIDS (the nodes' process ids, node i at index i-1), PEERS,
# CLUSTER (the client addresses, for --cluster), port N (KV_BASE_PORT + N), and
# kv_serve_three SERVE-ARGS..., which starts the nodes (logs in $WORK/node-i.log) and
# returns once the cluster took a put. A script may define kv_node_args I, which sets
# the array NODE_ARGS to options for node I alone (its data directory, say).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RAFT_KV=${RAFT_KV:-$ROOT/target/release/raft-kv}
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

port() { echo $((KV_BASE_PORT + $1)); }
PEERS="1=127.0.0.1:$(port 1),2=127.0.0.1:$(port 2),3=127.0.0.1:$(port 3)"
CLUSTER="1=127.0.0.1:$(port 1001),2=127.0.0.1:$(port 1002),3=127.0.0.1:$(port 1003)"

kv_serve_three() {
  local i deadline
  for i in 1 2 3; do
    NODE_ARGS=()
    if declare -F kv_node_args >/dev/null; then kv_node_args "$i"; fi
    "$RAFT_KV" serve --id "$i" --listen "127.0.0.1:$(port "$i")" --peers "$PEERS" \
      "${NODE_ARGS[@]}" "$@" >"$WORK/node-$i.log" 2>&1 &
    PIDS+=($!)
  done
  deadline=$((SECONDS + 60))
  until "$RAFT_KV" put cluster ready --cluster "$CLUSTER" --timeout 5 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "the cluster did not come up; see $WORK/node-*.log" >&2; exit 1; }
    sleep 0.2
  done
}
