//! Integration-style tests of the admin API: the real `router` served on
//! 127.0.0.1:0, called over HTTP with reqwest.
//!
//! The store is the embedded one (redb, in a temp directory); the TEST-ONLY
//! [`memstore::MemStore`] serves the tests that need a store outage.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{AdminContext, BootstrapOutcome, bootstrap, router};
use crate::auth::KeyResolver;
use crate::config::{CacheConfig, Config};
use crate::key::{AuditEvent, KeyFormat};
use crate::metrics::Metrics;
use crate::store::KeyStore;

mod basics;
mod keys;
mod memstore;
mod orgs;
mod principals;
mod roles;

pub use memstore::MemStore;

pub fn cache_config() -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1000,
        max_staleness: Duration::from_secs(60),
        stale_if_error: Duration::from_secs(300),
    }
}

/// A config like SPEC §8's example: scopes read/write, resource types feed and flow.
const TEST_CONFIG: &str = r#"
listen: { address: "127.0.0.1:0", tls: none }
admin: { address: "127.0.0.1:0" }
store: { backend: embedded, path: data/keygate.db }
keys: { prefix: mtf }
upstreams:
  feeds: { url: "http://127.0.0.1:8081" }
  flows: { url: "http://127.0.0.1:8082" }
routes:
  - { name: list-feeds,   methods: [GET],  path: /v1/feeds,                     upstream: feeds, scope: read }
  - { name: refresh-feed, methods: [POST], path: "/v1/feeds/{feed_id}/refresh", upstream: feeds, scope: write, resource: "feed:{feed_id}" }
  - { name: execute-flow, methods: [POST], path: "/flows/{flow_id}/execute",    upstream: flows, scope: write, resource: "flow:{flow_id}" }
"#;

pub fn test_config() -> Config {
    crate::config::parse("admin-test.yaml", TEST_CONFIG).unwrap()
}

/// A response: status, headers, body as JSON (or `Value::String` when not JSON).
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    /// `error.field` of a 422.
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
}

/// A running admin API with a bootstrapped owner.
pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn KeyStore>,
    /// Set when the store is the in-memory one (`start_mem`).
    pub mem: Option<Arc<MemStore>>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub key_format: KeyFormat,
    /// The data plane's view of keys: what the next request would see.
    pub resolver: Arc<KeyResolver>,
    /// The bootstrap owner's token, read from the bootstrap file.
    pub owner: String,
    pub owner_id: String,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Harness {
    /// With the embedded store, in a temp directory.
    pub async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(crate::store::EmbeddedStore::open(&dir.path().join("keygate.db")).unwrap());
        Harness::start_with(store, None, dir).await
    }

    /// With the TEST-ONLY in-memory store, whose outages a test can switch on.
    pub async fn start_mem() -> Harness {
        let mem = Arc::new(MemStore::default());
        Harness::start_with(mem.clone(), Some(mem), tempfile::tempdir().unwrap()).await
    }

    async fn start_with(
        store: Arc<dyn KeyStore>,
        mem: Option<Arc<MemStore>>,
        dir: tempfile::TempDir,
    ) -> Harness {
        let token_file = dir.path().join("data/admin-token");
        let owner_id = match bootstrap(store.as_ref(), &token_file).await.unwrap() {
            BootstrapOutcome::Created { principal_id, .. } => principal_id,
            other => panic!("{other:?}"),
        };
        let owner = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string();
        let metrics = Arc::new(Metrics::new());
        let resolver = Arc::new(KeyResolver::new(
            store.clone(),
            Arc::new(crate::store::LocalBus),
            &cache_config(),
            Duration::from_millis(250),
            metrics.clone(),
        ));
        tokio::spawn(resolver.clone().listen());
        let ready = Arc::new(AtomicBool::new(false));
        let key_format = KeyFormat::new("mtf").unwrap();
        let ctx = Arc::new(AdminContext {
            store: store.clone(),
            resolver: resolver.clone(),
            metrics: metrics.clone(),
            key_format: key_format.clone(),
            config: Arc::new(test_config()),
            ready: ready.clone(),
            verifier: Arc::new(NoDataPlane),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(ctx);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Harness {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
            mem,
            metrics,
            ready,
            key_format,
            resolver,
            owner,
            owner_id,
            _dir: dir,
            server,
        }
    }

    /// Every audit event of every org (events without an org are not listable).
    pub async fn all_audit(&self) -> Vec<AuditEvent> {
        let mut all = Vec::new();
        for org in self.store.list_orgs().await.unwrap() {
            let mut after: Option<String> = None;
            for _ in 0..1000 {
                let page = self
                    .store
                    .list_audit(&org.id, after.as_deref(), 200)
                    .await
                    .unwrap();
                all.extend(page.items);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        all
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("admin API answered in time")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
        self.raw(method, path, Some(token), body.map(|b| b.to_string()), &[])
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Creates an org as the owner.
    pub async fn org(&self, id: &str, extra: Value) -> Value {
        let mut body = json!({ "id": id, "name": format!("Org {id}") });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self.post("/v1/orgs", &self.owner, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body
    }

    /// Creates a principal as the owner: (id, token).
    pub async fn principal(&self, role: &str, orgs: Value, api_access: bool) -> (String, String) {
        let r = self
            .post(
                "/v1/principals",
                &self.owner,
                json!({ "name": format!("{role} p"), "role": role, "orgs": orgs,
                        "api_access": api_access }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        (
            r.body["principal"]["id"].as_str().unwrap().to_string(),
            r.body["token"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a key in `org` with `token`: (key view, secret).
    pub async fn key(&self, org: &str, token: &str, body: Value) -> (Value, String) {
        let r = self
            .post(&format!("/v1/orgs/{org}/keys"), token, body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        (
            r.body["key"].clone(),
            r.body["secret"].as_str().unwrap().to_string(),
        )
    }

    /// A plain read key in `org`, made by the owner.
    pub async fn read_key(&self, org: &str) -> (Value, String) {
        self.key(org, &self.owner, json!({ "name": "k", "scopes": ["read"] }))
            .await
    }

    pub fn invalidations(&self) -> u64 {
        self.metrics.invalidations.get()
    }
}

/// The admin API's tests run without a data plane: the verify API answers that it has
/// none (tests/authz.rs tests it through the real binary).
struct NoDataPlane;

#[async_trait::async_trait]
impl crate::authz::Verifier for NoDataPlane {
    async fn verify(
        &self,
        _req: crate::authz::VerifyRequest,
        _orgs: Option<&[String]>,
    ) -> Result<crate::authz::VerifyAnswer, crate::authz::verify::InvalidField> {
        Err(crate::authz::verify::InvalidField {
            field: "key",
            message: "no data plane in the admin API's unit tests".into(),
        })
    }
}
