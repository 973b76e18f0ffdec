#!/bin/bash
# A/B comparison of echo servers, alternated round by round (ping-pong, 64 B).
#
#   bench/ab.sh CONNS ROUNDS NAME=COMMAND [NAME=COMMAND ...]
#   bench/ab.sh 100 5 "old=/tmp/old/echo-torsion --backend epoll" \
#                     "new=target/release/echo-torsion --backend epoll"
#
# Each COMMAND must follow the echo contract (`--port N` is appended). The server runs on core 0,
# the load generator (target/release/loadgen; build it with `cargo build --release -p bench`) on
# core 1, at nice -10 when run as root; 1 s warm-up, 4 s window. Prints one line per run:
# NAME ROUND per_server_cpu_s p50_us p99_us. For two builds of torsion, build the old commit
# in a git worktree with its own CARGO_TARGET_DIR.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,12p "$0"; exit 2; }
CONNS=$1 ROUNDS=$2
shift 2
LOADGEN=${LOADGEN:-target/release/loadgen}
NICE=""
if [ "$(id -u)" = 0 ]; then NICE="nice -n -10"; fi
PORT=22100
for r in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        name=${spec%%=*} cmd=${spec#*=}
        PORT=$((PORT + 1))
        # shellcheck disable=SC2086
        taskset -c 0 $NICE $cmd --port "$PORT" > /dev/null 2>&1 &
        pid=$!
        sleep 0.3
        # shellcheck disable=SC2086
        line=$(taskset -c 1 $NICE "$LOADGEN" pingpong --conns "$CONNS" --size 64 --port "$PORT" \
            --server-pid "$pid" --warmup 1 --duration 4 || echo failed)
        kill "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
        echo "$name $r $(echo "$line" | grep -o 'per_server_cpu_s=[^ ]*\|p50_us=[^ ]*\|p99_us=[^ ]*\|failed' | tr '\n' ' ')"
    done
done
