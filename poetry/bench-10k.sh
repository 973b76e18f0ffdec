#!/usr/bin/env bash
# The 10,000-download benchmark: one `poetry serve` (10-byte chunks every 0.1 s) in its own
# process, then `poetry get` with 1 download and with N concurrent downloads (default 10,000)
# from it. Prints both times and the ratio time(N) / time(1); the target is at most 1.05.
#
#   poetry/bench-10k.sh [N] [POEM] [MODEL]
#
# POEM defaults to Donne's "The Ecstasy" (3,003 bytes: 301 chunks, about 30 s a download).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
poem=${2:-poetry/poems/ecstasy.txt}
model=${3:-reactor}
cargo build --release -q -p poetry
bin=${CARGO_TARGET_DIR:-target}/release/poetry
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT
"$bin" serve --delay 0.1 --num-bytes 10 "$poem" >"$out/serve" &
server=$!
for _ in $(seq 100); do
  grep -q '^Serving' "$out/serve" 2>/dev/null && break
  sleep 0.05
done
port=$(sed -n 's/^Serving .* on port \([0-9]*\)\.$/\1/p' "$out/serve")
[ -n "$port" ] || { echo "the server did not start" >&2; exit 1; }

# Seconds from a "Got K poems in H:MM:SS.ffffff" line.
seconds() { awk '/^Got /{split($NF, t, ":"); print t[1]*3600 + t[2]*60 + t[3]}' "$1"; }

run() { # $1 = repeat, $2 = output file
  "$bin" get --model "$model" --repeat "$1" "$port" >"$2"
  local got
  got=$(grep -c ' bytes of poetry$' "$2")
  [ "$got" -eq "$1" ] || { echo "only $got of $1 poems arrived" >&2; exit 1; }
}

run 1 "$out/one"
one=$(seconds "$out/one")
run "$n" "$out/many"
many=$(seconds "$out/many")
size=$(wc -c <"$poem")
printf 'poem: %s (%d bytes, 10 bytes every 0.1 s), model: %s\n' "$poem" "$size" "$model"
printf '%-20s %8.3f s\n' "1 download:" "$one" "$n downloads:" "$many"
awk -v a="$many" -v b="$one" -v n="$n" 'BEGIN { printf "ratio time(%d) / time(1): %.4f\n", n, a / b }'
