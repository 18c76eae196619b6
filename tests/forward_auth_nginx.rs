//! keygate as the key check of a real nginx (SPEC §9, issue #14): the shipped
//! `deploy/nginx/` files, read from the repository with only their addresses replaced,
//! run by the system's nginx in front of the recording upstream, with keygate's authz
//! listener deciding. Through nginx a client must see what it would see through
//! keygate itself (status, code, the very same JSON body, `WWW-Authenticate`,
//! `Retry-After`, `RateLimit-*`), the upstream gets the identity headers and never the
//! key, and a refusal never reaches the upstream.
//!
//! nginx must be installed (`scripts/test.sh` installs the Debian package); without it
//! every test here fails, saying so.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clock::{fresh_minute, left_in_minute};
use common::ports::free_port;
use common::*;

/// How long nginx may take to accept connections.
const NGINX_READY: Duration = Duration::from_secs(10);

/// The system's nginx, run from a temporary prefix with the shipped config.
struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    client: reqwest::Client,
}

fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed, and these tests need a real nginx: run \
                 `bash scripts/test.sh` (it installs the Debian package nginx) or \
                 `apt-get install nginx`"
            )
        })
}

/// `text` with `from` (which must occur exactly once) replaced by `to`: a change to the
/// shipped files that moves an address fails here instead of testing something else.
fn replace_once(file: &str, text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx/{file} should contain {from:?} exactly once"
    );
    text.replacen(from, to, 1)
}

impl Nginx {
    /// Starts nginx with deploy/nginx/nginx.conf and its includes on a free loopback
    /// port, asking keygate at `authz` and forwarding to `upstream`.
    async fn start(authz: SocketAddr, upstream: SocketAddr) -> Nginx {
        let nginx = nginx_binary();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx");
        let read = |name: &str| {
            std::fs::read_to_string(shipped.join(name))
                .unwrap_or_else(|e| panic!("read deploy/nginx/{name}: {e}"))
        };
        let dir = tempfile::tempdir().expect("temp dir for nginx");
        let conf = dir.path().join("conf");
        let temp = dir.path().join("temp");
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(&temp).expect("temp dir");
        let port = free_port();

        let http = replace_once(
            "keygate-http.conf",
            &read("keygate-http.conf"),
            "server 127.0.0.1:8444 ",
            &format!("server {authz} "),
        );
        let mut main = read("nginx.conf");
        main = replace_once(
            "nginx.conf",
            &main,
            "worker_processes auto;",
            "worker_processes 1;",
        );
        main = replace_once(
            "nginx.conf",
            &main,
            "listen 8080;",
            &format!("listen 127.0.0.1:{port};"),
        );
        main = replace_once(
            "nginx.conf",
            &main,
            "server 127.0.0.1:8081;",
            &format!("server {upstream};"),
        );
        // Every path nginx writes, under the temporary prefix.
        let t = temp.display();
        main = replace_once(
            "nginx.conf",
            &main,
            "http {\n",
            &format!(
                "http {{\n    access_log {t}/access.log;\n    client_body_temp_path {t}/body;\n    \
                 proxy_temp_path {t}/proxy;\n    fastcgi_temp_path {t}/fastcgi;\n    \
                 uwsgi_temp_path {t}/uwsgi;\n    scgi_temp_path {t}/scgi;\n"
            ),
        );
        std::fs::write(conf.join("nginx.conf"), main).expect("write nginx.conf");
        std::fs::write(conf.join("keygate-http.conf"), http).expect("write keygate-http.conf");
        for name in ["keygate-authz.conf", "keygate-protect.conf"] {
            std::fs::write(conf.join(name), read(name)).expect("write include");
        }

        // As root, nginx's workers would run as `nobody`, which cannot write under a
        // root-owned temporary directory.
        let as_root = std::fs::metadata(dir.path()).expect("stat").uid() == 0;
        let globals = format!(
            "daemon off; pid {}/nginx.pid;{}",
            dir.path().display(),
            if as_root { " user root;" } else { "" }
        );
        let error_log = dir.path().join("error.log");
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(conf.join("nginx.conf"))
            .arg("-g")
            .arg(&globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let check = Command::new(&nginx)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(conf.join("nginx.conf"))
            .arg("-g")
            .arg(&globals)
            .output()
            .expect("run nginx -t");
        assert!(
            check.status.success(),
            "nginx -t refuses the shipped config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = cmd.spawn().expect("spawn nginx");
        let client = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let mut ngx = Nginx {
            child: Some(child),
            dir,
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            client,
        };
        ngx.wait_ready().await;
        ngx
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + NGINX_READY;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nginx exited at start with {status}: {}", self.error_log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not accept on {} within {NGINX_READY:?}: {}",
                self.addr,
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            format!("http://{}{path}", self.addr),
        )
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let r = rb.send().await.unwrap_or_else(|e| {
            panic!(
                "request to nginx failed: {e}; error log: {}",
                self.error_log()
            )
        });
        Reply::from_reqwest(r).await
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let mut rb = self.request(method, path);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }
}

impl Drop for Nginx {
    /// SIGTERM (nginx's fast shutdown: the master stops its workers, then exits; a
    /// SIGKILL would leave the workers running), then SIGKILL after 5 s.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// keygate with its authz listener, the recording upstreams, and nginx in front.
async fn start() -> (Env, Nginx) {
    start_with(|b| b).await
}

async fn start_with(f: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> (Env, Nginx) {
    let env = Env::start_with(|b| f(b.authz(Some(&["127.0.0.0/8"])))).await;
    let authz = env.gw.authz.expect("the gateway has an authz listener");
    let ngx = Nginx::start(authz, env.up.addr).await;
    (env, ngx)
}

/// The refusal headers a client sees, compared between nginx and keygate itself.
const REFUSAL_HEADERS: [&str; 6] = [
    "content-type",
    "www-authenticate",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// Asserts that `via` (through nginx) is the refusal `direct` (keygate's data plane):
/// same status, the very same body, and the same refusal headers.
fn assert_same_refusal(what: &str, via: &Reply, direct: &Reply) {
    assert_eq!(
        via.status, direct.status,
        "{what}: status through nginx {via:?}, through keygate {direct:?}"
    );
    assert_eq!(
        via.text(),
        direct.text(),
        "{what}: body through nginx and through keygate"
    );
    for h in REFUSAL_HEADERS {
        let (v, d) = (via.header_all(h), direct.header_all(h));
        // Remaining/Reset may move by a second between the two calls.
        if h == "ratelimit-reset" || h == "retry-after" {
            assert_eq!(
                v.len(),
                d.len(),
                "{what}: {h} through nginx {v:?}, keygate {d:?}"
            );
            continue;
        }
        assert_eq!(v, d, "{what}: {h} through nginx and through keygate");
    }
    assert_eq!(
        via.header("cache-control").as_deref(),
        Some("no-store"),
        "{what}: a refusal through nginx is not cacheable"
    );
    assert!(
        via.header_all("x-keygate-body").is_empty()
            && via.header_all("x-keygate-status").is_empty(),
        "{what}: keygate's answer to nginx is not shown to the client: {:?}",
        via.headers
    );
}

#[tokio::test]
async fn allowed_requests_reach_the_upstream_with_identity_headers_and_without_the_key() {
    let (env, ngx) = start().await;
    let key = env.read_key().await;
    let r = ngx
        .send(
            ngx.request("GET", "/v1/feeds?x=1&y=%20z")
                .bearer_auth(&key.secret)
                // Identity headers a client sends are replaced, whatever their spelling.
                .header("X-Org-Id", "evil")
                .header("x-api-key-id", "key_evil")
                .header("X-Api-Key-Scopes", "admin")
                .header("X_Org_Id", "evil")
                .header("X-Request-Id", "client-chosen-id-1"),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.text(), r#"{"ok":true,"upstream":"live"}"#);
    let seen = env.up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1/feeds?x=1&y=%20z");
    assert_eq!(seen.header_one("x-org-id"), ORG);
    assert_eq!(seen.header_one("x-api-key-id"), key.id);
    assert_eq!(seen.header_one("x-api-key-scopes"), "read");
    assert_eq!(seen.header_one("x-api-key-environment"), "live");
    assert!(
        !seen.has_header("x_org_id"),
        "a client's X_Org_Id reached the upstream: {seen:?}"
    );
    assert!(
        !seen.has_header("authorization"),
        "the upstream saw Authorization: {seen:?}"
    );
    assert!(
        seen.headers
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains(&key.secret)),
        "the key reached the upstream: {seen:?}"
    );
    // One request id, the client's valid one, for the upstream and in the answer.
    assert_eq!(seen.header_one("x-request-id"), "client-chosen-id-1");
    assert_eq!(r.header_all("x-request-id"), vec!["client-chosen-id-1"]);
    assert_eq!(seen.header_one("x-forwarded-for"), "127.0.0.1");

    // What keygate's own data plane forwards for the same call: the same identity.
    env.clear();
    env.gw
        .get("/v1/feeds?x=1&y=%20z", Some(&key.secret))
        .await
        .assert_status(200);
    let direct = env.up.last();
    for h in [
        "x-org-id",
        "x-api-key-id",
        "x-api-key-scopes",
        "x-api-key-environment",
    ] {
        assert_eq!(seen.header_one(h), direct.header_one(h), "{h}");
    }
    assert_eq!(seen.target, direct.target);
}

#[tokio::test]
async fn a_query_key_is_checked_and_never_reaches_the_upstream() {
    let (env, ngx) = start().await;
    let key = env.write_key().await;
    for (query, forwarded) in [
        ("x=1&api_key={}&y=2", "x=1&y=2"),
        ("api_key={}&y=2", "y=2"),
        ("x=1&api_key={}", "x=1"),
    ] {
        env.clear();
        let q = query.replace("{}", &key.secret);
        ngx.call("POST", &format!("/flows/abc/execute?{q}"), None)
            .await
            .assert_status(200);
        let seen = env.up.last();
        assert_eq!(
            seen.target,
            format!("/flows/abc/execute?{forwarded}"),
            "{q}"
        );
        assert_eq!(seen.header_one("x-api-key-id"), key.id);
    }
    env.clear();
    ngx.call(
        "POST",
        &format!("/flows/abc/execute?api_key={}", key.secret),
        None,
    )
    .await
    .assert_status(200);
    assert_eq!(env.up.last().target, "/flows/abc/execute");
    // On a route without query_key, ?api_key= is a refusal, as through keygate.
    env.clear();
    let path = format!("/v1/feeds?api_key={}", key.secret);
    let via = ngx.call("GET", &path, None).await;
    via.assert_refusal(401, "invalid_api_key");
    assert!(!via.text().contains(&key.secret));
    env.assert_nothing_forwarded();
}

/// One refusal: what it is, method, path, token, status, code.
type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, u16, &'a str);

#[tokio::test]
async fn refusals_through_nginx_are_keygates_own() {
    let (env, ngx) = start().await;
    let read = env.read_key().await;
    let test_key = env
        .key(json!({ "scopes": ["read"], "environment": "test" }))
        .await;
    let feed_only = env
        .key(json!({ "scopes": ["write"], "resources": ["feed:f1"] }))
        .await;
    let endpoint_only = env
        .key(json!({ "scopes": ["read"], "endpoints": ["list-feeds"] }))
        .await;
    let unknown = unknown_token("kg", "live");
    let bad = bad_checksum(&read.secret);

    let cases: Vec<Case> = vec![
        ("no key", "GET", "/v1/feeds", None, 401, "missing_api_key"),
        (
            "bad shape",
            "GET",
            "/v1/feeds",
            Some("nonsense"),
            401,
            "invalid_api_key",
        ),
        (
            "bad checksum",
            "GET",
            "/v1/feeds",
            Some(&bad),
            401,
            "invalid_api_key",
        ),
        (
            "unknown key",
            "GET",
            "/v1/feeds",
            Some(&unknown),
            401,
            "invalid_api_key",
        ),
        (
            "read key on a write route",
            "POST",
            "/v1/feeds/f1/refresh",
            Some(&read.secret),
            403,
            "insufficient_scope",
        ),
        (
            "test key without test_url",
            "GET",
            "/v1/feeds",
            Some(&test_key.secret),
            403,
            "environment_not_allowed",
        ),
        (
            "other resource",
            "POST",
            "/v1/feeds/f2/refresh",
            Some(&feed_only.secret),
            403,
            "resource_not_allowed",
        ),
        (
            "other endpoint",
            "GET",
            "/echo/x",
            Some(&endpoint_only.secret),
            403,
            "endpoint_not_allowed",
        ),
        (
            "no route",
            "GET",
            "/nowhere",
            Some(&read.secret),
            404,
            "no_route",
        ),
        (
            "no route for the method",
            "DELETE",
            "/v1/feeds",
            Some(&read.secret),
            404,
            "no_route",
        ),
        (
            "empty segment",
            "GET",
            "/echo//x",
            Some(&read.secret),
            400,
            "bad_request",
        ),
        (
            "needless encoding",
            "GET",
            "/echo/%61dmin",
            Some(&read.secret),
            400,
            "bad_request",
        ),
    ];
    for (what, method, path, token, status, code) in cases {
        let via = ngx.call(method, path, token).await;
        via.assert_refusal(status, code);
        let direct = env.gw.call(method, path, token).await;
        direct.assert_refusal(status, code);
        assert_same_refusal(what, &via, &direct);
        if code == "insufficient_scope" {
            assert_eq!(
                via.header("www-authenticate").as_deref(),
                Some(r#"Bearer realm="keygate", error="insufficient_scope", scope="write""#)
            );
        }
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn a_revoke_is_effective_on_the_very_next_request() {
    let (env, ngx) = start().await;
    let key = env.read_key().await;
    ngx.call("GET", "/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw.revoke_key(ORG, &key.id).await;
    env.clear();
    let via = ngx.call("GET", "/v1/feeds", Some(&key.secret)).await;
    via.assert_refusal(401, "revoked_api_key");
    let direct = env.gw.get("/v1/feeds", Some(&key.secret)).await;
    assert_same_refusal("revoked", &via, &direct);
    env.assert_nothing_forwarded();

    // Deleted: 401 invalid_api_key at once as well.
    let other = env.read_key().await;
    ngx.call("GET", "/v1/feeds", Some(&other.secret))
        .await
        .assert_status(200);
    env.gw.delete_key(ORG, &other.id).await;
    env.clear();
    ngx.call("GET", "/v1/feeds", Some(&other.secret))
        .await
        .assert_refusal(401, "invalid_api_key");
    env.assert_nothing_forwarded();
}

/// Seconds left in the current UTC minute.
#[tokio::test]
async fn a_minute_limit_admits_exactly_n_through_nginx_then_429() {
    const N: u64 = 5;
    let (env, ngx) = start().await;
    let key = env
        .key(json!({ "scopes": ["read"], "rate_limit": { "per_minute": N } }))
        .await;
    // The whole test inside one UTC minute.
    fresh_minute(15.0).await;

    // A 403 carries the limit's headers and consumes nothing.
    let r = ngx
        .call("POST", "/v1/feeds/f1/refresh", Some(&key.secret))
        .await;
    r.assert_refusal(403, "insufficient_scope");
    assert_eq!(r.header("ratelimit-limit"), Some(N.to_string()));
    assert_eq!(r.header("ratelimit-remaining"), Some(N.to_string()));

    for i in 1..=N {
        let r = ngx.call("GET", "/v1/feeds", Some(&key.secret)).await;
        r.assert_status(200);
        assert_eq!(r.header_all("ratelimit-limit"), vec![N.to_string()]);
        assert_eq!(
            r.header_all("ratelimit-remaining"),
            vec![(N - i).to_string()]
        );
        let reset: u64 = r
            .header("ratelimit-reset")
            .expect("RateLimit-Reset")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&reset), "RateLimit-Reset {reset}");
    }
    assert_eq!(env.up.count() as u64, N);
    env.clear();

    for _ in 0..3 {
        let via = ngx.call("GET", "/v1/feeds", Some(&key.secret)).await;
        via.assert_refusal(429, "rate_limited");
        assert_eq!(via.header("ratelimit-limit"), Some(N.to_string()));
        assert_eq!(via.header("ratelimit-remaining"), Some("0".to_string()));
        let retry: u64 = via
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        let reset: u64 = via
            .header("ratelimit-reset")
            .expect("RateLimit-Reset")
            .parse()
            .expect("seconds");
        assert_eq!(retry, reset, "{via:?}");
        assert!((1..=60).contains(&retry), "{via:?}");
        let expected = left_in_minute().ceil() as u64;
        assert!(
            retry.abs_diff(expected) <= 2,
            "Retry-After {retry}, minute ends in {expected}"
        );
        // Refusals consume nothing, so keygate itself answers the same refusal.
        let direct = env.gw.get("/v1/feeds", Some(&key.secret)).await;
        assert_same_refusal("rate limited", &via, &direct);
    }
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn a_second_limit_is_exact_through_nginx() {
    const N: u64 = 3;
    let (env, ngx) = start().await;
    let key = env
        .key(json!({ "scopes": ["read"], "rate_limit": { "per_second": N } }))
        .await;
    // Bounded: a burst that crosses a second boundary is retried, at most 5 times.
    for attempt in 0..5 {
        // Start early in a second, so N + 2 quick calls stay inside it.
        let ms = jiff::Timestamp::now().as_millisecond().rem_euclid(1000);
        tokio::time::sleep(Duration::from_millis((1000 - ms) as u64 + 10)).await;
        let second = jiff::Timestamp::now().as_second();
        let mut statuses = Vec::new();
        for _ in 0..N + 2 {
            statuses.push(ngx.call("GET", "/v1/feeds", Some(&key.secret)).await);
        }
        if jiff::Timestamp::now().as_second() != second {
            assert!(
                attempt < 4,
                "no burst of {} calls fitted in one second",
                N + 2
            );
            continue;
        }
        let codes: Vec<u16> = statuses.iter().map(|r| r.status).collect();
        let mut want = vec![200; N as usize];
        want.extend([429, 429]);
        assert_eq!(codes, want);
        for r in &statuses[N as usize..] {
            r.assert_refusal(429, "rate_limited");
            assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        }
        break;
    }
}

#[tokio::test]
async fn a_client_cannot_describe_its_own_request_to_keygate() {
    let (env, ngx) = start().await;
    let elsewhere = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["10.0.0.0/8"] }))
        .await;
    let here = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["127.0.0.1/32"] }))
        .await;

    // The client address is nginx's peer: a client's X-Forwarded-For (one line or
    // several) neither admits nor refuses.
    for xff in [
        vec!["10.1.2.3"],
        vec!["127.0.0.1", "10.1.2.3"],
        vec!["10.0.0.1, 10.1.2.3"],
    ] {
        let mut rb = ngx
            .request("GET", "/v1/feeds")
            .bearer_auth(&elsewhere.secret);
        for v in &xff {
            rb = rb.header("X-Forwarded-For", *v);
        }
        ngx.send(rb).await.assert_refusal(403, "ip_not_allowed");

        let mut rb = ngx.request("GET", "/v1/feeds").bearer_auth(&here.secret);
        for v in &xff {
            rb = rb.header("X-Forwarded-For", *v);
        }
        ngx.send(rb).await.assert_status(200);
        let seen = env.up.last();
        assert_eq!(seen.header_one("x-forwarded-for"), "127.0.0.1");
        env.clear();
    }
    let r = ngx
        .send(
            ngx.request("GET", "/v1/feeds")
                .bearer_auth(&elsewhere.secret)
                .header("X-Real-IP", "10.1.2.3")
                .header("Forwarded", "for=10.1.2.3"),
        )
        .await;
    r.assert_refusal(403, "ip_not_allowed");

    // Nor does a client's description of method or URI change what is checked: a read
    // key's POST to a write route stays a POST to that route.
    let read = env.read_key().await;
    let r = ngx
        .send(
            ngx.request("POST", "/v1/feeds/f1/refresh")
                .bearer_auth(&read.secret)
                .header("X-Original-Method", "GET")
                .header("X-Forwarded-Method", "GET")
                .header("X-Original-URI", "/v1/feeds")
                .header("X-Forwarded-Uri", "/v1/feeds")
                .header("X-Forwarded-Host", "elsewhere.example"),
        )
        .await;
    r.assert_refusal(403, "insufficient_scope");
    let r = ngx
        .send(
            ngx.request("GET", "/nowhere")
                .bearer_auth(&read.secret)
                .header("X-Original-URI", "/v1/feeds")
                .header("X-Forwarded-Uri", "/v1/feeds"),
        )
        .await;
    r.assert_refusal(404, "no_route");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn bodies_pass_only_after_authorization() {
    let (env, ngx) = start().await;
    let key = env.read_key().await;
    let body = vec![b'k'; 300_000];
    let r = ngx
        .send(
            ngx.request("POST", "/echo/upload")
                .bearer_auth(&key.secret)
                .body(body.clone()),
        )
        .await;
    r.assert_status(200);
    let seen = env.up.last();
    assert!(seen.body_complete);
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(seen.header_one("x-org-id"), ORG);

    env.clear();
    ngx.send(ngx.request("POST", "/echo/upload").body(body))
        .await
        .assert_refusal(401, "missing_api_key");
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn keygate_down_is_503_auth_unavailable_never_a_pass() {
    let (mut env, ngx) = start().await;
    let key = env.read_key().await;
    ngx.call("GET", "/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw.kill9();
    env.clear();
    let r = ngx.call("GET", "/v1/feeds", Some(&key.secret)).await;
    r.assert_refusal(503, "auth_unavailable");
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    env.assert_nothing_forwarded();
}

#[tokio::test]
async fn guessing_through_nginx_is_429_for_the_client_address() {
    const LIMIT: usize = 4;
    let (env, ngx) = start_with(|b| b.limit("auth_failures_per_ip", LIMIT)).await;
    let good = env.read_key().await;
    ngx.call("GET", "/v1/feeds", Some(&good.secret))
        .await
        .assert_status(200);
    // The failures of one run inside one UTC minute.
    let second_of_minute = jiff::Timestamp::now().as_second().rem_euclid(60);
    if second_of_minute >= 57 {
        tokio::time::sleep(Duration::from_secs((61 - second_of_minute) as u64)).await;
    }
    let mut replies = Vec::new();
    for _ in 0..LIMIT + 3 {
        replies.push(
            ngx.call("GET", "/v1/feeds", Some(&unknown_token("kg", "live")))
                .await,
        );
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .unwrap_or_else(|| panic!("no 429 through nginx: {statuses:?}"));
    assert!(
        (LIMIT..=LIMIT + 1).contains(&first_429),
        "429 from failure {LIMIT}+1 on: {statuses:?}"
    );
    for r in &replies[..first_429] {
        r.assert_refusal(401, "invalid_api_key");
    }
    for r in &replies[first_429..] {
        r.assert_refusal(429, "too_many_auth_failures");
    }
    // The client address keygate counted is nginx's peer, 127.0.0.1, which is also the
    // address of a direct call: keygate itself refuses it the same way.
    let direct = env
        .gw
        .get("/v1/feeds", Some(&unknown_token("kg", "live")))
        .await;
    assert_same_refusal("guessing", &replies[first_429], &direct);
    // A key already in use from that address keeps working.
    ngx.call("GET", "/v1/feeds", Some(&good.secret))
        .await
        .assert_status(200);
    assert_eq!(env.up.count(), 2, "only the good requests were forwarded");
}

#[tokio::test]
async fn keygates_uri_and_header_limits_hold_through_nginx() {
    let (env, ngx) = start_with(|b| {
        b.limit("max_uri_bytes", 2048)
            .limit("max_header_bytes", 6144)
    })
    .await;
    let key = env.read_key().await;

    // Long but within the limits: allowed, and the upstream gets the URI as sent.
    let long = format!("/echo/{}?q={}", "a".repeat(1000), "b".repeat(900));
    ngx.call("GET", &long, Some(&key.secret))
        .await
        .assert_status(200);
    assert_eq!(env.up.last().target, long);
    env.clear();

    let too_long = format!("/echo/{}", "a".repeat(2100));
    let via = ngx.call("GET", &too_long, Some(&key.secret)).await;
    via.assert_refusal(414, "uri_too_long");
    let direct = env.gw.get(&too_long, Some(&key.secret)).await;
    assert_same_refusal("URI too long", &via, &direct);

    let big = "x".repeat(7000);
    let via = ngx
        .send(
            ngx.request("GET", "/v1/feeds")
                .bearer_auth(&key.secret)
                .header("X-Big", &big),
        )
        .await;
    via.assert_refusal(431, "headers_too_large");
    let direct = env
        .gw
        .send(
            env.gw
                .request("GET", "/v1/feeds")
                .bearer_auth(&key.secret)
                .header("X-Big", &big),
        )
        .await;
    assert_same_refusal("headers too large", &via, &direct);
    env.assert_nothing_forwarded();
}
