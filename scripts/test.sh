#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's: installs the Debian
# packages the tests need when they are missing (redis-server for the Redis store and
# replica tests, chromium + chromedriver for the web page test, prometheus for promtool,
# python3-yaml for the deploy checks), then runs every Rust test and the deploy/
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

echo "== deploy/check.sh"
KEYGATE="$PWD/target/debug/keygate" bash deploy/check.sh </dev/null
