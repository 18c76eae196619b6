#!/usr/bin/env bash
# What keygate's check costs behind nginx (docs/forward-auth.md): nginx with the shipped
# deploy/nginx/ snippets asking keygate's authz listener on every request (auth_request
# to /v1/authz), against the same nginx forwarding without any check.
#
# Both nginx instances forward to the same upstream (a third nginx answering `return
# 200` on loopback) and are driven by the same wrk command; nginx and keygate run pinned
# to one core (the "proxy side"), wrk and the upstream to another. Printed per side:
# requests/s, latency percentiles, the proxy side's CPU use (nginx, plus keygate for the
# authz side) and requests per CPU-second of the proxy side, the steadier comparison on
# a shared machine.
#
# Every request carries a real API key; the authz side checks it (route, key, scope) and
# passes the identity headers on. The snippets are read from deploy/nginx/ with only
# their addresses replaced, as tests/forward_auth_nginx.rs does.
#
# Not part of CI. Installs nginx and wrk with apt-get when they are missing. All traffic
# stays on 127.0.0.1; every process it starts is stopped on exit.
#
# Usage: benches/forward_auth.sh
# Environment (defaults in brackets):
#   DURATION [10s]  CONNECTIONS [32]  THREADS [1]  ROUNDS [1]  wrk settings; with
#                   ROUNDS > 1 the sides alternate and the median round is reported
#   PROXY_CPU [1]   core for nginx and keygate
#   LOAD_CPU [0]    core for wrk and the upstream
#   KEYGATE_BIN     use this binary instead of `cargo build --release`
#   BASE_PORT [18100]  ports BASE_PORT+1 … +6 on 127.0.0.1 are used
#   KEEP_WORKDIR    set to keep the temporary directory (configs, logs) for inspection
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-18100}

UPSTREAM_PORT=$((BASE_PORT + 1))
PLAIN_PORT=$((BASE_PORT + 2))
AUTHZ_NGINX_PORT=$((BASE_PORT + 3))
KG_PORT=$((BASE_PORT + 4))
KG_ADMIN_PORT=$((BASE_PORT + 5))
KG_AUTHZ_PORT=$((BASE_PORT + 6))
REQ_PATH=/v1/feeds

case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-fwdauth.XXXXXX)
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
NCPU=$(nproc)
((PROXY_CPU < NCPU && LOAD_CPU < NCPU)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $NCPU cores"
ports_free 6

# --- upstream and keygate ------------------------------------------------------------

start_upstream "$UPSTREAM_PORT"

if [[ -n ${KEYGATE_BIN:-} ]]; then
    KEYGATE=$KEYGATE_BIN
else
    log "building keygate (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
    target_dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    KEYGATE=$target_dir/release/keygate
fi
[[ -x $KEYGATE ]] || die "no keygate binary at $KEYGATE"

kg=$WORK/keygate
mkdir -p "$kg"
cat >"$kg/keygate.yaml" <<EOF
listen:
  address: 127.0.0.1:$KG_PORT
  tls: none
admin:
  address: 127.0.0.1:$KG_ADMIN_PORT
  bootstrap_token_file: $kg/admin-token
authz:
  address: 127.0.0.1:$KG_AUTHZ_PORT
  allow_from: [127.0.0.0/8]
store:
  backend: embedded
  path: $kg/keygate.db
keys: { prefix: kg }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: $REQ_PATH, upstream: feeds, scope: read }
EOF
"$KEYGATE" check-config --config "$kg/keygate.yaml" >"$kg/check.log" 2>&1 ||
    die "keygate check-config failed (does this keygate have the authz listener?): $(cat "$kg/check.log")"
taskset -c "$PROXY_CPU" "$KEYGATE" serve --config "$kg/keygate.yaml" >"$kg/keygate.log" 2>&1 &
KG_PID=$!
PIDS+=("$KG_PID")
wait_keygate "$KG_PID" "$KG_ADMIN_PORT" "$kg/keygate.log"

# Org `bench` and a read key; neither the admin token nor the secret is printed.
for _ in $(seq 50); do [[ -s $kg/admin-token ]] && break; sleep 0.1; done
[[ -s $kg/admin-token ]] || die "keygate wrote no bootstrap token"
admin_post() {
    curl -s -o "$kg/resp.json" -w '%{http_code}' --max-time 5 -X POST \
        -H "Authorization: Bearer $(tr -d '[:space:]' <"$kg/admin-token")" \
        -H 'Content-Type: application/json' --data "$2" "http://127.0.0.1:$KG_ADMIN_PORT$1"
}
status=$(admin_post /v1/orgs '{"id":"bench","name":"Bench"}')
[[ $status == 201 || $status == 200 ]] || die "POST /v1/orgs answered $status"
status=$(admin_post /v1/orgs/bench/keys '{"name":"load","scopes":["read"]}')
[[ $status == 201 ]] || die "POST /v1/orgs/bench/keys answered $status"
SECRET=$(jq -er .secret "$kg/resp.json") || die "the key-create response has no secret"
rm -f "$kg/resp.json"

# --- the two nginx instances ---------------------------------------------------------

nginx_conf plain off "
    upstream bench_app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$PLAIN_PORT;
        location / {
            proxy_pass http://bench_app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"

# The shipped snippets, keygate's address replaced.
mkdir -p "$WORK/authz"
shipped=$REPO/deploy/nginx
grep -q 'server 127.0.0.1:8444 ' "$shipped/keygate-http.conf" || die "deploy/nginx/keygate-http.conf no longer names 127.0.0.1:8444"
sed "s/server 127.0.0.1:8444 /server 127.0.0.1:$KG_AUTHZ_PORT /" "$shipped/keygate-http.conf" >"$WORK/authz/keygate-http.conf"
cp "$shipped/keygate-authz.conf" "$shipped/keygate-protect.conf" "$WORK/authz/"
nginx_conf authz off "
    include $WORK/authz/keygate-http.conf;
    upstream bench_app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$AUTHZ_NGINX_PORT;
        include $WORK/authz/keygate-authz.conf;
        location / {
            include $WORK/authz/keygate-protect.conf;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_pass http://bench_app\$keygate_upstream_uri;
        }
    }"

start_nginx plain "$PROXY_CPU"
PLAIN_PID=$NGINX_STARTED_PID
start_nginx authz "$PROXY_CPU"
AUTHZ_PID=$NGINX_STARTED_PID
wait_http "http://127.0.0.1:$PLAIN_PORT/" 10 || die "nginx (plain) did not start: $(cat "$WORK/plain/error.log")"
wait_http "http://127.0.0.1:$AUTHZ_NGINX_PORT/" 10 || die "nginx (authz) did not start: $(cat "$WORK/authz/error.log")"

for port in $PLAIN_PORT $AUTHZ_NGINX_PORT; do
    status=$(curl -s -o "$WORK/probe.json" -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $SECRET" "http://127.0.0.1:$port$REQ_PATH")
    [[ $status == 200 ]] || die "port $port answered $status to an authenticated request: $(cat "$WORK/probe.json")"
done
# And the check is really made: no key, no pass.
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$AUTHZ_NGINX_PORT$REQ_PATH")
[[ $status == 401 ]] || die "nginx (authz) answered $status to a request without a key"

# --- runs ----------------------------------------------------------------------------

# Runs one side: prints "req/s p50 p90 p99 cpu% non2xx errors", where cpu% is the proxy
# side's (nginx, plus keygate for the authz side).
run_side() {
    local port=$1 pid=$2 with_keygate=$3 before after line hz secs t0 t1
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks "$KG_PID")
    t0=$(date +%s.%N)
    line=$(measure "http://127.0.0.1:$port$REQ_PATH" "$pid" -H "Authorization: Bearer $SECRET")
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$KG_PID")
    if ((with_keygate)); then
        awk -v line="$line" -v ticks=$((after - before)) -v hz="$hz" -v a="$t0" -v b="$t1" 'BEGIN {
            split(line, f, " ")
            f[5] += 100 * ticks / hz / (b - a)
            printf "%s %s %s %s %.0f %s %s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7]
        }'
    else
        echo "$line"
    fi
}

log "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION; nginx and keygate on core $PROXY_CPU, wrk and upstream on core $LOAD_CPU"
log "machine: $NCPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs"
: >"$WORK/plain.runs" && : >"$WORK/authz.runs"
for ((r = 1; r <= ROUNDS; r++)); do
    log "  round $r/$ROUNDS: nginx, no check"
    run_side "$PLAIN_PORT" "$PLAIN_PID" 0 | tee -a "$WORK/plain.runs" >&2
    log "  round $r/$ROUNDS: nginx + keygate auth_request"
    run_side "$AUTHZ_NGINX_PORT" "$AUTHZ_PID" 1 | tee -a "$WORK/authz.runs" >&2
done

echo
printf '%-26s %10s %9s %9s %9s %6s %11s %8s %s\n' side "req/s" "p50 ms" "p90 ms" "p99 ms" "cpu%" "req/cpu-s" "non-2xx" "socket errors"
for side in plain authz; do
    label="nginx (no check)"
    [[ $side == authz ]] && label="nginx + keygate authz"
    read -r rps p50 p90 p99 cpu non2xx errors <<<"$(median_line "$WORK/$side.runs" "$ROUNDS")"
    per_cpu=$(awk -v r="$rps" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", r * 100 / c; else print "-" }')
    printf '%-26s %10s %9s %9s %9s %6s %11s %8s %s\n' "$label" "$rps" "$p50" "$p90" "$p99" "$cpu" "$per_cpu" "$non2xx" "$errors"
    echo "$side $rps $cpu $non2xx $errors" >>"$WORK/summary"
done
awk '
    $1 == "plain" { pr = $2; pc = $3 } $1 == "authz" { ar = $2; ac = $3 }
    END {
        printf "\nwith the check: %.2f of the req/s", ar / pr
        if (ac > 0 && pc > 0) printf ", %.2f of the req per CPU-second", (ar / ac) / (pr / pc)
        printf "\n"
    }' "$WORK/summary"
bad=$(awk '$4 > 0 || $5 != "none"' "$WORK/summary")
[[ -z $bad ]] || log "warning: some runs had non-2xx responses or socket errors; their req/s do not measure allowed requests"
