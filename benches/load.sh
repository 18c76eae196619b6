#!/usr/bin/env bash
# Throughput of keygate against nginx as a plain reverse proxy, on this machine.
#
# Both proxies forward to the same upstream (a second nginx answering `return 200` on
# loopback) and are driven by the same wrk command; each proxy runs pinned to one
# core, wrk and the upstream to another. The result is keygate's requests/s as a ratio
# of nginx's, measured in the same run, plus absolute numbers, latency percentiles and
# how busy each proxy's core was. A proxy whose core is not near 100% was not the
# bottleneck; its req/s then says more about the client side (or other load on a
# shared machine) than about itself, and requests per CPU-second of the proxy
# (req/s ÷ its CPU share) is the steadier comparison, which is printed too.
#
# keygate runs with full authentication: every request carries a real API key that
# goes through token check, SHA-256, cache, key status and scope. wrk sends nginx the
# very same request bytes (Authorization header included), which nginx just forwards.
#
# Not part of CI. Installs nginx and wrk with apt-get when they are missing. All
# traffic stays on 127.0.0.1; every process it starts is stopped on exit.
#
# Usage: benches/load.sh [--tls] [--only nginx|keygate]
# Environment (defaults in brackets):
#   DURATION [15s]  CONNECTIONS [64]  THREADS [1]  ROUNDS [1]  wrk settings; with
#                   ROUNDS > 1 the proxies alternate and the median round is reported
#   RATE            a paced load of RATE requests/s (oha with latency correction, installed
#                   with `cargo install oha` when missing) instead of wrk's closed loop:
#                   p99 at the same offered load for both proxies
#   PROXY_CPU [1]   core for the proxy under test
#   LOAD_CPU [0]    core for wrk and the upstream
#   KEYGATE_BIN     use this binary instead of `cargo build --release`
#   NGINX_ACCESS_LOG [on]  nginx as usually deployed logs every request, as keygate does
#   BASE_PORT [18000]  ports BASE_PORT+1 … +7 on 127.0.0.1 are used
#   RATE_LIMIT      a global `rate_limit:` for keygate's config, e.g.
#                   '{ per_minute: 1000000000, per_day: 1000000000000 }' (limits so high
#                   nothing is refused), to measure what the limiter costs [none]
#   KEEP_WORKDIR    set to keep the temporary directory (configs, logs) for inspection
#   PERF            set to profile both proxies with `perf record` during the plain-HTTP
#                   runs; the data goes to PERF_DATA.nginx and PERF_DATA.keygate
#                   [/tmp/keygate-load.perf.data.*], the top of each flat profile is
#                   printed at the end
set -euo pipefail

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-on}
BASE_PORT=${BASE_PORT:-18000}

UPSTREAM_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
NGINX_TLS_PORT=$((BASE_PORT + 3))
KG_PORT=$((BASE_PORT + 4))
KG_ADMIN_PORT=$((BASE_PORT + 5))
KG_TLS_PORT=$((BASE_PORT + 6))
KG_TLS_ADMIN_PORT=$((BASE_PORT + 7))
REQ_PATH=/v1/feeds

PERF_DATA=${PERF_DATA:-/tmp/keygate-load.perf.data}

TLS=0
ONLY=
while (($#)); do
    case "$1" in
        --tls) TLS=1 ;;
        --only)
            shift
            ONLY=${1:-}
            [[ $ONLY == nginx || $ONLY == keygate ]] || { echo "--only takes nginx or keygate" >&2; exit 2; }
            ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-load.XXXXXX)
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------

tools=(nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux)
((TLS)) && tools+=(openssl:openssl)
[[ -n ${PERF:-} ]] && tools+=(perf:linux-perf)
need_tools "${tools[@]}"
if [[ -n ${RATE:-} ]] && ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha) for the paced load"
    cargo install --quiet --locked oha || die "cargo install oha failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

NCPU=$(nproc)
((PROXY_CPU < NCPU && LOAD_CPU < NCPU)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $NCPU cores"
((PROXY_CPU != LOAD_CPU)) || log "warning: the proxy and the load generator share core $PROXY_CPU"

ports_free 7

# --- upstream and nginx --------------------------------------------------------------

start_upstream "$UPSTREAM_PORT"

if ((TLS)); then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
fi

NGINX_ACCESS=off
[[ $NGINX_ACCESS_LOG == on ]] && NGINX_ACCESS="$WORK/proxy/access.log"
nginx_tls_server=
((TLS)) && nginx_tls_server="
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        http2 on;
        ssl_certificate $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { include $WORK/proxy/forward.conf; }
    }"
nginx_conf proxy "$NGINX_ACCESS" "
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { include $WORK/proxy/forward.conf; }
    }$nginx_tls_server"
# A usual reverse-proxy setup: pooled HTTP/1.1 upstream connections, forwarding headers.
cat >"$WORK/proxy/forward.conf" <<'EOF'
proxy_pass http://backend;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $proxy_host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Host $host;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Request-Id $request_id;
EOF
# nginx 1.22 has no `http2 on;` (1.25.1+): fall back to the listen parameter.
if ((TLS)) && ! "$NGINX" -t -q -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" 2>/dev/null; then
    sed -i 's/ssl;$/ssl http2;/; /http2 on;/d' "$WORK/proxy/nginx.conf"
fi

# --- keygate -----------------------------------------------------------------------

SECRET=placeholder-no-auth
KG_PID=
KG_TLS_PID=

# Starts keygate with listen.tls $2 on port $3, admin port $4; sets KG_STARTED_PID.
start_keygate() {
    local name=$1 tls=$2 port=$3 admin=$4 dir=$WORK/$1
    mkdir -p "$dir"
    cat >"$dir/keygate.yaml" <<EOF
listen:
  address: 127.0.0.1:$port
  tls: $tls
admin:
  address: 127.0.0.1:$admin
  bootstrap_token_file: $dir/admin-token
store:
  backend: embedded
  path: $dir/keygate.db
keys: { prefix: kg }
${RATE_LIMIT:+rate_limit: $RATE_LIMIT}
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: $REQ_PATH, upstream: feeds, scope: read }
EOF
    "$KEYGATE" check-config --config "$dir/keygate.yaml" >"$dir/check.log" 2>&1 ||
        die "keygate check-config failed: $(cat "$dir/check.log")"
    taskset -c "$PROXY_CPU" "$KEYGATE" serve --config "$dir/keygate.yaml" >"$dir/keygate.log" 2>&1 &
    KG_STARTED_PID=$!
    PIDS+=("$KG_STARTED_PID")
    wait_keygate "$KG_STARTED_PID" "$admin" "$dir/keygate.log"
}

# Creates org `bench` and a read key through the admin API of the keygate in $1; sets
# SECRET. Neither the admin token nor the secret is printed.
create_key() {
    local dir=$WORK/$1 admin=$2 token resp status
    for _ in $(seq 50); do [[ -s $dir/admin-token ]] && break; sleep 0.1; done
    [[ -s $dir/admin-token ]] || die "keygate wrote no bootstrap token to $dir/admin-token"
    token=$(tr -d '[:space:]' <"$dir/admin-token")
    api() {
        curl -s -o "$dir/resp.json" -w '%{http_code}' --max-time 5 -X POST \
            -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
            --data "$2" "http://127.0.0.1:$admin$1"
    }
    status=$(api /v1/orgs '{"id":"bench","name":"Bench"}')
    [[ $status == 201 || $status == 200 ]] || die "POST /v1/orgs answered $status: $(cat "$dir/resp.json")"
    status=$(api /v1/orgs/bench/keys '{"name":"load","scopes":["read"]}')
    [[ $status == 201 ]] || die "POST /v1/orgs/bench/keys answered $status: $(jq -c 'del(.secret)' "$dir/resp.json" 2>/dev/null)"
    SECRET=$(jq -er .secret "$dir/resp.json") || die "the key-create response has no secret"
    rm -f "$dir/resp.json"
}

# One authenticated request must be allowed, or the run would time refusals.
check_allowed() {
    local url=$1 status
    status=$(curl -sk -o "$WORK/probe.json" -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $SECRET" "$url")
    [[ $status == 200 ]] || die "$url answered $status to an authenticated request: $(cat "$WORK/probe.json")"
}

if [[ $ONLY != nginx ]]; then
    if [[ -n ${KEYGATE_BIN:-} ]]; then
        KEYGATE=$KEYGATE_BIN
    else
        log "building keygate (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
        KEYGATE=$REPO/target/release/keygate
    fi
    [[ -x $KEYGATE ]] || die "no keygate binary at $KEYGATE"
    start_keygate plain none "$KG_PORT" "$KG_ADMIN_PORT"
    KG_PID=$KG_STARTED_PID
    create_key plain "$KG_ADMIN_PORT"
    check_allowed "http://127.0.0.1:$KG_PORT$REQ_PATH"
    if ((TLS)); then
        start_keygate tls "{ cert: $WORK/tls.crt, key: $WORK/tls.key }" "$KG_TLS_PORT" "$KG_TLS_ADMIN_PORT"
        KG_TLS_PID=$KG_STARTED_PID
        # Its own store: create the same org and key there, then use that secret.
        PLAIN_SECRET=$SECRET
        create_key tls "$KG_TLS_ADMIN_PORT"
        TLS_SECRET=$SECRET
        SECRET=$PLAIN_SECRET
    fi
fi

NGINX_PID=
if [[ $ONLY != keygate ]]; then
    start_nginx proxy "$PROXY_CPU"
    NGINX_PID=$NGINX_STARTED_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/" 10 || die "the proxy nginx did not start: $(cat "$WORK/proxy/error.log")"
    check_allowed "http://127.0.0.1:$NGINX_PORT$REQ_PATH"
fi

# With PERF set, profiles process $2 (and its children) into $PERF_DATA.$1 until
# perf_stop; the last round's profile is the one kept.
PERF_PID=
perf_start() {
    [[ -n ${PERF:-} ]] || return 0
    local pids
    pids=$(pgrep -P "$2" | paste -sd, -)
    perf record -q -g -F 499 -o "$PERF_DATA.$1" -p "$2${pids:+,$pids}" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    [[ -n $PERF_PID ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" || true
    PERF_PID=
}

# Groups a flat `perf report --sort dso,symbol` by what the symbols belong to.
perf_components() {
    awk '
        /^ +[0-9.]+%/ {
            pct = $1 + 0; line = $0
            if (line ~ /\[k\]/ && line ~ /tcp|skb|inet|ip_|sock|net_|dev_|napi|loopback|datagram|_iter/) c = "kernel: TCP/loopback"
            else if (line ~ /\[k\]/) c = "kernel: other (syscalls, wakeups, scheduler)"
            else if (line ~ /malloc|free|_int_|unlink_chunk|realloc|tcache/) c = "allocator"
            else if (line ~ /mem(move|cpy|cmp|set)|str(len|cmp)/) c = "memcpy/memcmp"
            else if (line ~ /ngx_/) c = "nginx code"
            else if (line ~ /tracing|serde_json|core::fmt|fmt::|itoa|ryu/) c = "logging and formatting"
            else if (line ~ /hyper|h2::/) c = "HTTP codec and proxying (hyper)"
            else if (line ~ /http::/) c = "headers (http crate)"
            else if (line ~ /tokio|mio::/) c = "event loop (tokio)"
            else if (line ~ /prometheus|moka|crossbeam|keygate::|sha2|crc32|matchit|jiff/) c = "keygate: auth, policy, limits, metrics"
            else c = "other user space"
            sum[c] += pct
        }
        END { for (c in sum) printf "    %5.1f%%  %s\n", sum[c], c }' | sort -rn
}

# --- runs --------------------------------------------------------------------------

# Shows one round's result as it comes, so a noisy round can be seen.
round_log() {
    local rps p50 p90 p99 cpu rest
    read -r rps p50 p90 p99 cpu rest
    log "    $rps req/s, p99 $p99 ms, proxy core $cpu% busy"
}

# Runs both sides ROUNDS times, alternating, so that a burst of other load on this
# shared machine does not land on one side only. Prints one result line per side:
# "label req/s p50 p90 p99 cpu% non2xx errors", the median round by req/s.
run_pair() {
    local kind=$1 nginx_url=$2 kg_url=$3 kg_pid=$4 kg_secret=$5 r
    : >"$WORK/$kind.nginx" && : >"$WORK/$kind.keygate"
    for ((r = 1; r <= ROUNDS; r++)); do
        if [[ -n $NGINX_PID ]]; then
            log "  round $r/$ROUNDS: nginx $kind"
            [[ $kind == http ]] && perf_start nginx "$NGINX_PID"
            measure "$nginx_url" "$NGINX_PID" -H "Authorization: Bearer $SECRET" -H "Accept: application/json" | tee -a "$WORK/$kind.nginx" | round_log
            perf_stop
        fi
        if [[ -n $kg_pid ]]; then
            log "  round $r/$ROUNDS: keygate $kind"
            [[ $kind == http ]] && perf_start keygate "$kg_pid"
            measure "$kg_url" "$kg_pid" -H "Authorization: Bearer $kg_secret" -H "Accept: application/json" | tee -a "$WORK/$kind.keygate" | round_log
            perf_stop
        fi
    done
    local side
    for side in nginx keygate; do
        [[ -s $WORK/$kind.$side ]] || continue
        echo "$side/$kind $(median_line "$WORK/$kind.$side" "$ROUNDS")"
    done
}

log "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, proxies on core $PROXY_CPU, wrk and upstream on core $LOAD_CPU"
log "machine: $NCPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs"
RESULTS=$(
    run_pair http "http://127.0.0.1:$NGINX_PORT$REQ_PATH" "http://127.0.0.1:$KG_PORT$REQ_PATH" "$KG_PID" "$SECRET"
    if ((TLS)); then
        run_pair https "https://127.0.0.1:$NGINX_TLS_PORT$REQ_PATH" "https://127.0.0.1:$KG_TLS_PORT$REQ_PATH" "$KG_TLS_PID" "${TLS_SECRET:-}"
    fi
)

echo
printf '%-16s %10s %9s %9s %9s %6s %11s %8s %s\n' side "req/s" "p50 ms" "p90 ms" "p99 ms" "cpu%" "req/cpu-s" "non-2xx" "socket errors"
while read -r label rps p50 p90 p99 cpu non2xx errors; do
    per_cpu=$(awk -v r="$rps" -v c="$cpu" 'BEGIN { if (c > 0) printf "%.0f", r * 100 / c; else print "-" }')
    printf '%-16s %10s %9s %9s %9s %6s %11s %8s %s\n' "$label" "$rps" "$p50" "$p90" "$p99" "$cpu" "$per_cpu" "$non2xx" "$errors"
done <<<"$RESULTS"
echo
for kind in http https; do
    n=$(awk -v l="nginx/$kind" '$1 == l { print $2, $6 }' <<<"$RESULTS")
    k=$(awk -v l="keygate/$kind" '$1 == l { print $2, $6 }' <<<"$RESULTS")
    if [[ -n $n && -n $k ]]; then
        awk -v k="$k" -v n="$n" -v kind="$kind" 'BEGIN {
            split(k, kk, " "); split(n, nn, " ")
            printf "%s: keygate / nginx = %.2f in req/s (goal >= 1.00)", kind, kk[1] / nn[1]
            if (kk[2] > 0 && nn[2] > 0)
                printf ", %.2f in req per CPU-second", (kk[1] / kk[2]) / (nn[1] / nn[2])
            printf "\n"
        }'
    fi
done
bad=$(awk '$7 > 0 || $8 != "none"' <<<"$RESULTS")
[[ -z $bad ]] || log "warning: some runs had non-2xx responses or socket errors (see above); their req/s do not measure allowed requests"
for side in nginx keygate; do
    [[ -n ${PERF:-} && -s $PERF_DATA.$side ]] || continue
    echo
    echo "$side, CPU by shared object (perf, plain HTTP; data in $PERF_DATA.$side):"
    # `|| true`: head closing the pipe early is not a failure.
    perf report -i "$PERF_DATA.$side" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -6 || true
    echo "$side, CPU by component (flat profile, symbols grouped by name):"
    perf report -i "$PERF_DATA.$side" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        perf_components || true
    echo "$side, hottest symbols:"
    perf report -i "$PERF_DATA.$side" --no-children --sort symbol --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -20 | cut -c1-120 || true
done
