//! Rate limits, quotas, usage and last_used_at, end to end: the real `keygate` binary on
//! free loopback ports (`listen.tls: none`, embedded store in a temp directory) in
//! front of a tiny upstream run by the test.
//!
//! Minute windows are real minutes: a test that needs one window waits, if the current
//! minute is nearly over, for the next one to start (at most ~20 s).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Usage reaches the store every 5 s; allow a few flushes.
const USAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Answers 200 to everything and counts what reached it.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"{\"ok\":true}"),
                        )))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream { addr, hits }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;
#[path = "common/clock.rs"]
mod clock;
use clock::{fresh_minute, left_in_minute};

/// A running `keygate serve`; killed on drop.
struct Keygate {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    data: SocketAddr,
    admin: SocketAddr,
    token: String,
    http: reqwest::Client,
}

impl Drop for Keygate {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn config_yaml(dir: &Path, data: u16, admin: u16, upstream: SocketAddr) -> String {
    format!(
        r#"
listen: {{ address: "127.0.0.1:{data}", tls: none }}
admin: {{ address: "127.0.0.1:{admin}", bootstrap_token_file: "{dir}/admin-token" }}
store: {{ backend: embedded, path: "{dir}/keygate.db", timeout: 2s }}
keys: {{ prefix: kg }}
rate_limit: {{ per_hour: 100000 }}
upstreams:
  feeds: {{ url: "http://{upstream}" }}
routes:
  - {{ name: list-feeds, methods: [GET], path: /v1/feeds, upstream: feeds, scope: read }}
  - {{ name: feed, methods: [GET], path: "/v1/feeds/{{feed_id}}", upstream: feeds, scope: read, resource: "feed:{{feed_id}}" }}
  - {{ name: refresh-feed, methods: [POST], path: "/v1/feeds/{{feed_id}}/refresh", upstream: feeds, scope: write, resource: "feed:{{feed_id}}" }}
"#,
        dir = dir.display()
    )
}

impl Keygate {
    async fn start(dir: &Path, upstream: SocketAddr) -> Keygate {
        keygate::app::install_crypto_provider();
        let (data, admin) = (free_port(), free_port());
        let config = dir.join("keygate.yaml");
        std::fs::write(&config, config_yaml(dir, data, admin, upstream)).unwrap();
        let mut kg = Keygate {
            child: None,
            dir: dir.to_path_buf(),
            config,
            log: dir.join("keygate.log"),
            data: format!("127.0.0.1:{data}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
            token: String::new(),
            http: client(),
        };
        kg.spawn().await;
        kg
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("keygate exited with {status}:\n{}", self.logs());
            }
            let ready = self
                .http
                .get(format!("http://{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.token = std::fs::read_to_string(self.dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
    }

    /// SIGTERM, wait for exit (bounded), start again on the same ports and data.
    async fn restart_gracefully(&mut self) {
        let mut child = self.child.take().unwrap();
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spawn().await;
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn admin_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Creates a key in `acme`: (id, secret).
    async fn key(&self, body: Value) -> (String, String) {
        let r = self
            .admin(reqwest::Method::POST, "/v1/orgs/acme/keys", Some(body))
            .await;
        (
            r["key"]["id"].as_str().unwrap().to_string(),
            r["secret"].as_str().unwrap().to_string(),
        )
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        secret: &str,
    ) -> Reply {
        let resp = client
            .request(method, format!("http://{}{path}", self.data))
            .bearer_auth(secret)
            .send()
            .await
            .unwrap();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap())
        };
        let reply = Reply {
            status: resp.status().as_u16(),
            limit: header("ratelimit-limit"),
            remaining: header("ratelimit-remaining"),
            reset: header("ratelimit-reset"),
            retry_after: header("retry-after"),
            code: String::new(),
        };
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Reply {
            code: body["error"]["code"].as_str().unwrap_or("").to_string(),
            ..reply
        }
    }

    async fn usage(&self, key_id: &str) -> Value {
        self.admin(
            reqwest::Method::GET,
            &format!("/v1/orgs/acme/keys/{key_id}/usage"),
            None,
        )
        .await
    }

    /// Polls usage until `totals.requests` reaches `want` (bounded).
    async fn usage_when(&self, key_id: &str, want: u64) -> Value {
        let deadline = tokio::time::Instant::now() + USAGE_TIMEOUT;
        loop {
            let u = self.usage(key_id).await;
            if u["totals"]["requests"].as_u64() == Some(want) {
                return u;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "usage of {key_id} did not reach {want} requests: {u}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn metric(&self, line_prefix: &str) -> u64 {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    }
}

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    code: String,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Seconds to the next UTC midnight.
fn to_midnight() -> u64 {
    let s = Timestamp::now().as_second().rem_euclid(86_400);
    (86_400 - s) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_limit_admits_exactly_n_and_refusals_consume_nothing() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let kg = Keygate::start(dir.path(), up.addr).await;
    kg.admin(
        reqwest::Method::POST,
        "/v1/orgs",
        Some(json!({ "id": "acme", "name": "Acme" })),
    )
    .await;
    const N: u64 = 20;
    let (id, secret) = kg
        .key(json!({ "name": "limited", "scopes": ["read"],
                     "rate_limit": { "per_minute": N } }))
        .await;
    fresh_minute(20.0).await;

    // 403s first: they carry the headers but consume nothing.
    let c = client();
    for _ in 0..5 {
        let r = kg
            .call(&c, reqwest::Method::POST, "/v1/feeds/f1/refresh", &secret)
            .await;
        assert_eq!((r.status, r.code.as_str()), (403, "insufficient_scope"));
        assert_eq!((r.limit, r.remaining), (Some(N), Some(N)), "{r:?}");
    }

    // 2N requests over four clients (their own connections), all at once.
    let kg = Arc::new(kg);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let kg = kg.clone();
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut replies = Vec::new();
            for _ in 0..(2 * N / 4) {
                replies.push(
                    kg.call(&c, reqwest::Method::GET, "/v1/feeds", &secret)
                        .await,
                );
            }
            replies
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.extend(t.await.unwrap());
    }
    let admitted: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted.len() as u64, N, "{replies:?}");
    assert_eq!(refused.len() as u64, N, "{replies:?}");
    assert_eq!(up.hits.load(Ordering::SeqCst), N);
    // Exact and atomic: each remaining count from N-1 down to 0 was handed out once.
    let mut remaining: Vec<u64> = admitted.iter().map(|r| r.remaining.unwrap()).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..N).collect::<Vec<_>>());
    let expected_reset = left_in_minute().ceil() as u64;
    for r in &refused {
        assert_eq!(r.code, "rate_limited");
        assert_eq!(r.limit, Some(N));
        assert_eq!(r.remaining, Some(0));
        assert_eq!(r.retry_after, r.reset, "{r:?}");
        let reset = r.reset.unwrap();
        assert!((1..=60).contains(&reset), "{r:?}");
        assert!(
            reset.abs_diff(expected_reset) <= 2,
            "{r:?} vs {expected_reset}"
        );
    }
    for r in &admitted {
        assert_eq!(r.limit, Some(N));
        assert!(r.reset.is_some_and(|s| (1..=60).contains(&s)));
    }
    // A 429 consumed nothing either: still full, and a 403 says so.
    let r = kg
        .call(&c, reqwest::Method::POST, "/v1/feeds/f1/refresh", &secret)
        .await;
    assert_eq!((r.status, r.remaining), (403, Some(0)));
    assert_eq!(
        kg.metric("keygate_rate_limited_total{kind=\"minute\",route=\"list-feeds\"}")
            .await,
        N
    );

    // Usage equals what was sent, once flushed.
    let total = 5 + 2 * N + 1;
    let u = kg.usage_when(&id, total).await;
    let t = &u["totals"];
    assert_eq!(t["successes"], N);
    assert_eq!(t["client_errors"], 6 + N);
    assert_eq!(t["upstream_errors"], 0);
    assert_eq!(t["rate_limited"], N);
    assert_eq!(t["denied"]["rate_limited"], N);
    assert_eq!(t["denied"]["insufficient_scope"], 6);
    let routes: Vec<(String, u64)> = u["top_routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route"].as_str().unwrap().into(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![("list-feeds".into(), 2 * N), ("refresh-feed".into(), 6)]
    );
    assert_eq!(u["top_resources"][0]["resource"], "feed:f1");
    assert_eq!(u["top_resources"][0]["requests"], 6);

    // CSV: a header row, then rows whose columns add up to the totals.
    let (status, csv) = kg
        .admin_text(&format!(
            "/v1/orgs/acme/keys/{id}/usage?format=csv&granularity=day"
        ))
        .await;
    assert_eq!(status, 200, "{csv}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "start",
            "end",
            "requests",
            "successes",
            "client_errors",
            "upstream_errors",
            "rate_limited",
            "denied"
        ]
    );
    let mut sums = [0u64; 6];
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), header.len(), "{line}");
        cols[0].parse::<Timestamp>().unwrap();
        cols[1].parse::<Timestamp>().unwrap();
        for (i, c) in cols[2..].iter().enumerate() {
            sums[i] += c.parse::<u64>().unwrap();
        }
    }
    assert_eq!(sums, [total, N, 6 + N, 0, N, 6 + N]);

    // last_used_at is set within the flush interval.
    let deadline = tokio::time::Instant::now() + USAGE_TIMEOUT;
    loop {
        let key = kg
            .admin(
                reqwest::Method::GET,
                &format!("/v1/orgs/acme/keys/{id}"),
                None,
            )
            .await;
        if let Some(t) = key["last_used_at"].as_str() {
            let t: Timestamp = t.parse().unwrap();
            assert!(Timestamp::now().duration_since(t).as_secs() < 30);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no last_used_at: {key}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_401s_and_usage_across_a_restart() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut kg = Keygate::start(dir.path(), up.addr).await;
    kg.admin(
        reqwest::Method::POST,
        "/v1/orgs",
        Some(json!({ "id": "acme", "name": "Acme", "rate_limit": { "per_minute": 3 } })),
    )
    .await;
    let c = client();

    // A day quota: quota_exceeded with Retry-After to UTC midnight.
    let (_, quota) = kg
        .key(json!({ "name": "quota", "scopes": ["read"], "rate_limit": { "per_day": 2 } }))
        .await;
    for _ in 0..2 {
        let r = kg.call(&c, reqwest::Method::GET, "/v1/feeds", &quota).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = kg.call(&c, reqwest::Method::GET, "/v1/feeds", &quota).await;
    assert_eq!((r.status, r.code.as_str()), (429, "quota_exceeded"));
    assert!(r.retry_after.unwrap().abs_diff(to_midnight()) <= 5, "{r:?}");
    assert_eq!(r.retry_after, r.reset);

    // The org's per_minute is each key's default. The old secret of a regenerated key,
    // past its grace, is refused with 401: no headers, no quota used.
    fresh_minute(25.0).await;
    let (id, old) = kg
        .key(json!({ "name": "org-limited", "scopes": ["read"] }))
        .await;
    let regen = kg
        .admin(
            reqwest::Method::POST,
            &format!("/v1/orgs/acme/keys/{id}/regenerate"),
            Some(json!({ "grace_seconds": 1 })),
        )
        .await;
    let new = regen["secret"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..5 {
        let r = kg.call(&c, reqwest::Method::GET, "/v1/feeds", &old).await;
        assert_eq!((r.status, r.code.as_str()), (401, "invalid_api_key"));
        assert_eq!((r.limit, r.remaining, r.reset), (None, None, None));
    }
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = kg
            .call(&c, reqwest::Method::GET, &format!("/v1/feeds/n{i}"), &new)
            .await;
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // Counted requests are written at shutdown, before the 5 s flush.
    kg.restart_gracefully().await;
    let u = kg.usage(&id).await;
    assert_eq!(u["totals"]["requests"], 10, "{u}");
    assert_eq!(u["totals"]["denied"]["invalid_api_key"], 5);
    assert_eq!(u["totals"]["rate_limited"], 2);
    assert_eq!(u["totals"]["successes"], 3);
    assert_eq!(u["top_resources"].as_array().unwrap().len(), 5);
}
