#!/bin/bash
# A/B of two echo servers on any loadgen scenario, alternated round by round (stream, idle,
# churn; bench/ab.sh does ping-pong with its p50/p99).
#
#   bench/ab-loadgen.sh ROUNDS "old=COMMAND" "new=COMMAND" SCENARIO [loadgen args...]
#   bench/ab-loadgen.sh 5 "old=/tmp/old/echo-torsion --backend epoll" \
#                         "new=target/release/echo-torsion --backend epoll" stream --duration 3
#
# Same placement as ab.sh: server on core 0, load generator on core 1 (nice -10 as root).
# Prints one line per run: NAME ROUND followed by the load generator's key=value line.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0"; exit 2; }
ROUNDS=$1 A=$2 B=$3 SC=$4
shift 4
LOADGEN=${LOADGEN:-target/release/loadgen}
NICE=""
if [ "$(id -u)" = 0 ]; then NICE="nice -n -10"; fi
PORT=23100
for r in $(seq 1 "$ROUNDS"); do
    for spec in "$A" "$B"; do
        name=${spec%%=*} cmd=${spec#*=}
        PORT=$((PORT + 1))
        # shellcheck disable=SC2086
        taskset -c 0 $NICE $cmd --port "$PORT" > /dev/null 2>&1 &
        pid=$!
        sleep 0.3
        # shellcheck disable=SC2086
        line=$(taskset -c 1 $NICE "$LOADGEN" "$SC" --port "$PORT" --server-pid "$pid" "$@" || echo failed)
        kill "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
        echo "$name $r $line"
    done
done
