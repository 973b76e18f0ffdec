#!/usr/bin/env bash
# TLS echo (issue 15): torsion-tls against tokio-rustls, same rustls, ring provider and cipher
# suite, same machine, same run, rounds alternating the two servers.
#
#   bench/tls-run.sh [--reps N] [--window S] [--suite TLS13_AES_128_GCM_SHA256]
#
# Server pinned to core 0, load generator to core 1 (nice -10 as root). Prints one line per run
# and the medians of handshakes per server CPU-second and MiB per server CPU-second.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=5; WINDOW=5; WARMUP=1; SUITE=TLS13_AES_128_GCM_SHA256
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS=$2; shift ;;
        --window) WINDOW=$2; shift ;;
        --suite) SUITE=$2; shift ;;
        *) echo "tls-run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
NICE=""; if [ "$(id -u)" = 0 ]; then NICE="nice -n -10"; fi
cargo build --release -p bench --bin tls-echo-torsion --bin tls-echo-tokio --bin tls-loadgen >&2
BIN=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
OUT=bench/out; mkdir -p "$OUT"; RUNS=$OUT/tls-runs.txt; : > "$RUNS"
PORT=21400 # below the ephemeral range (32768+), where client sockets of other work could sit
for rep in $(seq "$REPS"); do
    for server in torsion tokio; do
        for scenario in handshakes stream; do
            PORT=$((PORT + 1))
            $NICE taskset -c 0 "$BIN/tls-echo-$server" --port "$PORT" &
            SPID=$!
            for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
            $NICE taskset -c 1 "$BIN/tls-loadgen" --port "$PORT" --pid "$SPID" --scenario "$scenario" \
                --warmup "$WARMUP" --window "$WINDOW" --suite "$SUITE" --label "$server" | tee -a "$RUNS"
            kill "$SPID"; wait "$SPID" 2>/dev/null || true
        done
    done
done
echo "== medians over $REPS rounds (per second of server CPU)"
for server in torsion tokio; do
    for scenario in handshakes stream; do
        grep "label=$server scenario=$scenario " "$RUNS" | sed 's/.*per_server_cpu_s=\([0-9.]*\).*/\1/' | sort -n \
            | awk -v s="$server" -v sc="$scenario" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%-8s %-10s %10.1f\n", s, sc, m}'
    done
done
