#!/usr/bin/env bash
# keygate's user-space instructions per proxied request, counted by valgrind's callgrind:
# the same figure whatever else the machine is doing (CPU time on this 2-core VM varies
# by ±5% between runs, more than most single changes). Compare two binaries with it
# before believing a CPU-time difference.
#
# keygate (the same config as ../shared/bench/keygate-cpu.sh: full auth, a per-second
# limit, the access log) runs under callgrind in front of an nginx `return 200` upstream;
# oha sends WARMUP requests, the counters are zeroed, then REQUESTS requests on 16
# keep-alive connections; total instructions ÷ REQUESTS is printed. Every thread of the
# process is counted (background tasks included), kernel time is not.
#
# Usage: benches/instructions.sh [BINARY...]   (default: target/release/keygate, built)
# Environment: REQUESTS [20000]  WARMUP [2000]  BASE_PORT [18400]  KEEP_WORKDIR
#   CALLGRIND_OUT  a file to keep the last binary's callgrind profile in
#   (callgrind_annotate --inclusive=yes FILE shows where the instructions go)
# Note: valgrind hides SHA-NI, so the key hash counts ~3,500 instructions here that the
# hardware's SHA extensions make ~10× cheaper outside valgrind.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-instructions.XXXXXX)
LOAD_CPU=0
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
REQUESTS=${REQUESTS:-20000} WARMUP=${WARMUP:-2000} BASE_PORT=${BASE_PORT:-18400}
UPSTREAM_PORT=$((BASE_PORT + 1)) KG_PORT=$((BASE_PORT + 2)) KG_ADMIN_PORT=$((BASE_PORT + 3))
ports_free 3
need_tools nginx:nginx valgrind:valgrind callgrind_control:valgrind curl:curl jq:jq
if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha)"
    cargo install --quiet --locked oha || die "cargo install oha failed"
fi
BINS=("$@")
if ((${#BINS[@]} == 0)); then
    (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
    BINS=("$REPO/target/release/keygate")
fi
start_upstream "$UPSTREAM_PORT"

for bin in "${BINS[@]}"; do
    rm -rf "$WORK/kg" && mkdir -p "$WORK/kg"
    cat >"$WORK/kg/keygate.yaml" <<YAML
listen: { address: "127.0.0.1:$KG_PORT", tls: none }
admin: { address: "127.0.0.1:$KG_ADMIN_PORT", bootstrap_token_file: "$WORK/kg/admin-token" }
store: { backend: embedded, path: "$WORK/kg/keygate.db" }
keys: { prefix: bench }
rate_limit: { per_second: 1000000000 }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: /feeds, upstream: feeds, scope: read }
YAML
    valgrind --tool=callgrind --callgrind-out-file="$WORK/kg/callgrind.out" --dump-instr=no \
        "$bin" serve --config "$WORK/kg/keygate.yaml" >"$WORK/kg/keygate.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_keygate "$pid" "$KG_ADMIN_PORT" "$WORK/kg/keygate.log"
    for _ in $(seq 100); do [[ -s $WORK/kg/admin-token ]] && break; sleep 0.1; done
    token=$(tr -d '[:space:]' <"$WORK/kg/admin-token")
    secret=$(bench_key "$KG_ADMIN_PORT" "$token" "$WORK/kg")
    load() { oha --no-tui -n "$1" -c 16 -H "Authorization: Bearer $secret" "http://127.0.0.1:$KG_PORT/feeds"; }
    load "$WARMUP" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    ok=$(load "$REQUESTS" | awk '/\[200\]/ { print $2 }')
    [[ $ok == "$REQUESTS" ]] || die "$bin: only ${ok:-0} of $REQUESTS requests got 200"
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    out=$(ls -t "$WORK/kg"/callgrind.out* | head -1)
    total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [[ -n ${CALLGRIND_OUT:-} ]] && cp "$out" "$CALLGRIND_OUT"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v t="$total" -v n="$REQUESTS" -v b="$bin" 'BEGIN { printf "%s: %.0f instructions per request\n", b, t / n }'
done
