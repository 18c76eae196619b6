#!/usr/bin/env bash
# keygate's resident memory with many idle keep-alive connections (issue #12: ≤ 200 MB
# with 10,000 idle TLS connections).
#
# keygate (embedded store, the access log on) runs in front of an nginx `return 200`
# upstream; a Python client opens CONNS connections one after another, sends one
# `GET /feeds` with a valid key on each, reads its 200, and keeps every connection open
# and idle. keygate's VmRSS is printed before the connections, once they are all open
# and idle, and per connection.
#
# Usage: benches/idle_rss.sh [BINARY...]   (default: target/release/keygate, built)
# Environment: CONNS [10000]  TLS (set: keygate's listener is `tls: self_signed`)
#   SETTLE [3]   seconds to wait with every connection open before reading VmRSS
#   HEAPTRACK    set: run keygate under heaptrack and keep its profile
#                (`heaptrack_print -p 0 -a 1 FILE` then lists what stays allocated)
#   BASE_PORT [18450]  KEEP_WORKDIR
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-idle.XXXXXX)
LOAD_CPU=0
# shellcheck source=benches/common.sh
source "$REPO/benches/common.sh"
trap cleanup EXIT
CONNS=${CONNS:-10000} SETTLE=${SETTLE:-3} BASE_PORT=${BASE_PORT:-18450}
UPSTREAM_PORT=$((BASE_PORT + 1)) KG_PORT=$((BASE_PORT + 2)) KG_ADMIN_PORT=$((BASE_PORT + 3))
ports_free 3
need_tools nginx:nginx curl:curl jq:jq python3:python3
[[ -z ${HEAPTRACK:-} ]] || need_tools heaptrack:heaptrack
# Each end (keygate, the client) holds CONNS sockets.
ulimit -n $((CONNS + 1024)) 2>/dev/null || die "cannot raise the open-file limit to $((CONNS + 1024)) (hard limit $(ulimit -Hn)); lower CONNS"
BINS=("$@")
if ((${#BINS[@]} == 0)); then
    (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
    BINS=("$REPO/target/release/keygate")
fi
tls=none scheme=http
[[ -z ${TLS:-} ]] || { tls=self_signed scheme=https; }
start_upstream "$UPSTREAM_PORT"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

for bin in "${BINS[@]}"; do
    rm -rf "$WORK/kg" && mkdir -p "$WORK/kg"
    cat >"$WORK/kg/keygate.yaml" <<YAML
listen: { address: "127.0.0.1:$KG_PORT", tls: $tls }
admin: { address: "127.0.0.1:$KG_ADMIN_PORT", bootstrap_token_file: "$WORK/kg/admin-token" }
store: { backend: embedded, path: "$WORK/kg/keygate.db" }
keys: { prefix: bench }
limits: { max_connections: $((CONNS + 1000)), idle_timeout: 300s }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: /feeds, upstream: feeds, scope: read }
YAML
    run=("$bin" serve --config "$WORK/kg/keygate.yaml")
    [[ -z ${HEAPTRACK:-} ]] || run=(heaptrack -o "$WORK/kg/heaptrack" "${run[@]}")
    "${run[@]}" >"$WORK/kg/keygate.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    # Under heaptrack, keygate is heaptrack's child.
    for _ in $(seq 50); do kgpid=$(pgrep -n -f "^$bin serve" || true); [[ -n $kgpid ]] && break; sleep 0.1; done
    [[ -n ${kgpid:-} ]] || die "keygate did not start: $(tail -5 "$WORK/kg/keygate.log")"
    wait_keygate "$kgpid" "$KG_ADMIN_PORT" "$WORK/kg/keygate.log"
    for _ in $(seq 100); do [[ -s $WORK/kg/admin-token ]] && break; sleep 0.1; done
    token=$(tr -d '[:space:]' <"$WORK/kg/admin-token")
    secret=$(bench_key "$KG_ADMIN_PORT" "$token" "$WORK/kg")
    # One request first, so that what the first request sets up once is not counted
    # against the connections.
    curl -sk -o /dev/null -H "Authorization: Bearer $secret" "$scheme://127.0.0.1:$KG_PORT/feeds"
    before=$(rss_kb "$kgpid")
    mkfifo "$WORK/ready" "$WORK/done"
    python3 - "$KG_PORT" "$CONNS" "$secret" "$scheme" "$WORK/ready" "$WORK/done" <<'PY' &
import socket, ssl, sys
port, n, secret, scheme, ready, done = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = None
if scheme == "https":
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
req = f"GET /feeds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(req)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit(f"connection {i} closed before its response")
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"connection {i}: {head.splitlines()[0].decode()}")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
    conns.append(s)
open(ready, "w").close()
open(done).read()
PY
    client=$!
    PIDS+=("$client")
    cat "$WORK/ready" >/dev/null || true
    kill -0 "$client" 2>/dev/null || die "the client failed (see above)"
    sleep "$SETTLE"
    open=$(rss_kb "$kgpid")
    echo >"$WORK/done"
    wait "$client" 2>/dev/null || true
    kill -TERM "$kgpid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ -n ${HEAPTRACK:-} ]]; then
        profile=$(ls -t "$WORK/kg"/heaptrack*.zst "$WORK/kg"/heaptrack*.gz 2>/dev/null | head -1 || true)
        cp "$profile" "/tmp/keygate-idle-heaptrack.$(basename "$profile" | sed 's/^[^.]*\.//')" && log "heaptrack profile: /tmp/keygate-idle-heaptrack.*"
    fi
    rm -f "$WORK/ready" "$WORK/done"
    awk -v b="$bin" -v s="$scheme" -v n="$CONNS" -v before="$before" -v open="$open" 'BEGIN {
        printf "%s (%s): RSS %.0f MB before, %.0f MB with %d idle connections = %.1f KB per connection\n",
            b, s, before / 1024, open / 1024, n, (open - before) / n }'
done
