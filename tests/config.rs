//! The config contract of SPEC §8: every shipped file loads, defaults are the
//! documented ones, and every bad value is refused with its field and line.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use keygate::config::{self, Config, ConfigError, ProxyProtocol, StoreBackend, TlsMode};
use keygate::key::Environment;

/// A small valid config that the cases below bend one field at a time.
const BASE: &str = r#"listen:
  tls: none
upstreams:
  feeds: { url: "http://127.0.0.1:8081" }
  flows:
    url: https://flows.internal
    test_url: https://flows-sandbox.internal
routes:
  - { name: list-feeds, methods: [GET], path: /v1/feeds, upstream: feeds, scope: read }
  - name: execute-flow
    methods: [post]
    path: /flows/{flow_id}/execute
    upstream: flows
    scope: write
    resource: "flow:{flow_id}"
"#;

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    config::parse("test.yaml", yaml)
}

/// 1-based line of the first line containing `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{yaml}"))
}

/// Asserts that `yaml` is refused, first of all for `field` on the line holding
/// `needle`, with a message containing `part`.
#[track_caller]
fn refused(yaml: &str, field: &str, needle: &str, part: &str) {
    let e = match parse(yaml) {
        Ok(_) => panic!("accepted, expected {field}: {part}\n{yaml}"),
        Err(e) => e,
    };
    let want_line = line_of(yaml, needle);
    let found = e
        .all()
        .find(|x| x.field == field)
        .unwrap_or_else(|| panic!("no error for {field}; got:\n{e}"));
    assert_eq!(found.line, want_line, "line of {field}; got:\n{e}");
    assert!(
        found.message.contains(part),
        "message for {field} lacks {part:?}; got:\n{e}"
    );
    assert_eq!(found.file, "test.yaml");
    assert!(
        e.to_string()
            .contains(&format!("test.yaml:{want_line}: {field}: ")),
        "display: {e}"
    );
}

fn with_top(top: &str) -> String {
    format!("{top}\n{BASE}")
}

fn with_route(route: &str) -> String {
    format!("{BASE}{route}\n")
}

#[test]
fn every_file_in_config_dir_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            // Relative paths in the files are relative to the working directory,
            // which cargo sets to the crate root.
            let c = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            if let Err(conflict) = keygate::policy::routes::RouteTable::new(&c.routes) {
                let field = format!("routes[{}].path", conflict.index);
                panic!("{}", c.error_at(&field, conflict.message));
            }
            count += 1;
        }
    }
    assert!(count >= 2, "expected keygate.yaml and example-full.yaml");
}

#[test]
fn quickstart_is_what_the_readme_promises() {
    let c =
        config::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.yaml")).unwrap();
    assert_eq!(c.listen.tls, TlsMode::SelfSigned);
    assert_eq!(
        c.listen.address,
        "127.0.0.1:8443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        c.admin.address,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert!(matches!(c.store.backend, StoreBackend::Embedded { .. }));
    let demo = &c.upstreams["demo"];
    assert_eq!(demo.url.to_string(), "http://127.0.0.1:8081/");
    assert!(demo.test_url.is_some());
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    for n in ["list-feeds", "refresh-feed", "execute-flow", "flow-runs"] {
        assert!(names.contains(&n), "{n} missing");
    }
    let exec = c.routes.iter().find(|r| r.name == "execute-flow").unwrap();
    assert!(exec.query_key);
    assert_eq!(exec.resource.as_deref(), Some("flow:{flow_id}"));
}

#[test]
fn defaults_are_those_of_the_spec() {
    let c = parse("listen: { tls: none }\n").unwrap();
    assert_eq!(c.source, Path::new("test.yaml"));
    assert_eq!(
        c.listen.address,
        "0.0.0.0:8443".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.listen.tls, TlsMode::None);
    assert_eq!(c.listen.proxy_protocol, ProxyProtocol::Off);
    assert_eq!(
        c.admin.address,
        "127.0.0.1:9090".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.admin.bootstrap_token_file, Path::new("data/admin-token"));
    assert_eq!(c.admin.tls, None);
    assert!(!c.admin.insecure);
    assert!(c.metrics.is_none());
    assert_eq!(
        c.store.backend,
        StoreBackend::Embedded {
            path: "data/keygate.db".into()
        }
    );
    assert_eq!(c.store.timeout, Duration::from_millis(250));
    assert_eq!(c.cache.ttl, Duration::from_secs(30));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(5));
    assert_eq!(c.cache.max_entries, 1_000_000);
    assert_eq!(c.cache.max_staleness, Duration::from_secs(60));
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(300));
    assert_eq!(c.keys.prefix, "kg");
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.identity_headers.org.as_str(), "x-org-id");
    assert_eq!(c.identity_headers.key_id.as_str(), "x-api-key-id");
    assert_eq!(c.identity_headers.scopes.as_str(), "x-api-key-scopes");
    assert_eq!(
        c.identity_headers.environment.as_str(),
        "x-api-key-environment"
    );
    assert_eq!(c.scopes["read"], Vec::<String>::new());
    assert_eq!(c.scopes["write"], vec!["read".to_string()]);
    assert_eq!(c.scopes.len(), 2);
    assert_eq!(c.rate_limit, Default::default());
    let l = &c.limits;
    assert_eq!(l.max_header_bytes, 16384);
    assert_eq!(l.max_uri_bytes, 8192);
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(l.max_body_bytes, 10_485_760);
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.h2_max_concurrent_streams, 100);
    assert_eq!(l.auth_failures_per_ip, 600);
    assert!(c.upstreams.is_empty());
    assert!(c.routes.is_empty());
}

#[test]
fn route_and_upstream_values_are_normalised() {
    let c = parse(&with_route(
        r#"  - { name: r, methods: [get, Head], path: "/a/{id}/", host: API.Example.COM, upstream: feeds, scope: read, environments: [live] }"#,
    ))
    .unwrap();
    let feeds = &c.upstreams["feeds"];
    assert_eq!(feeds.name, "feeds");
    assert_eq!(feeds.connect_timeout, Duration::from_secs(2));
    assert_eq!(feeds.timeout, Duration::from_secs(30));
    assert!(!feeds.preserve_host);
    let exec = &c.routes[1];
    assert_eq!(exec.methods, vec![http::Method::POST]);
    assert!(!exec.query_key);
    assert_eq!(exec.environments, None);
    let r = &c.routes[2];
    assert_eq!(r.methods, vec![http::Method::GET, http::Method::HEAD]);
    assert_eq!(r.host.as_deref(), Some("api.example.com"));
    assert_eq!(r.path, "/a/{id}/");
    assert_eq!(r.environments, Some(vec![Environment::Live]));
}

#[test]
fn durations_take_units() {
    for (text, want) in [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("1h 30m", Duration::from_secs(5400)),
    ] {
        let c = parse(&with_top(&format!(
            "store: {{ timeout: {text} }}\ncache: {{ stale_if_error: 2h }}"
        )))
        .unwrap();
        assert_eq!(c.store.timeout, want, "{text}");
    }
    let yaml = with_top("store:\n  timeout: 30");
    refused(&yaml, "store.timeout", "timeout: 30", "has no unit");
    let yaml = with_top("store:\n  timeout: soon");
    refused(&yaml, "store.timeout", "timeout: soon", "not a duration");
    let yaml = with_top("store:\n  timeout: 0s");
    refused(&yaml, "store.timeout", "timeout: 0s", "longer than 0");
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let yaml = with_top("listne:\n  address: 1.2.3.4:5");
    refused(&yaml, "listne", "listne:", "unknown field");
    let yaml = BASE.replace("    scope: write\n", "    scoep: write\n");
    let e = parse(&yaml).unwrap_err();
    // Either the unknown field or the missing one is reported first; both are
    // fine as long as the unknown field is named where it is.
    assert!(
        e.field == "routes[1].scoep" || e.field == "routes[1].scope",
        "{e}"
    );
    if e.field == "routes[1].scoep" {
        assert_eq!(e.line, line_of(&yaml, "scoep"));
        assert!(e.message.contains("unknown field `scoep`"), "{e}");
        assert!(e.message.contains("expected one of"), "{e}");
    }
    let yaml = with_top("cache: { ttl: 1s, tll: 2s }");
    refused(&yaml, "cache.tll", "tll", "unknown field");
    let yaml = BASE.replace(
        "tls: none",
        "tls: { cert: a.pem, key: b.pem, chain: c.pem }",
    );
    refused(&yaml, "listen.tls.chain", "chain", "unknown field");
}

#[test]
fn syntax_and_type_errors_carry_lines() {
    let yaml = format!("{BASE}limits:\n  max_connections: many\n");
    refused(&yaml, "limits.max_connections", "many", "invalid type");
    let yaml = "listen:\n  tls: none\nroutes: [\n  { name: a\n";
    let e = parse(yaml).unwrap_err();
    assert!(e.message.starts_with("YAML syntax error"), "{e}");
    assert!(e.line >= 3, "{e}");
    assert!(!e.message.contains(" at line "), "{e}");
    let yaml = format!("{BASE}routes: []\n");
    let e = parse(&yaml).unwrap_err();
    assert!(e.message.contains("twice"), "{e}");
    assert_eq!(e.field, "routes");
    assert_eq!(e.line, line_of(&yaml, "routes: []"), "{e}");
}

#[test]
fn missing_required_fields_are_named() {
    refused(
        "listen:\n  address: 127.0.0.1:8443\n",
        "listen.tls",
        "listen:",
        "is required",
    );
    let e = parse("").unwrap_err();
    assert_eq!((e.field.as_str(), e.line), ("listen.tls", 1), "{e}");
    let e = parse("# just a comment\n").unwrap_err();
    assert_eq!(e.field, "listen.tls", "{e}");
    let yaml = with_route("  - { name: r, methods: [GET], path: /r, upstream: feeds }");
    refused(&yaml, "routes[2].scope", "name: r,", "is required");
    let yaml =
        with_top("upstreams:\n  x: { timeout: 1s }").replace("upstreams:\n  feeds", "  feeds");
    refused(&yaml, "upstreams.x.url", "x: {", "is required");
    let yaml = BASE.replace("tls: none", "tls: { cert: a.pem }");
    refused(&yaml, "listen.tls.key", "tls:", "is required");
}

#[test]
fn listen_admin_and_store_are_checked() {
    let b = |from: &str, to: &str| BASE.replace(from, to);
    refused(
        &b("tls: none", "tls: maybe"),
        "listen.tls",
        "tls:",
        "self_signed",
    );
    refused(&b("tls: none", "tls:"), "listen.tls", "tls:", "self_signed");
    refused(
        &b(
            "tls: none",
            "tls: { cert: /nonexistent/c.pem, key: /nonexistent/k.pem }",
        ),
        "listen.tls.cert",
        "tls:",
        "cannot read /nonexistent/c.pem: no such file",
    );
    refused(
        &b("tls: none", "tls: none\n  address: localhost:8443"),
        "listen.address",
        "localhost",
        "127.0.0.1",
    );
    refused(
        &b("tls: none", "tls: none\n  proxy_protocol: v3"),
        "listen.proxy_protocol",
        "v3",
        "off, v1 or v2",
    );
    for (pp, want) in [
        ("off", ProxyProtocol::Off),
        ("v1", ProxyProtocol::V1),
        ("v2", ProxyProtocol::V2),
    ] {
        let c = parse(&b(
            "tls: none",
            &format!("tls: none\n  proxy_protocol: {pp}"),
        ))
        .unwrap();
        assert_eq!(c.listen.proxy_protocol, want);
    }

    let yaml = with_top("admin:\n  address: 0.0.0.0:9090");
    refused(
        &yaml,
        "admin.address",
        "0.0.0.0:9090",
        "admin.insecure: true",
    );
    let yaml = with_top("admin:\n  address: 0.0.0.0:9090\n  tls: none");
    refused(&yaml, "admin.tls", "tls: none", "plain HTTP");
    parse(&with_top(
        "admin: { address: 0.0.0.0:9090, insecure: true }",
    ))
    .unwrap();
    parse(&with_top(
        "admin: { address: 0.0.0.0:9090, tls: self_signed }",
    ))
    .unwrap();
    parse(&with_top("admin: { address: \"[::1]:9090\" }")).unwrap();
    let yaml = with_top("admin:\n  address: 127.0.0.1:8443\nmetrics: { address: 127.0.0.1:9091 }");
    refused(
        &yaml,
        "admin.address",
        "8443",
        "same port as listen.address",
    );

    let yaml = with_top("store:\n  backend: redis");
    refused(
        &yaml,
        "store.url",
        "store:",
        "is required for backend: redis",
    );
    let yaml = with_top("store:\n  backend: redis\n  url: http://:secret@127.0.0.1:6379");
    refused(&yaml, "store.url", "url:", "redis://");
    let e = parse(&yaml).unwrap_err();
    assert!(
        !e.to_string().contains("secret"),
        "a Redis URL may hold a password: {e}"
    );
    let yaml = with_top("store:\n  backend: redis\n  url: redis://127.0.0.1:6379/0\n  path: x.db");
    refused(&yaml, "store.path", "path: x.db", "backend: embedded");
    let yaml = with_top("store:\n  url: redis://127.0.0.1:6379/0");
    refused(&yaml, "store.url", "url:", "backend: redis");
    let yaml = with_top("store:\n  backend: postgres");
    refused(&yaml, "store.backend", "postgres", "embedded or redis");
    let c = parse(&with_top(
        "store: { backend: redis, url: \"rediss://:pw@redis.internal:6380/1\" }",
    ))
    .unwrap();
    assert_eq!(
        c.store.backend,
        StoreBackend::Redis {
            url: "rediss://:pw@redis.internal:6380/1".into()
        }
    );
}

#[test]
fn cache_order_is_enforced() {
    let yaml = with_top("cache:\n  ttl: 2m");
    refused(
        &yaml,
        "cache.ttl",
        "ttl: 2m",
        "ttl ≤ max_staleness ≤ stale_if_error",
    );
    let yaml = with_top("cache:\n  ttl: 10s\n  max_staleness: 5s");
    refused(
        &yaml,
        "cache.ttl",
        "ttl: 10s",
        "longer than max_staleness 5s",
    );
    let yaml = with_top("cache:\n  max_staleness: 10s\n  ttl: 5s\n  stale_if_error: 9s");
    refused(
        &yaml,
        "cache.stale_if_error",
        "stale_if_error",
        "longer than stale_if_error 9s",
    );
    let yaml = with_top("cache:\n  max_staleness: 10m");
    refused(
        &yaml,
        "cache.max_staleness",
        "max_staleness",
        "stale_if_error 5m",
    );
    let yaml = with_top("cache:\n  max_entries: 0");
    refused(&yaml, "cache.max_entries", "max_entries", "greater than 0");
    let c = parse(&with_top(
        "cache: { ttl: 1m, max_staleness: 1m, stale_if_error: 1m }",
    ))
    .unwrap();
    assert_eq!(c.cache.ttl, c.cache.stale_if_error);
}

#[test]
fn keys_proxies_headers_scopes_and_limits_are_checked() {
    refused(
        &with_top("keys:\n  prefix: MTF"),
        "keys.prefix",
        "MTF",
        "lowercase",
    );
    let c = parse(&with_top("keys: { prefix: mtf }")).unwrap();
    assert_eq!(c.keys.prefix, "mtf");

    refused(
        &with_top("trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.0/33"),
        "trusted_proxies[1]",
        "/33",
        "not a CIDR",
    );
    refused(
        &with_top("trusted_proxies: [lb.internal]"),
        "trusted_proxies[0]",
        "lb.internal",
        "not an IP",
    );
    let c = parse(&with_top(
        "trusted_proxies: [10.1.2.3, \"::1\", 192.168.0.0/16]",
    ))
    .unwrap();
    let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.1.2.3/32", "::1/128", "192.168.0.0/16"]);

    let h = |v: &str| with_top(&format!("identity_headers:\n  org: {v}"));
    refused(
        &h("\"X Org\""),
        "identity_headers.org",
        "org:",
        "not a valid header name",
    );
    refused(&h("Host"), "identity_headers.org", "org:", "manages");
    refused(
        &h("authorization"),
        "identity_headers.org",
        "org:",
        "manages",
    );
    refused(&h("Connection"), "identity_headers.org", "org:", "manages");
    refused(
        &h("Transfer-Encoding"),
        "identity_headers.org",
        "org:",
        "manages",
    );
    refused(
        &h("X-Api-Key-Id"),
        "identity_headers.org",
        "org:",
        "identity_headers.key_id",
    );
    let yaml = with_top("identity_headers:\n  org: X-Org\n  scopes: x_org");
    refused(
        &yaml,
        "identity_headers.scopes",
        "scopes: x_org",
        "identity_headers.org",
    );
    let c = parse(&h("X-Tenant")).unwrap();
    assert_eq!(c.identity_headers.org.as_str(), "x-tenant");

    let yaml = with_top("scopes:\n  read: []\n  write: [read]\n  admin: [write, root]");
    refused(&yaml, "scopes.admin[1]", "admin:", "unknown scope \"root\"");
    let yaml = with_top("scopes:\n  read: []\n  write: [read]\n  \"bad scope\": []");
    refused(&yaml, "scopes.bad scope", "bad scope", "scope name");

    refused(
        &with_top("rate_limit:\n  per_minute: 0"),
        "rate_limit.per_minute",
        "per_minute",
        "greater than 0",
    );
    refused(
        &with_top("rate_limit:\n  per_week: 5"),
        "rate_limit.per_week",
        "per_week",
        "unknown field",
    );
    let c = parse(&with_top(
        "rate_limit: { per_minute: 600, per_day: 100000 }",
    ))
    .unwrap();
    assert_eq!(c.rate_limit.per_minute, Some(600));
    assert_eq!(c.rate_limit.per_day, Some(100_000));

    let l = |v: &str| with_top(&format!("limits:\n  {v}"));
    refused(
        &l("max_header_bytes: 100"),
        "limits.max_header_bytes",
        "max_header_bytes",
        "at least 1024",
    );
    refused(
        &l("max_uri_bytes: 10"),
        "limits.max_uri_bytes",
        "max_uri_bytes",
        "256",
    );
    refused(
        &l("max_body_bytes: 0"),
        "limits.max_body_bytes",
        "max_body_bytes",
        "at least 1",
    );
    refused(
        &l("max_connections: 0"),
        "limits.max_connections",
        "max_connections",
        "at least 1",
    );
    refused(
        &l("h2_max_concurrent_streams: 0"),
        "limits.h2_max_concurrent_streams",
        "h2_max",
        "at least 1",
    );
    refused(
        &l("idle_timeout: 0ms"),
        "limits.idle_timeout",
        "idle_timeout",
        "longer than 0",
    );
    refused(
        &l("header_read_timeout: 0s"),
        "limits.header_read_timeout",
        "header_read",
        "longer than 0",
    );
    refused(
        &l("tls_handshake_timeout: 0s"),
        "limits.tls_handshake_timeout",
        "tls_handshake",
        "longer than 0",
    );
    refused(
        &l("auth_failures_per_ip: -1"),
        "limits.auth_failures_per_ip",
        "auth_failures",
        "invalid",
    );
    let c = parse(&l("auth_failures_per_ip: 0")).unwrap();
    assert_eq!(c.limits.auth_failures_per_ip, 0);
}

#[test]
fn upstreams_are_checked() {
    let u = |v: &str| BASE.replace("url: \"http://127.0.0.1:8081\"", v);
    let field = "upstreams.feeds.url";
    refused(
        &u("url: ftp://files.internal"),
        field,
        "feeds:",
        "http:// or https://",
    );
    refused(
        &u("url: http://feeds.internal/api"),
        field,
        "feeds:",
        "has a path (/api)",
    );
    refused(
        &u("url: \"http://feeds.internal/?a=1\""),
        field,
        "feeds:",
        "query",
    );
    refused(
        &u("url: http://user:pw@feeds.internal"),
        field,
        "feeds:",
        "user info",
    );
    refused(&u("url: \"not a url\""), field, "feeds:", "not a URL");
    refused(
        &u("url: feeds.internal:8080"),
        field,
        "feeds:",
        "http:// or https://",
    );
    let c = parse(&u("url: \"https://feeds.internal:8443/\"")).unwrap();
    assert_eq!(c.upstreams["feeds"].url.port_u16(), Some(8443));

    let yaml = BASE.replace(
        "test_url: https://flows-sandbox.internal",
        "test_url: https://flows-sandbox.internal/v1",
    );
    refused(&yaml, "upstreams.flows.test_url", "test_url", "has a path");
    let t = |extra: &str| BASE.replace("    test_url:", &format!("    {extra}\n    test_url:"));
    refused(
        &t("connect_timeout: 0s"),
        "upstreams.flows.connect_timeout",
        "connect_timeout",
        "longer than 0",
    );
    refused(
        &t("timeout: 0s"),
        "upstreams.flows.timeout",
        "timeout: 0s",
        "longer than 0",
    );
    refused(
        &t("ca_file: /nonexistent/ca.pem"),
        "upstreams.flows.ca_file",
        "ca_file",
        "no such file",
    );
    refused(
        &t("ca_file: /"),
        "upstreams.flows.ca_file",
        "ca_file",
        "is a directory",
    );

    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.crt");
    let key = dir.path().join("client.key");
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let (cert, key) = (cert.display(), key.display());
    refused(
        &t(&format!("client_cert: {cert}")),
        "upstreams.flows.client_cert",
        "client_cert",
        "needs client_key",
    );
    refused(
        &t(&format!("client_key: {key}")),
        "upstreams.flows.client_key",
        "client_key",
        "needs client_cert",
    );
    let c = parse(&t(&format!(
        "client_cert: {cert}\n    client_key: {key}\n    ca_file: {cert}\n    preserve_host: true"
    )))
    .unwrap();
    let flows = &c.upstreams["flows"];
    assert!(flows.client_cert.is_some() && flows.client_key.is_some() && flows.ca_file.is_some());
    assert!(flows.preserve_host);

    let yaml = BASE
        .replace("  feeds: {", "  \"feeds v2\": {")
        .replace("upstream: feeds", "upstream: flows");
    refused(&yaml, "upstreams.feeds v2", "feeds v2", "upstream name");
}

#[test]
fn routes_are_checked() {
    // The comment marks the line of the new route.
    let r = |route: &str| with_route(&format!("  - {{ {route} }} # new"));
    let ok = "methods: [GET], path: /r, upstream: feeds, scope: read";
    parse(&r(&format!("name: r, {ok}"))).unwrap();

    refused(
        &r(&format!("name: \"\", {ok}")),
        "routes[2].name",
        "# new",
        "empty",
    );
    refused(
        &r(&format!("name: list-feeds, {ok}")),
        "routes[2].name",
        "# new",
        "already the name of routes[0]",
    );
    refused(
        &r(&format!("name: \"a b\", {ok}")),
        "routes[2].name",
        "# new",
        "route name",
    );

    let m = |methods: &str| {
        r(&format!(
            "name: r, methods: {methods}, path: /r, upstream: feeds, scope: read"
        ))
    };
    refused(
        &m("[]"),
        "routes[2].methods",
        "# new",
        "at least one method",
    );
    refused(
        &m("[\"GE T\"]"),
        "routes[2].methods[0]",
        "# new",
        "not an HTTP method",
    );
    refused(
        &m("[GET, get]"),
        "routes[2].methods[1]",
        "# new",
        "listed twice",
    );

    let p = |path: &str| {
        r(&format!(
            "name: r, methods: [GET], path: \"{path}\", upstream: feeds, scope: read"
        ))
    };
    refused(
        &p("v1/feeds"),
        "routes[2].path",
        "# new",
        "must start with /",
    );
    refused(&p("/a/{id}x"), "routes[2].path", "# new", "whole segment");
    refused(&p("/a/x{id}"), "routes[2].path", "# new", "whole segment");
    refused(
        &p("/a/{*rest}/b"),
        "routes[2].path",
        "# new",
        "last segment",
    );
    refused(
        &p("/a/{id}/{id}"),
        "routes[2].path",
        "# new",
        "appears twice",
    );
    refused(&p("/a/{1d}"), "routes[2].path", "# new", "parameter name");
    refused(&p("/a//b"), "routes[2].path", "# new", "empty segment");
    refused(&p("/a/../b"), "routes[2].path", "# new", "dot segment");
    refused(&p("/a?b=1"), "routes[2].path", "# new", "query");
    refused(&p("/a b"), "routes[2].path", "# new", "' '");
    refused(&p("/a%2Fb"), "routes[2].path", "# new", "%2F is refused");
    refused(&p("/a%zz"), "routes[2].path", "# new", "escape");
    for good in [
        "/",
        "/a/",
        "/a/{id}",
        "/a/{*rest}",
        "/{x}/{y}/{*z}",
        "/v1/a:b@c",
    ] {
        parse(&p(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
    }

    // The example of the brief, and the listing of known names.
    let yaml = r("name: r, methods: [GET], path: /r, upstream: flow, scope: read");
    refused(
        &yaml,
        "routes[2].upstream",
        "# new",
        "unknown upstream \"flow\"; known: feeds, flows",
    );
    let e = parse(&yaml).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "test.yaml:{}: routes[2].upstream: unknown upstream \"flow\"; known: feeds, flows",
            line_of(&yaml, "upstream: flow,")
        )
    );
    refused(
        &r("name: r, methods: [GET], path: /r, upstream: feeds, scope: admin"),
        "routes[2].scope",
        "# new",
        "unknown scope \"admin\"; known: read, write",
    );

    let res = |path: &str, resource: &str| {
        r(&format!(
            "name: r, methods: [GET], path: \"{path}\", upstream: feeds, scope: read, resource: \"{resource}\""
        ))
    };
    refused(
        &res("/f/{id}", "feed:{other}"),
        "routes[2].resource",
        "# new",
        "path has {id}",
    );
    refused(
        &res("/f", "feed:{id}"),
        "routes[2].resource",
        "# new",
        "no parameters",
    );
    refused(
        &res("/f/{id}", "feed"),
        "routes[2].resource",
        "# new",
        "TYPE:ID",
    );
    refused(
        &res("/f/{id}", ":{id}"),
        "routes[2].resource",
        "# new",
        "type before ':'",
    );
    refused(
        &res("/f/{id}", "feed:"),
        "routes[2].resource",
        "# new",
        "nothing after ':'",
    );
    refused(
        &res("/f/{id}", "feed:*"),
        "routes[2].resource",
        "# new",
        "'*'",
    );
    refused(
        &res("/f/{id}", "feed:{id"),
        "routes[2].resource",
        "# new",
        "without '}'",
    );
    for good in [
        ("/f/{id}", "feed:{id}"),
        ("/o/{org}/f/{id}", "feed:{org}-{id}"),
        ("/s", "app:settings"),
        ("/x/{*rest}", "file:{rest}"),
    ] {
        parse(&res(good.0, good.1)).unwrap_or_else(|e| panic!("{good:?}: {e}"));
    }

    let env = |envs: &str, up: &str| {
        r(&format!(
            "name: r, methods: [GET], path: /r, upstream: {up}, scope: read, environments: {envs}"
        ))
    };
    refused(
        &env("[]", "feeds"),
        "routes[2].environments",
        "# new",
        "is empty",
    );
    refused(
        &env("[prod]", "feeds"),
        "routes[2].environments[0]",
        "# new",
        "live or test",
    );
    refused(
        &env("[live, live]", "feeds"),
        "routes[2].environments[1]",
        "# new",
        "listed twice",
    );
    refused(
        &env("[test]", "feeds"),
        "routes[2].environments",
        "# new",
        "no test_url",
    );
    let c = parse(&env("[test]", "flows")).unwrap();
    assert_eq!(c.routes[2].environments, Some(vec![Environment::Test]));

    let host = |h: &str| {
        r(&format!(
            "name: r, methods: [GET], path: /r, host: \"{h}\", upstream: feeds, scope: read"
        ))
    };
    refused(
        &host("api.example.com:8443"),
        "routes[2].host",
        "# new",
        "without a port",
    );
    refused(
        &host("api..example.com"),
        "routes[2].host",
        "# new",
        "not a host name",
    );
    refused(
        &host("[::1]:8443"),
        "routes[2].host",
        "# new",
        "without a port",
    );
    assert_eq!(
        parse(&host("[::1]")).unwrap().routes[2].host.as_deref(),
        Some("[::1]")
    );

    refused(
        &r(
            "name: r, methods: [GET], path: /r, upstream: feeds, scope: read, rate_limit: { per_second: 0 }",
        ),
        "routes[2].rate_limit.per_second",
        "# new",
        "greater than 0",
    );
}

#[test]
fn block_style_routes_point_at_the_right_line() {
    let yaml = BASE.replace("    upstream: flows\n", "    upstream: flow\n");
    refused(
        &yaml,
        "routes[1].upstream",
        "upstream: flow",
        "unknown upstream",
    );
    let yaml = BASE.replace(
        "    resource: \"flow:{flow_id}\"",
        "    resource: \"flow:{id}\"",
    );
    refused(&yaml, "routes[1].resource", "resource:", "{flow_id}");
}

#[test]
fn all_problems_are_listed_in_file_order() {
    let yaml = BASE
        .replace("tls: none", "tls: none\n  proxy_protocol: v9")
        .replace("    scope: write\n", "    scope: writ\n")
        .replace("path: /v1/feeds", "path: v1/feeds");
    let e = parse(&yaml).unwrap_err();
    let fields: Vec<&str> = e.all().map(|x| x.field.as_str()).collect();
    assert_eq!(
        fields,
        ["listen.proxy_protocol", "routes[0].path", "routes[1].scope"],
        "{e}"
    );
    let lines: Vec<usize> = e.all().map(|x| x.line).collect();
    assert!(lines.is_sorted(), "{e}");
    assert_eq!(e.to_string().lines().count(), 3, "{e}");
}

/// Each case: a file, and every problem it must report in one run, in file order, as
/// (field, text on the problem's line, part of the message).
#[test]
fn every_problem_is_reported_at_once_on_the_line_of_the_mistake() {
    type Case = (String, Vec<(&'static str, &'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        // Several unknown fields in several sections, one run.
        (
            BASE.replace(
                "tls: none",
                "tls: none
  adress: 0.0.0.0:1",
            )
            .replace(
                "  flows:
",
                "  flows:
    timout: 1s
",
            ) + "cache: { tll: 5s }
limts: {}
",
            vec![
                ("listen.adress", "adress", "unknown field `adress`"),
                ("upstreams.flows.timout", "timout", "expected one of"),
                ("cache.tll", "tll", "`ttl`"),
                ("limts", "limts", "`limits`"),
            ],
        ),
        // An unknown field and a type error elsewhere: both.
        (
            format!(
                "{BASE}limits:
  max_connections: many
  max_conections: 5
"
            ),
            vec![
                ("limits.max_connections", "many", "invalid type"),
                ("limits.max_conections", "max_conections", "unknown field"),
            ],
        ),
        // A route's field indented out of its item, to the top level: reported where
        // it was written, not where the item starts.
        (
            BASE.replace("    scope: write\n", "") + "scope: write\n",
            vec![("routes[1].scope", "scope: write", "check its indentation")],
        ),
        // A stray `-` makes the field a new item.
        (
            BASE.replace("    path: /flows/{flow_id}/execute\n", "")
                + "  - path: /flows/{flow_id}/execute\n",
            vec![("routes[1].path", "- path:", "starts a new item")],
        ),
        // Indented under a key that ends the list: a YAML syntax error on that line,
        // not a missing field on the item's first line.
        (
            BASE.replace("    path: /flows/{flow_id}/execute\n", "")
                + "  path: /flows/{flow_id}/execute\n",
            vec![("", "  path: /flows", "check the indentation")],
        ),
        (
            BASE.replace("    scope: write\n", "    scope: write\n      path: /x\n"),
            vec![("", "      path: /x", "YAML syntax error")],
        ),
    ];
    for (yaml, want) in cases {
        let e = match parse(&yaml) {
            Ok(_) => panic!("accepted:\n{yaml}"),
            Err(e) => e,
        };
        let got: Vec<(&str, usize)> = e.all().map(|x| (x.field.as_str(), x.line)).collect();
        let expected: Vec<(&str, usize)> = want
            .iter()
            .map(|(field, needle, _)| (*field, line_of(&yaml, needle)))
            .collect();
        assert_eq!(got, expected, "{e}\n---\n{yaml}");
        for (x, (_, _, part)) in e.all().zip(&want) {
            assert!(x.message.contains(part), "{part:?} not in {x}");
        }
        assert_eq!(e.to_string().lines().count(), want.len(), "{e}");
    }
}

#[test]
fn error_at_reports_file_and_line_for_later_checks() {
    let c = parse(BASE).unwrap();
    let e = c.error_at("routes[1].path", "conflicts with routes[0]");
    assert_eq!(e.line, line_of(BASE, "path: /flows"));
    assert_eq!(
        e.to_string(),
        format!(
            "test.yaml:{}: routes[1].path: conflicts with routes[0]",
            e.line
        )
    );
    assert_eq!(
        c.error_at("upstreams.flows.test_url", "x").line,
        line_of(BASE, "test_url")
    );
    // A field that was left to its default points at its parent.
    assert_eq!(c.error_at("listen.address", "x").line, 1);
}

#[test]
fn load_reports_unreadable_files() {
    let e = config::load("/nonexistent/keygate.yaml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/keygate.yaml: cannot read the config file: no such file"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(&path, BASE).unwrap();
    let c = config::load(&path).unwrap();
    assert_eq!(c.source, path);
}
