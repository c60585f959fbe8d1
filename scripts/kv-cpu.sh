#!/usr/bin/env bash
# Where raft-kv's CPU goes, per put and per process (issue 15: profile first).
#
# Usage: scripts/kv-cpu.sh [SERVE-ARGS...]
#
# Starts 3 `raft-kv serve --data-dir` nodes on loopback (file store, fsync on), finds the
# leader through the nodes' metrics, and for each client count in CLIENTS_LIST (default
# "16 64") runs `raft-kv bench put` (or WORKLOAD's; 256-byte values, connections as in
# scripts/kv-vs-etcd.sh) for SECS seconds (default 8). It prints, per point: ops/s, p50
# and p99, the CPU each process spent per operation (leader, the two followers, the load
# generator; user + system time from /proc), and how idle the machine was meanwhile.
# CPU per operation that sums to close to `nproc` cores' worth at the measured rate means the
# point is bound by CPU, not by latency; what no process is charged for (the kernel's own
# threads: block I/O completion, softirq work) is the gap between the busy share and
# the processes' sum.
#
# SERVE-ARGS go to every `raft-kv serve` (for example `--threads 2`).
# Environment: RAFT_KV (the binary; default target/release/raft-kv), WORKLOAD (the bench's
# workload: put, the default, get or mixed; the columns then count its operations), SECS,
# CLIENTS_LIST,
# KV_BASE_PORT (default 27401: Raft ports +i, client ports +1000+i, metrics +2000+i).
set -euo pipefail

SECS=${SECS:-8}
CLIENTS_LIST=${CLIENTS_LIST:-"16 64"}
WORKLOAD=${WORKLOAD:-put}
KV_BASE_PORT=${KV_BASE_PORT:-27401}
# shellcheck source=kv-cluster.sh
. "$(dirname "$0")/kv-cluster.sh"
kv_node_args() { NODE_ARGS=(--data-dir "$WORK/$1" --metrics-listen "127.0.0.1:$(port $((2000 + $1)))"); }
kv_serve_three "$@"

# The leader, by the role gauge each node's metrics endpoint reports.
role_of() {
  python3 - "$(port $((2000 + $1)))" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith("raft_role{") and line.rstrip().endswith(" 1"):
        print(line.split('role="')[1].split('"')[0])
PY
}
# CPU time of a process in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
idle_ticks() { awk '/^cpu /{print $5}' /proc/stat; }
HZ=$(getconf CLK_TCK)

printf '%7s | %9s %8s %8s | %-27s %9s | %5s\n' clients "ops/s" "p50 ms" "p99 ms" "CPU µs/op: leader, followers" "bench" "idle"
for c in $CLIENTS_LIST; do
  conns=$c; [ "$c" -le 16 ] || conns=$((c / 4))
  leader=""; followers=()
  for i in 1 2 3; do
    if [ "$(role_of "$i")" = leader ]; then leader=${PIDS[$((i - 1))]}; else followers+=("${PIDS[$((i - 1))]}"); fi
  done
  [ -n "$leader" ] || { echo "no leader reported" >&2; exit 1; }
  before=(); for p in "$leader" "${followers[@]}"; do before+=("$(ticks "$p")"); done
  idle_before=$(idle_ticks)
  # The load generator's CPU time, from its rusage as its parent sees it, and its wall time.
  python3 - "$WORK/bench-$c.cpu" "$RAFT_KV" bench "$WORKLOAD" --clients "$c" --conns "$conns" \
    --duration "$SECS" --cluster "$CLUSTER" --timeout 30 --json >"$WORK/bench-$c.json" <<'PY' \
    || { echo "the bench at $c clients failed" >&2; exit 1; }
import resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[2:])
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{usage.ru_utime + usage.ru_stime} {wall}\n")
sys.exit(done.returncode)
PY
  idle_after=$(idle_ticks)
  after=(); for p in "$leader" "${followers[@]}"; do after+=("$(ticks "$p")"); done
  read -r bench_cpu wall <"$WORK/bench-$c.cpu"
  python3 - "$WORK/bench-$c.json" "$c" "$HZ" "$wall" "$idle_before" "$idle_after" "$(nproc)" \
    "$bench_cpu" "${before[@]}" "${after[@]}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
c, hz, wall = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
idle0, idle1, cores = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
bench_cpu = float(sys.argv[8])
before, after = list(map(int, sys.argv[9:12])), list(map(int, sys.argv[12:15]))
puts = report["ops"]
us = [(a - b) / hz * 1e6 / puts for a, b in zip(after, before)]
idle = (idle1 - idle0) / hz / (wall * cores) * 100
lat = report["latency_us"]
bench = f"{bench_cpu * 1e6 / puts:9.1f}"
print(f"{c:>7} | {report['ops_per_sec']:9.0f} {lat['p50'] / 1000:8.2f} {lat['p99'] / 1000:8.2f} | "
      f"{us[0]:7.1f} {us[1]:9.1f} {us[2]:9.1f}   {bench} | {idle:4.0f}%")
PY
done
