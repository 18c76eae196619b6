#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's: installs the Debian
# packages the tests need when they are missing (redis-server for the Redis store and
# replica tests, chromium + chromedriver for the web page test, prometheus for promtool,
# python3-yaml for the deploy checks, nginx for the forward-auth test), then runs every Rust test and the deploy/
# checks. Non-interactive; safe with CI=true and no stdin.
set -euo pipefail

cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ] || missing+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# nginx for tests/forward_auth_nginx.rs (the shipped deploy/nginx/ config, run for
# real); Debian's `nginx` has the auth_request module. /usr/sbin is not on every PATH.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    as_root apt-get update -q </dev/null
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not on PATH" >&2
    exit 1
fi

echo "== cargo test --all-targets"
cargo test --all-targets </dev/null

# The binary `cargo test` just built, wherever cargo puts it (CARGO_TARGET_DIR, a
# build.target-dir setting, or target/).
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
keygate="$target_dir/debug/keygate"
if [ ! -x "$keygate" ]; then
    echo "no keygate binary at $keygate after cargo test" >&2
    exit 1
fi

echo "== deploy/check.sh"
KEYGATE="$keygate" bash deploy/check.sh </dev/null

# A check that cannot fail is no check: against a keygate that always exits 1, every
# step that runs keygate must fail, and so must the script.
echo "== deploy/check.sh against a keygate that always fails"
broken=$(mktemp -d)
trap 'rm -rf "$broken"' EXIT
printf '#!/bin/sh\nexit 1\n' >"$broken/keygate"
chmod +x "$broken/keygate"
if KEYGATE="$broken/keygate" bash deploy/check.sh >"$broken/out" 2>&1 </dev/null; then
    cat "$broken/out"
    echo "deploy/check.sh passed with a keygate that always exits 1" >&2
    exit 1
fi
if grep -E '^ok +check-config' "$broken/out"; then
    echo "these deploy/check.sh steps passed with a keygate that always exits 1" >&2
    exit 1
fi
failed_steps=$(grep -cE '^FAIL +check-config' "$broken/out" || true)
if [ "$failed_steps" -eq 0 ]; then
    cat "$broken/out"
    echo "deploy/check.sh ran no check-config step against the failing keygate" >&2
    exit 1
fi
echo "ok: all $failed_steps check-config steps fail against a failing keygate"
