#!/usr/bin/env bash
# What hyper's client costs a proxy: the bare hyper proxy of ../shared/bench/hyper-floor
# (MODE=inline: hyper's client connection, its task and channels) against the same proxy
# with a minimal HTTP/1.1 client of its own (benches/client-floor), both in front of one
# nginx `return 200` upstream. Prints, per round and proxy, requests/s and the proxy's CPU
# per request split into user and system time (from /proc), then callgrind's instructions
# per request for each (oha, 16 connections). The result decided keygate's own upstream
# client (docs/benchmarks.md, "The upstream client, session 11").
#
# Each proxy is pinned to CPU 0; wrk, oha and the upstream to CPU 1.
# Usage: benches/client_floor.sh   Environment: ROUNDS [3]  SECS [6]  BASE_PORT [18500]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-client-floor.XXXXXX)
LOAD_CPU=1
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
ROUNDS=${ROUNDS:-3} SECS=${SECS:-6} BASE_PORT=${BASE_PORT:-18500}
UP=$((BASE_PORT + 1)) HYPER=$((BASE_PORT + 2)) OWN=$((BASE_PORT + 3))
ports_free 3
need_tools nginx:nginx wrk:wrk valgrind:valgrind callgrind_control:valgrind curl:curl
command -v oha >/dev/null || cargo install --quiet --locked oha || die "cargo install oha failed"
HF_TARGET=/tmp/keygate-hyper-floor CF_TARGET=/tmp/keygate-client-floor
(cd "$REPO/../shared/bench/hyper-floor" && CARGO_TARGET_DIR=$HF_TARGET cargo build --release --locked -q) ||
    die "building ../shared/bench/hyper-floor failed"
(cd "$REPO/benches/client-floor" && CARGO_TARGET_DIR=$CF_TARGET cargo build --release --locked -q) ||
    die "building benches/client-floor failed"
declare -A BIN=([hyper_client]=$HF_TARGET/release/hyper-floor [own_client]=$CF_TARGET/release/client-floor)
declare -A PORT=([hyper_client]=$HYPER [own_client]=$OWN)
start_upstream "$UP"

start_proxy() { # name [wrapper...]
    local name=$1
    shift
    MODE=inline LISTEN=127.0.0.1:${PORT[$name]} UPSTREAM=127.0.0.1:$UP taskset -c 0 "$@" "${BIN[$name]}" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:${PORT[$name]}/" 30 || die "$name did not start: $(cat "$WORK/$name.log")"
}

declare -A PID
for name in hyper_client own_client; do start_proxy "$name"; PID[$name]=${PIDS[-1]}; done
tck=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    for name in hyper_client own_client; do
        url=http://127.0.0.1:${PORT[$name]}/feeds
        taskset -c 1 wrk -t1 -c64 -d2s "$url" >/dev/null
        read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/${PID[$name]}/stat")
        out=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "$url")
        read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/${PID[$name]}/stat")
        reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
        awk -v n="$name" -v r="$round" -v q="$reqs" -v s="$SECS" -v t="$tck" -v u=$((u1 - u0)) -v k=$((s1 - s0)) \
            'BEGIN { printf "round %s %-12s rps=%.0f user_us=%.2f sys_us=%.2f cpu_us_per_req=%.2f\n",
                     r, n, q / s, u / t * 1e6 / q, k / t * 1e6 / q, (u + k) / t * 1e6 / q }'
    done
done
for name in hyper_client own_client; do kill "${PID[$name]}"; done
for name in hyper_client own_client; do
    start_proxy "$name" valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.cg" --dump-instr=no
    pid=${PIDS[-1]}
    url=http://127.0.0.1:${PORT[$name]}/feeds
    oha --no-tui -n 2000 -c 16 "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    ok=$(oha --no-tui -n 20000 -c 16 "$url" | awk '/\[200\]/ { print $2 }')
    [[ $ok == 20000 ]] || die "$name: only ${ok:-0} of 20000 requests got 200"
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    out=$(ls -t "$WORK/$name.cg"* | head -1)
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    awk -v n="$name" -v t="$total" 'BEGIN { printf "%s: %.0f instructions per request\n", n, t / 20000 }'
    kill "$pid"
done
