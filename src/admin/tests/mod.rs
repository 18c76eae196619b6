//! Integration-style tests of the admin API: the real `router` served on
//! 127.0.0.1:0, called over HTTP with reqwest.
//!
//! The store is the TEST-ONLY [`memstore::MemStore`] until the embedded store lands.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::HeaderName;
use reqwest::Method;
use serde_json::{Value, json};

use super::{AdminContext, BootstrapOutcome, bootstrap, router};
use crate::auth::KeyResolver;
use crate::config::{
    AdminConfig, CacheConfig, Config, IdentityHeaders, KeysConfig, Limits, ListenConfig,
    ProxyProtocol, RouteConfig, StoreBackend, StoreConfig, TlsMode, UpstreamConfig,
};
use crate::key::{KeyFormat, RateLimit};
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

fn route(
    name: &str,
    method: Method,
    path: &str,
    scope: &str,
    resource: Option<&str>,
) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        methods: vec![method],
        path: path.into(),
        host: None,
        upstream: "feeds".into(),
        scope: scope.into(),
        resource: resource.map(str::to_string),
        query_key: false,
        environments: None,
        rate_limit: None,
    }
}

/// A config like SPEC §8's example: scopes read/write, resource types feed and flow.
pub fn test_config() -> Config {
    let upstream = UpstreamConfig {
        name: "feeds".into(),
        url: "http://127.0.0.1:1".parse().unwrap(),
        test_url: None,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(30),
        ca_file: None,
        client_cert: None,
        client_key: None,
        preserve_host: false,
    };
    Config {
        source: PathBuf::from("test.yaml"),
        listen: ListenConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            tls: TlsMode::None,
            proxy_protocol: ProxyProtocol::Off,
        },
        admin: AdminConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            bootstrap_token_file: PathBuf::from("data/admin-token"),
            tls: None,
            insecure: false,
        },
        metrics: None,
        store: StoreConfig {
            backend: StoreBackend::Embedded {
                path: PathBuf::from("data/keygate.db"),
            },
            timeout: Duration::from_millis(250),
        },
        cache: cache_config(),
        keys: KeysConfig {
            prefix: "mtf".into(),
        },
        trusted_proxies: vec![],
        identity_headers: IdentityHeaders {
            org: HeaderName::from_static("x-org-id"),
            key_id: HeaderName::from_static("x-api-key-id"),
            scopes: HeaderName::from_static("x-api-key-scopes"),
            environment: HeaderName::from_static("x-api-key-environment"),
        },
        scopes: BTreeMap::from([
            ("read".to_string(), vec![]),
            ("write".to_string(), vec!["read".to_string()]),
        ]),
        rate_limit: RateLimit::default(),
        limits: Limits {
            max_header_bytes: 16384,
            max_uri_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            max_body_bytes: 10 << 20,
            max_connections: 100,
            h2_max_concurrent_streams: 100,
            auth_failures_per_ip: 600,
        },
        upstreams: BTreeMap::from([("feeds".to_string(), upstream)]),
        routes: vec![
            route("list-feeds", Method::GET, "/v1/feeds", "read", None),
            route(
                "refresh-feed",
                Method::POST,
                "/v1/feeds/{feed_id}/refresh",
                "write",
                Some("feed:{feed_id}"),
            ),
            route(
                "execute-flow",
                Method::POST,
                "/flows/{flow_id}/execute",
                "write",
                Some("flow:{flow_id}"),
            ),
        ],
    }
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
    pub store: Arc<MemStore>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub key_format: KeyFormat,
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
    pub async fn start() -> Harness {
        let store = Arc::new(MemStore::default());
        let dir = tempfile::tempdir().unwrap();
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
        let store_dyn: Arc<dyn KeyStore> = store.clone();
        let resolver = Arc::new(KeyResolver::new(
            store_dyn.clone(),
            &cache_config(),
            metrics.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        let key_format = KeyFormat::new("mtf").unwrap();
        let ctx = Arc::new(AdminContext {
            store: store_dyn,
            resolver,
            metrics: metrics.clone(),
            key_format: key_format.clone(),
            config: Arc::new(test_config()),
            ready: ready.clone(),
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
            metrics,
            ready,
            key_format,
            owner,
            owner_id,
            _dir: dir,
            server,
        }
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
