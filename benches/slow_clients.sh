#!/usr/bin/env bash
# Slow-client attacks (slowhttptest) against keygate's data and admin ports while a
# normal client keeps calling: the evidence for docs/security.md ("Slow clients").
#
# For each attack, a normal client (wrk, CONNECTIONS keep-alive connections, full
# authentication on the data port, GET /healthz on the admin port) runs DURATION once
# without and once during the attack; the script prints the normal client's p99 both
# times, their ratio, its failures (non-2xx and socket errors), and how many
# connections keygate held open in the middle of the attack
# (`keygate_connections_active`).
#
# keygate runs the release binary pinned to PROXY_CPU with these limits:
# header_read_timeout 5s, idle_timeout 15s, limits.max_connections 10000,
# admin.max_connections 256. Not part of CI. Installs nginx, wrk and slowhttptest with
# apt-get when missing. All traffic stays on 127.0.0.1; every run is bounded
# (ATTACK_SECS) and every process it starts is stopped on exit.
#
# Usage: benches/slow_clients.sh
# Environment (defaults in brackets):
#   DURATION [15s]  CONNECTIONS [8]  the normal client (wrk)
#   ATTACK_CONNECTIONS [1000]  ATTACK_RATE [200]  slowhttptest -c and -r on the data
#                   port; the admin port gets ADMIN_ATTACK_CONNECTIONS [200]
#   ATTACK_SECS [30]  length of each attack (slowhttptest -l)
#   PROXY_CPU [1]  LOAD_CPU [0]  cores for keygate and for everything else
#   KEYGATE_BIN     use this binary instead of `cargo build --release`
#   BASE_PORT [18100]  ports BASE_PORT+1 … +3 on 127.0.0.1 are used
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-8}
THREADS=1
ATTACK_CONNECTIONS=${ATTACK_CONNECTIONS:-1000}
ADMIN_ATTACK_CONNECTIONS=${ADMIN_ATTACK_CONNECTIONS:-200}
ATTACK_RATE=${ATTACK_RATE:-200}
ATTACK_SECS=${ATTACK_SECS:-30}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-18100}
UPSTREAM_PORT=$((BASE_PORT + 1))
KG_PORT=$((BASE_PORT + 2))
KG_ADMIN_PORT=$((BASE_PORT + 3))

case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-slow.XXXXXX)
source "$REPO/benches/common.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux slowhttptest:slowhttptest
ports_free 3
start_upstream "$UPSTREAM_PORT"

if [[ -n ${KEYGATE_BIN:-} ]]; then
    KEYGATE=$KEYGATE_BIN
else
    log "building keygate (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
    KEYGATE=$REPO/target/release/keygate
fi

cat >"$WORK/keygate.yaml" <<EOF
listen: { address: 127.0.0.1:$KG_PORT, tls: none }
admin: { address: 127.0.0.1:$KG_ADMIN_PORT, bootstrap_token_file: $WORK/admin-token, max_connections: 256 }
store: { backend: embedded, path: $WORK/keygate.db }
keys: { prefix: kg }
limits: { header_read_timeout: 5s, idle_timeout: 15s, max_connections: 10000 }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET, POST], path: /v1/feeds, upstream: feeds, scope: read }
EOF
ulimit -n 65536 2>/dev/null || true
taskset -c "$PROXY_CPU" "$KEYGATE" serve --config "$WORK/keygate.yaml" >"$WORK/keygate.log" 2>&1 &
KG_PID=$!
PIDS+=("$KG_PID")
wait_keygate "$KG_PID" "$KG_ADMIN_PORT" "$WORK/keygate.log"

for _ in $(seq 50); do [[ -s $WORK/admin-token ]] && break; sleep 0.1; done
ADMIN_TOKEN=$(tr -d '[:space:]' <"$WORK/admin-token")
api() {
    curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 5 -X POST \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        --data "$2" "http://127.0.0.1:$KG_ADMIN_PORT$1"
}
[[ $(api /v1/orgs '{"id":"bench","name":"Bench"}') == 201 ]] || die "POST /v1/orgs failed"
[[ $(api /v1/orgs/bench/keys '{"name":"slow","scopes":["read"]}') == 201 ]] || die "key create failed"
SECRET=$(jq -er .secret "$WORK/resp.json")
rm -f "$WORK/resp.json"

# The `keygate_connections_active` value of listener $1.
active() {
    curl -s --max-time 2 "http://127.0.0.1:$KG_ADMIN_PORT/metrics" |
        awk -v l="$1" '$1 == "keygate_connections_active{listener=\"" l "\"}" { print $2 }'
}

printf '| port | attack | normal p99 without (ms) | with (ms) | ratio | normal failures with | keygate connections mid-attack |\n'
printf '|---|---|---|---|---|---|---|\n'

# run PORT_NAME URL ATTACK_NAME SLOWHTTPTEST_ARGS…
run() {
    local port=$1 url=$2 attack=$3 slow_pid base under mid id
    shift 3
    id=$port-$(printf '%s' "$attack" | cut -d' ' -f1-2 | tr ' ' '-')
    local auth=()
    [[ $port == data ]] && auth=(-H "Authorization: Bearer $SECRET")
    base=$(measure "$url" "$KG_PID" "${auth[@]}")
    taskset -c "$LOAD_CPU" timeout $((ATTACK_SECS + 30)) slowhttptest "$@" -l "$ATTACK_SECS" \
        -g -o "$WORK/slow-$id" >"$WORK/slow-$id.log" 2>&1 &
    slow_pid=$!
    PIDS+=("$slow_pid")
    # Let the attack reach its connection count before measuring.
    sleep 8
    mid=$(active "$port")
    under=$(measure "$url" "$KG_PID" "${auth[@]}")
    wait "$slow_pid" || true
    read -r _ _ _ p99a _ non2xxa errorsa <<<"$base"
    read -r _ _ _ p99b _ non2xxb errorsb <<<"$under"
    [[ $non2xxa == 0 && $errorsa == none ]] || log "warning: the baseline run had failures ($non2xxa non-2xx, errors $errorsa)"
    printf '| %s | %s | %s | %s | %s | %s non-2xx, errors: %s | %s |\n' "$port" "$attack" "$p99a" "$p99b" \
        "$(awk -v a="$p99a" -v b="$p99b" 'BEGIN { printf "%.2f", (a > 0 ? b / a : 0) }')" \
        "$non2xxb" "$errorsb" "${mid:-?}"
    # Between runs: let keygate close what the attack left.
    sleep 6
}

DATA=http://127.0.0.1:$KG_PORT/v1/feeds
ADMIN=http://127.0.0.1:$KG_ADMIN_PORT/healthz
C=$ATTACK_CONNECTIONS R=$ATTACK_RATE
run data "$DATA" "slow headers (-H -c $C -r $R -i 2)" -H -c "$C" -r "$R" -i 2 -x 24 -u "$DATA"
run data "$DATA" "slow body (-B -c $C -r $R -i 2 -s 65536)" -B -c "$C" -r "$R" -i 2 -x 24 -s 65536 -u "$DATA"
run data "$DATA" "slow read (-X -c $C -r $R -n 2 -w 1 -y 16 -z 8 -k 20)" -X -c "$C" -r "$R" -n 2 -w 1 -y 16 -z 8 -k 20 -u "$DATA"
C=$ADMIN_ATTACK_CONNECTIONS
run admin "$ADMIN" "slow headers (-H -c $C -r $R -i 2)" -H -c "$C" -r "$R" -i 2 -x 24 -u "$ADMIN"
run admin "$ADMIN" "slow body (-B -c $C -r $R -i 2 -s 65536)" -B -c "$C" -r "$R" -i 2 -x 24 -s 65536 -u "http://127.0.0.1:$KG_ADMIN_PORT/v1/orgs"
log "slowhttptest logs and keygate's log: $WORK (set KEEP_WORKDIR=1 to keep them)"
