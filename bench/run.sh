#!/usr/bin/env bash
# Runs the whole benchmark in one go and writes bench/RESULTS.md and bench/results.svg.
#
#   bench/run.sh [--quick] [--servers "raw-epoll tokio-ct ..."] [--scenarios "pp100 pp1000 stream churn idle"]
#                [--reps N] [--no-micro] [--no-syscalls] [--no-wait]
#
# --quick: 0.3 s warm-up + 1 s windows, 2,000 idle connections, short microbenchmarks (a few
# minutes in all). Full mode: 1 s + 5 s windows, 5 rounds, 10,000 idle connections (about 27 minutes).
# Each echo server runs pinned to core 0 (taskset -c 0), the load generator to core 1; each
# scenario runs --reps times (3) against a freshly started server, and the report keeps medians.
# Servers named *-2c (per-core runs: tokio-mt-2c, torsion-epoll-2c, torsion-epoll-x2-2c,
# torsion-io_uring-x2-2c) run on cores 0 and 1, sharing core 1 with the load generator; they
# are not in the default list. Only 127.0.0.1 is used. Twisted runs from bench/.venv, which this script creates with pip;
# without python3/pip it is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
SERVERS="raw-epoll tokio-ct tokio-mt torsion-epoll torsion-io_uring torsion-poll torsion-select twisted"
SCENARIOS="pp100 pp1000 stream churn idle"
REPS= # rounds per cell: 5 in full mode, 3 in quick mode, unless --reps says
MICRO=1
SYSCALLS=1
QUIET_WAIT=1 # --no-wait: start each run at once, even on a busy machine (still counted)
# As root, run servers and load generator at nice -10, so that other work on this shared
# machine takes less of their cores during the windows (--no-nice to turn off).
NICE=""
if [ "$(id -u)" = 0 ]; then NICE="nice -n -10"; fi
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --servers) SERVERS=$2; shift ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --no-micro) MICRO=0 ;;
        --no-syscalls) SYSCALLS=0 ;;
        --no-wait) QUIET_WAIT=0 ;;
        --no-nice) NICE="" ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$MODE" = quick ]; then
    WARMUP=0.3; WINDOW=1; IDLE_CONNS=2000; MICRO_SAMPLES=3; REPS=${REPS:-3}
else
    WARMUP=1; WINDOW=5; IDLE_CONNS=10000; MICRO_SAMPLES=10; REPS=${REPS:-5}
fi

OUT=bench/out
mkdir -p "$OUT"
RUNS=$OUT/runs.txt
SYSFILE=$OUT/syscalls.txt
MICROFILE=$OUT/micro.txt
DEFERFILE=$OUT/deferred.txt
META=$OUT/meta.txt
NOTES=$OUT/notes.txt
: > "$RUNS"; : > "$SYSFILE"; : > "$NOTES"
if [ "$MICRO" = 1 ]; then : > "$MICROFILE"; : > "$DEFERFILE"; fi

note() { echo "run.sh: $*" >&2; echo "- $*" >> "$NOTES"; }

if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs 2 cores (server on core 0, load generator on core 1)" >&2
    exit 1
fi

# ------------------------------------------------------------------ build
echo "== building (release)" >&2
cargo build --release -p bench --bins >&2
cargo build --release -p torsion --example deferred_bench >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET_DIR/release
if [ "$MICRO" = 1 ]; then cargo bench -p bench --no-run >&2; fi

# ------------------------------------------------------------------ Twisted's virtualenv
VENV=bench/.venv
TWISTED_OK=0
case " $SERVERS " in
*" twisted "*)
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import twisted' 2>/dev/null; then
        TWISTED_OK=1
    elif command -v python3 >/dev/null; then
        echo "== creating $VENV (pip install twisted)" >&2
        if python3 -m venv "$VENV" >&2 && "$VENV/bin/pip" install -q twisted >&2; then
            TWISTED_OK=1
        else
            note "Twisted skipped: could not create $VENV or pip install twisted"
        fi
    else
        note "Twisted skipped: python3 not found"
    fi ;;
esac

# ------------------------------------------------------------------ servers
server_cmd() {
    case "$1" in
        raw-epoll) echo "$BIN/echo-raw-epoll" ;;
        raw-io_uring) echo "$BIN/echo-raw-uring" ;;
        raw-io_uring-fixed) echo "$BIN/echo-raw-uring --fixed" ;;
        tokio-ct) echo "$BIN/echo-tokio --flavor current_thread" ;;
        tokio-mt) echo "$BIN/echo-tokio --flavor multi_thread" ;;
        torsion-epoll|torsion-poll|torsion-select|torsion-io_uring|torsion-io_uring-readiness) echo "$BIN/echo-torsion --backend ${1#torsion-}" ;;
        # Per-core servers ("-2c": may use both cores, which they share with the load generator).
        tokio-mt-2c) echo "$BIN/echo-tokio --flavor multi_thread" ;;
        torsion-epoll-2c) echo "$BIN/echo-torsion --backend epoll" ;;
        torsion-epoll-x2-2c) echo "$BIN/echo-torsion --backend epoll --reactors 2" ;;
        torsion-io_uring-x2-2c) echo "$BIN/echo-torsion --backend io_uring --reactors 2" ;;
        twisted) echo "$VENV/bin/python bench/twisted/echo.py --reactor epoll" ;;
        *) return 1 ;;
    esac
}

# Below the ephemeral range (32768-60999 by default), so that no client socket holds the port.
NEXT_PORT=21100
SERVER_PID=
SERVER_PORT=
SERVER_ERR=$OUT/server.err

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME: starts it pinned to core 0; sets SERVER_PID and SERVER_PORT. Returns 1
# (with the server's own message in $SERVER_ERR) when it exits instead of listening.
start_server() {
    local cmd
    cmd=$(server_cmd "$1")
    while port_open "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    SERVER_PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
    if [ "$NEXT_PORT" -gt 21900 ]; then NEXT_PORT=21100; fi
    # Servers named *-2c may run on both cores (per-core runs); the others on core 0.
    local cores=0
    case "$1" in *-2c) cores=0,1 ;; esac
    # shellcheck disable=SC2086
    taskset -c "$cores" $NICE $cmd --port "$SERVER_PORT" > /dev/null 2> "$SERVER_ERR" &
    SERVER_PID=$!
    for _ in $(seq 1 150); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=
            return 1
        fi
        port_open "$SERVER_PORT" && { sleep 0.1; return 0; }
        sleep 0.1
    done
    stop_server
    echo "did not listen within 15 s" > "$SERVER_ERR"
    return 1
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

scenario_args() {
    case "$1" in
        pp100) echo "pingpong --conns 100 --size 64" ;;
        pp1000) echo "pingpong --conns 1000 --size 64" ;;
        stream) echo "stream --chunk 262144" ;;
        churn) echo "churn --concurrency 16 --size 64" ;;
        idle) echo "idle --conns $IDLE_CONNS --size 64" ;;
    esac
}
# CPU busy fraction of the whole machine over 0.3 s, in percent.
busy_percent() {
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    sleep 0.3
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    echo "$a $b" | awk '{ d = $4 - $2; print (d > 0 ? int(100 * ($3 - $1) / d) : 0) }'
}

# Before each run (the server idle): wait up to 20 s for other work on the machine to calm
# down (below 15% busy), and count the runs that started on a busy machine.
BUSY_RUNS=0
quiet_wait() {
    local t=0 b
    b=$(busy_percent)
    while [ "$QUIET_WAIT" = 1 ] && [ "$b" -ge 15 ] && [ "$t" -lt 40 ]; do
        sleep 0.2; t=$((t + 1)); b=$(busy_percent)
    done
    if [ "$b" -ge 15 ]; then BUSY_RUNS=$((BUSY_RUNS + 1)); fi
}

LOADGEN_TIMEOUT=$(awk "BEGIN { print int($WARMUP + $WINDOW + 60) }")

# ------------------------------------------------------------------ machine
{
    echo "mode:       $MODE (warm-up ${WARMUP}s, window ${WINDOW}s, $REPS runs per cell)"
    echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:     $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "kernel:     $(uname -r)"
    echo "cpu:        $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "rustc:      $(rustc --version)"
    [ "$TWISTED_OK" = 1 ] && echo "twisted:    $("$VENV/bin/python" -c 'import sys, twisted; print(twisted.__version__, "on Python", sys.version.split()[0])')"
    echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (before)"
    "$BIN/uring-probe" | sed 's/^/uring /'
} > "$META"

# ------------------------------------------------------------------ echo scenarios
AVAILABLE=""
for s in $SERVERS; do
    if ! server_cmd "$s" > /dev/null; then note "unknown server $s"; continue; fi
    if [ "$s" = twisted ] && [ "$TWISTED_OK" != 1 ]; then continue; fi
    if ! start_server "$s"; then
        note "$s skipped: $(head -c 300 "$SERVER_ERR" | tr '\n' ' ')"
        continue
    fi
    stop_server
    AVAILABLE="$AVAILABLE $s"
done
echo "== servers:$AVAILABLE" >&2

for sc in $SCENARIOS; do
    args=$(scenario_args "$sc")
    [ -z "$args" ] && { note "unknown scenario $sc"; continue; }
    label=$sc # bench-report turns it into a title
    # Rounds outside, servers inside: each round runs every server once, so that a burst of
    # other work on the machine spreads over the servers instead of hitting one server's runs.
    for r in $(seq 1 "$REPS"); do
        for s in $AVAILABLE; do
            if [ "$sc" = idle ] && [ "$s" = torsion-select ]; then
                continue # select() cannot watch descriptors past FD_SETSIZE (1,024)
            fi
            if ! start_server "$s" && ! start_server "$s"; then
                echo "server=$s label=$label run=$r failed=start" >> "$RUNS"
                note "$s failed to start: $(tail -c 200 "$SERVER_ERR" | tr '\n' ' ')"
                continue
            fi
            # shellcheck disable=SC2086
            quiet_wait
            if line=$(timeout "$LOADGEN_TIMEOUT" taskset -c 1 $NICE "$BIN/loadgen" $args --port "$SERVER_PORT" \
                    --server-pid "$SERVER_PID" --warmup "$WARMUP" --duration "$WINDOW"); then
                echo "server=$s label=$label run=$r $line" | tr -s ' ' >> "$RUNS"
            else
                echo "server=$s label=$label run=$r failed=loadgen $line" | tr -s ' ' >> "$RUNS"
            fi
            echo "  $s / $sc / run $r: $(tail -1 "$RUNS" | grep -o 'per_server_cpu_s=[^ ]*\|bytes_per_conn=[^ ]*\|failed=[^ ]*' | head -1)" >&2
            stop_server
        done
    done
done

# ------------------------------------------------------------------ syscalls per echoed message
# perf counts every syscall entry of the server (all threads) at little cost, while the load
# generator reports every round trip of its run (warm-up included); strace -c is the fallback
# and, where present, also gives the breakdown by syscall (it slows the server, so only its
# proportions are kept).
if [ "$SYSCALLS" = 1 ]; then
    if ! command -v perf >/dev/null && ! command -v strace >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q strace >&2 || true
    fi
    for s in $AVAILABLE; do
        start_server "$s" || continue
        method=
        if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
            method=perf
            perf stat -x, -e raw_syscalls:sys_enter -p "$SERVER_PID" -o "$OUT/perf-$s.txt" &
        elif command -v strace >/dev/null; then
            method=strace
            strace -c -f -p "$SERVER_PID" -o "$OUT/strace-$s.txt" &
        else
            note "syscall counts skipped: neither perf nor strace"
            stop_server
            break
        fi
        TRACER=$!
        sleep 0.5
        quiet_wait
        line=$(timeout "$LOADGEN_TIMEOUT" taskset -c 1 $NICE "$BIN/loadgen" pingpong --conns 100 --size 64 \
            --port "$SERVER_PORT" --warmup 0 --duration "$WINDOW" || true)
        kill -INT "$TRACER" 2>/dev/null || true
        wait "$TRACER" 2>/dev/null || true
        ops=$(echo "$line" | grep -o 'total_ops=[0-9]*' | cut -d= -f2)
        if [ "$method" = perf ]; then
            calls=$(grep raw_syscalls "$OUT/perf-$s.txt" | cut -d, -f1)
        else
            calls=$(awk '$NF == "total" { print $4 }' "$OUT/strace-$s.txt")
        fi
        if [ -n "$ops" ] && [ -n "$calls" ] && [ "$ops" -gt 0 ]; then
            per=$(awk "BEGIN { printf \"%.3f\", $calls / $ops }")
            echo "server=$s method=$method syscalls=$calls ops=$ops per_msg=$per" >> "$SYSFILE"
            echo "  syscalls $s: $per per message ($method)" >&2
        fi
        stop_server
        # Breakdown by syscall, for the record (1 s under strace).
        if command -v strace >/dev/null && [ "$method" = perf ]; then
            start_server "$s" || continue
            strace -c -f -p "$SERVER_PID" -o "$OUT/strace-$s.txt" 2>/dev/null &
            TRACER=$!
            sleep 0.5
            timeout 30 taskset -c 1 "$BIN/loadgen" pingpong --conns 100 --size 64 --port "$SERVER_PORT" \
                --warmup 0 --duration 1 > /dev/null || true
            kill -INT "$TRACER" 2>/dev/null || true
            wait "$TRACER" 2>/dev/null || true
            stop_server
        fi
    done
fi

# ------------------------------------------------------------------ microbenchmarks
if [ "$MICRO" = 1 ]; then
    echo "== microbenchmarks" >&2
    for b in timers thread_calls; do
        taskset -c 0 cargo bench -q -p bench --bench "$b" -- --sample-count "$MICRO_SAMPLES" \
            2>&1 | tee -a "$MICROFILE" >&2 || note "microbenchmark $b failed"
    done
    # The Deferred chain: the same 100,000-callback chain on torsion and on Twisted (best of
    # 20 rounds each, pinned to core 0), for the ">= 50x Twisted's" ratio.
    # torsion's side is the user-facing example, so that there is one copy of the chain.
    taskset -c 0 $NICE "$BIN/examples/deferred_bench" 100000 20 | grep '^impl=' >> "$DEFERFILE" \
        || note "the deferred_bench example failed"
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import twisted' 2>/dev/null; then
        taskset -c 0 $NICE "$VENV/bin/python" bench/twisted/deferred_bench.py --stages 100000 \
            --rounds 20 >> "$DEFERFILE" || note "Twisted's Deferred chain benchmark failed"
    fi
    sed 's/^/  /' "$DEFERFILE" >&2
fi

echo "load avg:   $(cut -d' ' -f1-3 /proc/loadavg) (after)" >> "$META"
echo "busy:       $BUSY_RUNS runs started while other work kept the machine >= 15% busy for 20 s" >> "$META"
echo "priority:   ${NICE:-default}" >> "$META"

# ------------------------------------------------------------------ report
for s in $AVAILABLE; do
    if [ -s "$OUT/strace-$s.txt" ]; then
        { echo "strace -c of $s (1 s of ping-pong c100; top 6 by calls):"
          awk 'NR > 2 && $1 !~ /^-/ && $NF != "total"' "$OUT/strace-$s.txt" \
              | sort -k4,4nr | head -6 | sed 's/^/    /'; } >> "$OUT/strace-summary.txt"
    fi
done
if [ -s "$OUT/strace-summary.txt" ]; then
    { echo; echo '```text'; cat "$OUT/strace-summary.txt"; echo '```'; } >> "$NOTES"
    rm -f "$OUT/strace-summary.txt"
fi
"$BIN/bench-report" --runs "$RUNS" --syscalls "$SYSFILE" --micro "$MICROFILE" --deferred "$DEFERFILE" --meta "$META" \
    --notes "$NOTES" --analysis bench/ANALYSIS.md --md bench/RESULTS.md --svg bench/results.svg
echo "== done: bench/RESULTS.md, bench/results.svg (raw lines in $OUT/)" >&2
