# Shared by the load scripts (benches/load.sh, benches/redis_load.sh): process
# cleanup, tool installation, CPU accounting, one wrk run, and nginx instances.
# Sourced, not run. Expects WORK (a temporary directory) and LOAD_CPU to be set;
# fills PIDS with every process it starts, which `cleanup` stops on exit.

PIDS=()

log() { printf '%s\n' "$*" >&2; }
die() { log "$(basename "$0"): $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait: 50 × 0.1 s, then force.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_WORKDIR:-} ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}

# Installs the Debian packages named, those whose command is missing.
# Usage: need_tools COMMAND:PACKAGE …
need_tools() {
    local want=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || want+=("$pkg")
    done
    ((${#want[@]})) || return 0
    log "installing ${want[*]} with apt-get"
    local sudo=
    ((EUID == 0)) || sudo=sudo
    $sudo apt-get update -qq
    # nginx's and redis's packages may start system services; the scripts do not use them.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
}

# Dies unless every port in BASE_PORT+1 … BASE_PORT+$1 is free on 127.0.0.1.
ports_free() {
    local port
    for port in $(seq $((BASE_PORT + 1)) $((BASE_PORT + $1))); do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is already in use; choose another BASE_PORT"
        fi
    done
}

# Waits (at most $2 seconds) until URL $1 answers at all.
wait_http() {
    local url=$1 limit=${2:-30} i
    for ((i = 0; i < limit * 10; i++)); do
        curl -sk -o /dev/null --max-time 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

# Total CPU ticks (user + system) of a process and its children.
cpu_ticks() {
    local total=0 p
    for p in "$@" $(pgrep -P "$1" || true); do
        [[ -r /proc/$p/stat ]] || continue
        # Fields 14 and 15 after the command name, which may contain spaces.
        local stat rest
        stat=$(</proc/"$p"/stat)
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Runs wrk (pinned to LOAD_CPU, THREADS/CONNECTIONS/DURATION) against URL $1 while
# measuring the CPU use of process $2; further arguments go to wrk (headers, -s
# script; after `--`, the script's own arguments). Appends wrk's output to $WORK/wrk.log and prints
# "req_per_s p50 p90 p99 cpu_percent non2xx errors" (latencies in ms).
measure() {
    local url=$1 pid=$2 out hz before after secs opts=() script_args=()
    shift 2
    while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
    (($#)) && script_args=("$@") # starts with `--`, which wrk wants after the URL
    hz=$(getconf CLK_TCK)
    before=$(cpu_ticks "$pid")
    local t0 t1
    t0=$(date +%s.%N)
    if [[ -n ${RATE:-} ]]; then
        # A paced load: RATE requests/s whatever the latency, each latency counted from
        # when its request was due (no coordinated omission). oha, not wrk: wrk cannot pace.
        ((${#script_args[@]} == 0)) || die "RATE cannot be combined with a wrk script"
        out=$(taskset -c "$LOAD_CPU" oha --no-tui --output-format json -q "$RATE" --latency-correction \
            -c "$CONNECTIONS" -z "$DURATION" "${opts[@]}" "$url" | python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
non2xx = sum(n for c, n in codes.items() if not c.startswith("2"))
errors = sum(r.get("errorDistribution", {}).values())
print("Requests/sec: %.2f" % r["summary"]["requestsPerSec"])
for q in ("50", "90", "99"):
    print("   %s%% %.3fms" % (q, p["p" + q] * 1000))
if non2xx: print("  Non-2xx or 3xx responses: %d" % non2xx)
if errors: print("  Socket errors: other %d" % errors)
')
    else
        out=$(taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${opts[@]}" "$url" "${script_args[@]}")
    fi
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    printf '%s\n' "$out" >>"$WORK/wrk.log"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    awk -v ticks=$((after - before)) -v hz="$hz" -v secs="$secs" '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { errors = $0; sub(/.*Socket errors: /, "", errors); gsub(/ /, "", errors) }
        END {
            printf "%s %.3f %.3f %.3f %.0f %d %s\n", rps, p50, p90, p99,
                100 * ticks / hz / secs, non2xx, (errors == "" ? "none" : errors)
        }' <<<"$out"
}

NGINX_USER=
((EUID == 0)) && NGINX_USER="user root;"

# Writes $WORK/$1/nginx.conf: one worker, no system paths, long keep-alive so that no
# proxy is measured reconnecting; access log $2; server blocks $3.
nginx_conf() {
    local name=$1 access_log=$2 server_block=$3
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name/nginx.conf" <<NGINX
$NGINX_USER
worker_processes 1;
daemon off;
pid $WORK/$name/nginx.pid;
error_log $WORK/$name/error.log warn;
events { worker_connections 4096; }
http {
    access_log $access_log;
    client_body_temp_path $WORK/$name/body;
    proxy_temp_path $WORK/$name/proxy;
    fastcgi_temp_path $WORK/$name/fastcgi;
    uwsgi_temp_path $WORK/$name/uwsgi;
    scgi_temp_path $WORK/$name/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
$server_block
}
NGINX
}

# Starts the nginx named $1 on core $2; sets NGINX_STARTED_PID.
start_nginx() {
    local name=$1 cpu=$2 nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    "$nginx" -t -q -p "$WORK/$name" -c "$WORK/$name/nginx.conf" 2>"$WORK/$name/check.log" ||
        die "nginx config $name is invalid: $(cat "$WORK/$name/check.log")"
    taskset -c "$cpu" "$nginx" -p "$WORK/$name" -c "$WORK/$name/nginx.conf" \
        >"$WORK/$name/stdout.log" 2>&1 &
    NGINX_STARTED_PID=$!
    PIDS+=("$NGINX_STARTED_PID")
}

# The upstream both proxies forward to: an nginx on core LOAD_CPU answering 200 with a
# small JSON body on 127.0.0.1:$1.
start_upstream() {
    local port=$1
    nginx_conf upstream off "
    server {
        listen 127.0.0.1:$port;
        default_type application/json;
        location / { return 200 '{\"feeds\":[]}\n'; }
    }"
    start_nginx upstream "$LOAD_CPU"
    wait_http "http://127.0.0.1:$port/" 10 || die "the upstream nginx did not start: $(cat "$WORK/upstream/error.log")"
}

# Waits (at most 30 s) until the keygate with pid $1 answers 200 on admin port $2's
# /readyz; dies with its log ($3) if it exits or never gets ready.
wait_keygate() {
    local pid=$1 admin=$2 logfile=$3 i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || die "keygate exited at start; its log: $(tail -20 "$logfile")"
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$admin/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    die "keygate was not ready within 30 s; its log: $(tail -20 "$logfile")"
}

# Creates org `bench` and a key with scope `read` through keygate's admin API on
# 127.0.0.1:$1 with admin token $2 (answers kept in directory $3); prints the key's secret.
bench_key() {
    local admin=$1 token=$2 dir=$3
    api() {
        curl -s -o "$dir/resp.json" -w '%{http_code}' --max-time 30 -X POST -H "Authorization: Bearer $token" \
            -H 'Content-Type: application/json' --data "$2" "http://127.0.0.1:$admin$1"
    }
    [[ $(api /v1/orgs '{"id":"bench","name":"Bench"}') == 201 ]] || die "POST /v1/orgs failed: $(cat "$dir/resp.json")"
    [[ $(api /v1/orgs/bench/keys '{"name":"bench","scopes":["read"]}') == 201 ]] || die "POST /v1/orgs/bench/keys failed"
    jq -r .secret "$dir/resp.json"
    rm -f "$dir/resp.json"
}

# The median line (by the first field) of file $1 holding $2 lines.
median_line() {
    sort -n -k1,1 "$1" | awk -v n="$2" 'NR == int((n + 1) / 2)'
}
