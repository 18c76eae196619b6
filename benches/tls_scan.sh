#!/usr/bin/env bash
# testssl.sh against keygate's TLS data listener: the evidence for docs/security.md
# ("TLS scan").
#
# Makes a throwaway CA and a server certificate for 127.0.0.1/localhost (openssl),
# starts keygate with them (`listen.tls: { cert, key }`), runs testssl.sh with that CA
# added to its trust stores, and prints every finding of severity HIGH or CRITICAL and
# every line that says "NOT ok"; exits non-zero if there is any. The full output is in
# WORK/testssl.log and WORK/testssl.json.
#
# Not part of CI. Installs testssl.sh and openssl with apt-get when missing. testssl
# talks only to 127.0.0.1 (it does not "phone out" unless asked). Bounded: testssl
# runs at most 15 minutes.
#
# Usage: benches/tls_scan.sh
# Environment: KEYGATE_BIN (default: cargo build --release), BASE_PORT [18200] (ports
# BASE_PORT+1 … +3), KEEP_WORKDIR to keep the directory.
set -euo pipefail

BASE_PORT=${BASE_PORT:-18200}
UPSTREAM_PORT=$((BASE_PORT + 1))
KG_PORT=$((BASE_PORT + 2))
KG_ADMIN_PORT=$((BASE_PORT + 3))
LOAD_CPU=0

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/keygate-tls.XXXXXX)
source "$REPO/benches/common.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM

need_tools testssl:testssl.sh openssl:openssl curl:curl
ports_free 3

if [[ -n ${KEYGATE_BIN:-} ]]; then
    KEYGATE=$KEYGATE_BIN
else
    log "building keygate (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin keygate) || die "cargo build --release failed"
    KEYGATE=$REPO/target/release/keygate
fi

# A CA and a server certificate signed by it (ECDSA P-256), as an operator would have
# one: valid for a year, with a CRL distribution point (never fetched: testssl does not
# phone out).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 400 \
    -subj /CN=keygate-scan-ca -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
cat >"$WORK/ext.cnf" <<'EXT'
subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=digitalSignature
crlDistributionPoints=URI:http://127.0.0.1:9/keygate-scan-ca.crl
EXT
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 365 -extfile "$WORK/ext.cnf" -out "$WORK/tls.crt" 2>/dev/null

cat >"$WORK/keygate.yaml" <<EOF
listen: { address: 127.0.0.1:$KG_PORT, tls: { cert: $WORK/tls.crt, key: $WORK/tls.key } }
admin: { address: 127.0.0.1:$KG_ADMIN_PORT, bootstrap_token_file: $WORK/admin-token }
store: { backend: embedded, path: $WORK/keygate.db }
keys: { prefix: kg }
upstreams:
  feeds: { url: "http://127.0.0.1:$UPSTREAM_PORT" }
routes:
  - { name: list-feeds, methods: [GET], path: /v1/feeds, upstream: feeds, scope: read }
EOF
"$KEYGATE" serve --config "$WORK/keygate.yaml" >"$WORK/keygate.log" 2>&1 &
KG_PID=$!
PIDS+=("$KG_PID")
wait_keygate "$KG_PID" "$KG_ADMIN_PORT" "$WORK/keygate.log"

log "running testssl.sh against https://127.0.0.1:$KG_PORT (a few minutes)"
status=0
timeout 900 testssl --quiet --color 0 --warnings batch --add-ca "$WORK/ca.crt" \
    --jsonfile "$WORK/testssl.json" "https://127.0.0.1:$KG_PORT/" >"$WORK/testssl.log" 2>&1 || status=$?
# testssl's exit status counts findings of any severity; judge the findings instead.
((status < 240)) || die "testssl.sh failed (status $status); its output: $(tail -20 "$WORK/testssl.log")"

bad=$(jq -r '.[] | select(.severity == "HIGH" or .severity == "CRITICAL") | "\(.severity) \(.id): \(.finding)"' "$WORK/testssl.json")
not_ok=$(grep -i "NOT ok" "$WORK/testssl.log" || true)
printf 'testssl.sh %s\n' "$(testssl --version 2>/dev/null | grep -o 'testssl *[0-9.]*' | head -1)"
printf 'findings by severity:\n'
jq -r '.[].severity' "$WORK/testssl.json" | sort | uniq -c
printf 'protocols offered:\n'
jq -r '.[] | select(.id | test("^(SSLv2|SSLv3|TLS1|TLS1_1|TLS1_2|TLS1_3)$")) | "  \(.id): \(.finding)"' "$WORK/testssl.json"
printf 'HIGH or CRITICAL:\n%s\n' "${bad:-  none}"
printf '"NOT ok" lines:\n%s\n' "${not_ok:-  none}"
[[ -z $bad && -z $not_ok ]]
