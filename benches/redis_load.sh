#!/usr/bin/env bash
# Requests/s of keygate on the Redis store, for two questions:
#
# lookups (issue "Many replicas on Redis"): with KEYS keys in Redis and a key cache
#   (`cache.max_entries` = CACHE) smaller than the working set, a miss-heavy load (every
#   request a key drawn at random from all KEYS) against an all-hits load (a key drawn
#   from HOT_KEYS that all fit in the cache), same wrk script, alternating rounds.
#   The cache hit ratio, the store lookup latency, the CPU of keygate and of Redis, and the
#   commands Redis spent most time on (`INFO commandstats`, scripts' own calls included) are
#   read for each run, so it shows whether misses wait on Redis (keygate's core idle) or
#   cost CPU (keygate's core busy).
# limits (issue "Rate limits, quotas and usage"): all-hits load with and without a rate
#   limit on the org (per-minute and per-day, so high that nothing is refused), so every
#   admitted request goes through the Redis limiter; alternating rounds.
#
# keygate runs pinned to PROXY_CPU; wrk, the upstream (an nginx answering 200) and
# redis-server to LOAD_CPU. Redis is this script's own server (no persistence, port
# BASE_PORT+1), seeded through `cargo run --release --example seed_redis`, which writes
# keys with the store's own code. All traffic stays on 127.0.0.1; every process it
# starts is stopped on exit. Installs redis-server, nginx and wrk with apt-get when
# missing. Not part of CI.
#
# memory (issue #12, only with --only memory): keygate's RSS once every one of KEYS keys
# has been used once and sits in a cache of CACHE=KEYS entries (walked in order by
# benches/each_key.lua, in wrk runs of DURATION until the cache has missed KEYS times),
# and again once the usage counted during the walk has been written to Redis.
# Usage: benches/redis_load.sh [--only lookups|limits|memory]
# Environment (defaults in brackets):
#   KEYS [1000000]   keys seeded into Redis (the miss-heavy working set)
#   CACHE [100000]   keygate's cache.max_entries
#   HOT_KEYS [1000]  keys of the all-hits load (must be below CACHE)
#   DURATION [15s]  CONNECTIONS [64]  THREADS [1]  ROUNDS [1]  wrk settings; with
#                   ROUNDS > 1 the median round of each side is reported
#   PROXY_CPU [1]  LOAD_CPU [0]  cores for keygate, and for wrk + upstream + Redis
#   KEYGATE_BIN     use this binary instead of `cargo build --release`
#   BASE_PORT [18100]  ports BASE_PORT+1 … +4 on 127.0.0.1 are used
#   KEEP_WORKDIR    set to keep the temporary directory (configs, logs, tokens)
set -euo pipefail

KEYS=${KEYS:-1000000}
CACHE=${CACHE:-100000}
HOT_KEYS=${HOT_KEYS:-1000}
DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
BASE_PORT=${BASE_PORT:-18100}

REDIS_PORT=$((BASE_PORT + 1))
UPSTREAM_PORT=$((BASE_PORT + 2))
KG_PORT=$((BASE_PORT + 3))
KG_ADMIN_PORT=$((BASE_PORT + 4))
REQ_PATH=/v1/feeds
ORG=bench

ONLY=
while (($#)); do
    case "$1" in
        --only)
            shift
            ONLY=${1:-}
            [[ $ONLY == lookups || $ONLY == limits || $ONLY == memory ]] || { echo "--only takes lookups, limits or memory" >&2; exit 2; }
            ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
((HOT_KEYS < CACHE && HOT_KEYS <= KEYS)) || { echo "HOT_KEYS must be below CACHE and at most KEYS" >&2; exit 2; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-redis-load.XXXXXX)
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools redis-server:redis-server redis-cli:redis-tools nginx:nginx wrk:wrk curl:curl jq:jq taskset:util-linux
NCPU=$(nproc)
((PROXY_CPU < NCPU && LOAD_CPU < NCPU)) || die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU: this machine has $NCPU cores"
ports_free 4

# --- Redis, upstream, seed -------------------------------------------------------------

mkdir -p "$WORK/redis"
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start: $(tail -5 "$WORK/redis/redis.log")"
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0

start_upstream "$UPSTREAM_PORT"

log "building keygate and the seeding tool (cargo build --release)"
(cd "$REPO" && cargo build --release --quiet --bin keygate --example seed_redis) || die "cargo build --release failed"
KEYGATE=${KEYGATE_BIN:-$REPO/target/release/keygate}
[[ -x $KEYGATE ]] || die "no keygate binary at $KEYGATE"

log "seeding $KEYS keys into Redis"
t0=$(date +%s)
"$REPO/target/release/examples/seed_redis" "$REDIS_URL" keygate "$ORG" "$KEYS" "$WORK/tokens.all" 2>"$WORK/seed.log" ||
    die "seeding failed: $(tail -5 "$WORK/seed.log")"
log "  seeded in $(($(date +%s) - t0)) s; Redis uses $(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory_human/ { print $2 }' | tr -d '\r')"
head -n "$HOT_KEYS" "$WORK/tokens.all" >"$WORK/tokens.hot"

# --- keygate -------------------------------------------------------------------------

mkdir -p "$WORK/keygate"
cat >"$WORK/keygate/keygate.yaml" <<YAML
listen:
  address: 127.0.0.1:$KG_PORT
  tls: none
admin:
  address: 127.0.0.1:$KG_ADMIN_PORT
  bootstrap_token_file: $WORK/keygate/admin-token
store:
  backend: redis
  url: $REDIS_URL
  timeout: 250ms
cache: { max_entries: $CACHE }
keys: { prefix: kg }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: $REQ_PATH, upstream: feeds, scope: read }
YAML
"$KEYGATE" check-config --config "$WORK/keygate/keygate.yaml" >"$WORK/keygate/check.log" 2>&1 ||
    die "keygate check-config failed: $(cat "$WORK/keygate/check.log")"
taskset -c "$PROXY_CPU" "$KEYGATE" serve --config "$WORK/keygate/keygate.yaml" >"$WORK/keygate/keygate.log" 2>&1 &
KG_PID=$!
PIDS+=("$KG_PID")
wait_keygate "$KG_PID" "$KG_ADMIN_PORT" "$WORK/keygate/keygate.log"
for _ in $(seq 50); do [[ -s $WORK/keygate/admin-token ]] && break; sleep 0.1; done
ADMIN_TOKEN=$(tr -d '[:space:]' <"$WORK/keygate/admin-token")

probe=$(curl -s -o "$WORK/probe.json" -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $(head -n1 "$WORK/tokens.hot")" "http://127.0.0.1:$KG_PORT$REQ_PATH")
[[ $probe == 200 ]] || die "a seeded key got $probe: $(cat "$WORK/probe.json")"

# Sets the org's rate_limit (JSON, or null) through the admin API.
org_limit() {
    local status
    status=$(curl -s -o "$WORK/org.json" -w '%{http_code}' --max-time 30 -X PATCH \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        --data "{\"rate_limit\":$1}" "http://127.0.0.1:$KG_ADMIN_PORT/v1/orgs/$ORG")
    [[ $status == 200 ]] || die "PATCH /v1/orgs/$ORG answered $status: $(cat "$WORK/org.json")"
    # The data plane reads orgs through a cache of half a second.
    sleep 1
}

# Sum of a metric's samples whose labels match the regex $2.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$KG_ADMIN_PORT/metrics" |
        awk -v name="$1" -v re="$2" 'index($0, name) == 1 && $0 ~ re { s += $NF } END { printf "%.6f\n", s }'
}

# One wrk run with tokens file $2 (label $1); prints
# "label req/s p50 p90 p99 keygate-cpu% redis-cpu% hit% lookup-ms non2xx errors".
run() {
    local label=$1 tokens=$2 hz t0 t1 r0 r1 h0 h1 m0 m1 ls0 ls1 lc0 lc1 result secs
    hz=$(getconf CLK_TCK)
    h0=$(metric keygate_auth_cache_total 'result="hit"')
    m0=$(metric keygate_auth_cache_total 'result="miss"')
    ls0=$(metric keygate_store_latency_seconds_sum 'op="key_by_hash"')
    lc0=$(metric keygate_store_latency_seconds_count 'op="key_by_hash"')
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    r0=$(cpu_ticks "$REDIS_PID")
    t0=$(date +%s.%N)
    result=$(measure "http://127.0.0.1:$KG_PORT$REQ_PATH" "$KG_PID" -s "$REPO/benches/random_key.lua" -- "$tokens")
    t1=$(date +%s.%N)
    r1=$(cpu_ticks "$REDIS_PID")
    # Where Redis spent its time (commands run inside scripts are counted too).
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
        awk -F'[:,=]' '/^cmdstat_/ { printf "%s calls=%d usec=%d per_call=%.2f\n", substr($1, 9), $3, $5, $7 }' |
        sort -t= -k3 -nr | head -6 | sed "s/^/    redis $label: /" >&2
    h1=$(metric keygate_auth_cache_total 'result="hit"')
    m1=$(metric keygate_auth_cache_total 'result="miss"')
    ls1=$(metric keygate_store_latency_seconds_sum 'op="key_by_hash"')
    lc1=$(metric keygate_store_latency_seconds_count 'op="key_by_hash"')
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    read -r rps p50 p90 p99 cpu non2xx errors <<<"$result"
    awk -v l="$label" -v rps="$rps" -v p50="$p50" -v p90="$p90" -v p99="$p99" -v cpu="$cpu" \
        -v rt=$((r1 - r0)) -v hz="$hz" -v secs="$secs" -v h=$((${h1%.*} - ${h0%.*})) -v m=$((${m1%.*} - ${m0%.*})) \
        -v ls="$ls0" -v ls1="$ls1" -v lc="$lc0" -v lc1="$lc1" -v n="$non2xx" -v e="$errors" 'BEGIN {
            hit = (h + m > 0) ? 100 * h / (h + m) : 0
            lat = (lc1 - lc > 0) ? 1000 * (ls1 - ls) / (lc1 - lc) : 0
            printf "%s %s %s %s %s %s %.0f %.1f %.3f %s %s\n", l, rps, p50, p90, p99, cpu,
                100 * rt / hz / secs, hit, lat, n, e
        }'
}

# Three seconds of the hot keys, not measured.
warm() {
    DURATION=3s measure "http://127.0.0.1:$KG_PORT$REQ_PATH" "$KG_PID" -s "$REPO/benches/random_key.lua" -- "$WORK/tokens.hot" >/dev/null
}

# Runs the sides "label:tokens" given, alternating, ROUNDS times; prints the median
# round of each side.
compare() {
    local r side label tokens
    for ((r = 1; r <= ROUNDS; r++)); do
        for side in "$@"; do
            label=${side%%:*} tokens=${side#*:}
            [[ $label == limited ]] && org_limit '{"per_minute":1000000000,"per_day":1000000000000}'
            [[ $label == unlimited ]] && org_limit null
            # The miss-heavy run fills the cache with cold keys: warm the hot ones again.
            [[ $tokens == "$WORK/tokens.hot" ]] && warm
            log "  round $r/$ROUNDS: $label"
            # The median is taken on req/s: keep it the first field.
            run "$label" "$tokens" | awk '{ l = $1; $1 = ""; print substr($0, 2), l }' >>"$WORK/$label.runs"
            log "    $(tail -n1 "$WORK/$label.runs" | awk '{ print $1 " req/s, keygate core " $5 "% busy, hits " $7 "%" }')"
        done
    done
    for side in "$@"; do
        label=${side%%:*}
        median_line "$WORK/$label.runs" "$ROUNDS" | awk '{ l = $NF; $NF = ""; print l, $0 }'
    done
}

log "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (random key per request), keygate on core $PROXY_CPU, wrk + upstream + Redis on core $LOAD_CPU"
log "machine: $NCPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the runs"

if [[ $ONLY == memory ]]; then
    rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$KG_PID/status"; }
    log "memory: walking all $KEYS keys once (cache.max_entries: $CACHE); RSS before: $(rss) MB"
    for ((i = 0; i < 20; i++)); do
        misses=$(metric keygate_auth_cache_total 'result="miss"')
        if ((${misses%.*} >= KEYS)); then break; fi
        kill -0 "$KG_PID" 2>/dev/null || die "keygate exited; its log: $(tail -20 "$WORK/keygate/keygate.log")"
        # Each run starts where the last one stopped: the keys already looked up.
        measure "http://127.0.0.1:$KG_PORT$REQ_PATH" "$KG_PID" -s "$REPO/benches/each_key.lua" -- "$WORK/tokens.all" "${misses%.*}" >/dev/null
        log "  misses so far: $(metric keygate_auth_cache_total 'result="miss"' | cut -d. -f1), RSS $(rss) MB"
    done
    misses=$(metric keygate_auth_cache_total 'result="miss"')
    ((${misses%.*} >= KEYS)) || die "the cache missed only ${misses%.*} times, below $KEYS"
    hits=$(metric keygate_auth_cache_total 'result="hit"')
    sleep 2
    echo
    echo "keys looked up once each: ${misses%.*} misses, ${hits%.*} hits; cache.max_entries $CACHE"
    echo "keygate RSS with every key cached: $(rss) MB"
    # Usage counted during the walk is written by the flush every 5 s; a walk faster than
    # the store takes last_used_at leaves a backlog. Wait (at most 3 minutes) until two
    # flushes in a row wrote nothing, then read RSS again: the cache alone.
    t0=$(date +%s) last=-1
    for ((i = 0; i < 36; i++)); do
        touched=$(metric keygate_store_operations_total 'op="touch_keys",result="ok"')
        [[ $touched == "$last" ]] && break
        last=$touched
        sleep 5
    done
    echo "keygate RSS once the walk's usage is written ($(($(date +%s) - t0)) s later): $(rss) MB"
    exit 0
fi

RESULTS=""
if [[ $ONLY != limits ]]; then
    log "lookups: $KEYS keys in Redis, cache of $CACHE, all-hits over $HOT_KEYS keys vs miss-heavy over all"
    RESULTS+=$(compare "all-hits:$WORK/tokens.hot" "miss-heavy:$WORK/tokens.all")$'\n'
fi
if [[ $ONLY != lookups ]]; then
    log "limits: all-hits over $HOT_KEYS keys, org without and with a rate limit (Redis limiter)"
    RESULTS+=$(compare "unlimited:$WORK/tokens.hot" "limited:$WORK/tokens.hot")$'\n'
    org_limit null
fi

echo
printf '%-12s %9s %8s %8s %8s %8s %8s %6s %10s %8s %s\n' side "req/s" "p50 ms" "p90 ms" "p99 ms" "kg cpu%" "redis%" "hit%" "lookup ms" "non-2xx" "socket errors"
while read -r label rps p50 p90 p99 cpu rcpu hit lat non2xx errors; do
    [[ -n $label ]] || continue
    printf '%-12s %9s %8s %8s %8s %8s %8s %6s %10s %8s %s\n' "$label" "$rps" "$p50" "$p90" "$p99" "$cpu" "$rcpu" "$hit" "$lat" "$non2xx" "$errors"
done <<<"$RESULTS"
echo
ratio() {
    local a b
    a=$(awk -v l="$1" '$1 == l { print $2 }' <<<"$RESULTS")
    b=$(awk -v l="$2" '$1 == l { print $2 }' <<<"$RESULTS")
    [[ -n $a && -n $b ]] && awk -v a="$a" -v b="$b" -v t="$3" 'BEGIN { printf "%s: %.2f\n", t, a / b }'
    return 0
}
ratio miss-heavy all-hits "miss-heavy / all-hits in req/s"
ratio limited unlimited "with the Redis limiter / without, in req/s"
bad=$(awk '$10 > 0 || $11 != "none"' <<<"$RESULTS")
[[ -z $bad ]] || log "warning: some runs had non-2xx responses or socket errors; their req/s do not measure allowed requests"
