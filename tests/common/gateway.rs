//! The real `keygate` binary, started from a generated config on free loopback ports,
//! with its admin API, clients for its data port, and stop/kill/restart for the
//! persistence tests. The child process is killed when the `Gateway` is dropped.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::ports::free_port;
use super::raw::RawConn;
use super::reply::Reply;
use super::upstream::RecordingUpstream;

/// How long keygate may take to become ready before a test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A key created through the admin API.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
    /// The `key` object of the create response.
    pub record: Value,
}

/// A config (SPEC §8) built from defaults that look like the SPEC's example, changed
/// by tests before `start`. Addresses and file paths are filled in at start.
pub struct GatewayBuilder {
    config: Value,
    /// Extra environment of the child process (fault-injection switches).
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// Defaults: self-signed TLS, embedded store, short timeouts, two upstreams
    /// (`feeds` without a `test_url`, `flows` with `sandbox` as its `test_url`) and
    /// the SPEC's routes plus `/echo/{*rest}` (feeds, read) and `/sandbox/{*rest}`
    /// (flows, read).
    pub fn new(up: &RecordingUpstream, sandbox: &RecordingUpstream) -> Self {
        let config = json!({
            "listen": { "tls": "self_signed" },
            "store": { "backend": "embedded", "timeout": "1s" },
            "keys": { "prefix": "kg" },
            "trusted_proxies": [],
            "scopes": { "read": [], "write": ["read"] },
            "limits": {
                "header_read_timeout": "3s",
                "idle_timeout": "10s",
                "tls_handshake_timeout": "3s"
            },
            "upstreams": {
                "feeds": { "url": up.url(), "connect_timeout": "1s", "timeout": "5s" },
                "flows": {
                    "url": up.url(),
                    "test_url": sandbox.url(),
                    "connect_timeout": "1s",
                    "timeout": "5s"
                }
            },
            "routes": [
                { "name": "list-feeds", "methods": ["GET"], "path": "/v1/feeds",
                  "upstream": "feeds", "scope": "read" },
                { "name": "refresh-feed", "methods": ["POST"], "path": "/v1/feeds/{feed_id}/refresh",
                  "upstream": "feeds", "scope": "write", "resource": "feed:{feed_id}" },
                { "name": "execute-flow", "methods": ["POST"], "path": "/flows/{flow_id}/execute",
                  "upstream": "flows", "scope": "write", "resource": "flow:{flow_id}",
                  "query_key": true },
                { "name": "flow-runs", "methods": ["GET"], "path": "/flows/{flow_id}/executions",
                  "upstream": "flows", "scope": "read", "resource": "flow:{flow_id}",
                  "environments": ["live"] },
                { "name": "echo", "methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
                  "path": "/echo/{*rest}", "upstream": "feeds", "scope": "read" },
                { "name": "sandbox", "methods": ["GET", "POST"], "path": "/sandbox/{*rest}",
                  "upstream": "flows", "scope": "read" }
            ]
        });
        GatewayBuilder {
            config,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable of the keygate process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Any change to the config tree.
    pub fn with(mut self, f: impl FnOnce(&mut Value)) -> Self {
        f(&mut self.config);
        self
    }

    /// `listen.tls: none` (plain HTTP).
    pub fn plain(self) -> Self {
        self.with(|c| c["listen"]["tls"] = json!("none"))
    }

    pub fn limit(self, name: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        self.with(|c| c["limits"][name] = value)
    }

    pub fn trusted_proxies(self, cidrs: &[&str]) -> Self {
        let v = json!(cidrs);
        self.with(|c| c["trusted_proxies"] = v)
    }

    pub fn upstream(self, name: &str, value: Value) -> Self {
        self.with(|c| c["upstreams"][name] = value)
    }

    pub fn route(self, value: Value) -> Self {
        self.with(|c| {
            c["routes"]
                .as_array_mut()
                .expect("routes is a list")
                .push(value)
        })
    }

    /// Replaces all routes.
    pub fn routes(self, value: Value) -> Self {
        self.with(|c| c["routes"] = value)
    }

    /// The authz listener (SPEC §9) on a free port, with `allow_from` when given (else
    /// keygate's default, loopback); its address is [`Gateway::authz`].
    pub fn authz(self, allow_from: Option<&[&str]>) -> Self {
        let mut a = json!({});
        if let Some(list) = allow_from {
            a["allow_from"] = json!(list);
        }
        self.with(|c| c["authz"] = a)
    }

    /// The YAML a start would write, with paths under `dir` and some free ports.
    pub fn yaml(&self, dir: &Path) -> String {
        let config = render(&self.config, dir, free_port(), free_port(), free_port());
        serde_yaml::to_string(&config).expect("config to YAML")
    }

    pub async fn start(self) -> Gateway {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir for keygate"));
        Gateway::launch(dir, self.config, self.env).await
    }
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

pub struct Gateway {
    dir: Arc<tempfile::TempDir>,
    /// The config without addresses and paths, kept for restarts.
    template: Value,
    /// Extra environment of every start.
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The authz listener, when the builder asked for one ([`GatewayBuilder::authz`]).
    pub authz: Option<SocketAddr>,
    pub tls: bool,
    pub admin_token: String,
    /// Log files of every start, oldest first.
    logs: Vec<PathBuf>,
    /// The config file of the running start.
    config_path: PathBuf,
    client: reqwest::Client,
    client_h1: reqwest::Client,
    admin_client: reqwest::Client,
}

/// Makes the YAML for one start: template plus addresses and paths under `dir`.
fn render(template: &Value, dir: &Path, listen: u16, admin: u16, authz: u16) -> Value {
    let mut c = template.clone();
    if c.get("authz").is_some() {
        c["authz"]["address"] = json!(format!("127.0.0.1:{authz}"));
    }
    c["listen"]["address"] = json!(format!("127.0.0.1:{listen}"));
    let admin_obj = c["admin"].as_object().cloned().unwrap_or_default();
    c["admin"] = Value::Object(admin_obj);
    c["admin"]["address"] = json!(format!("127.0.0.1:{admin}"));
    if c["admin"].get("bootstrap_token_file").is_none() {
        c["admin"]["bootstrap_token_file"] = json!(dir.join("admin-token"));
    }
    if c["store"]["backend"] == "embedded" && c["store"].get("path").is_none() {
        c["store"]["path"] = json!(dir.join("keygate.db"));
    }
    c
}

pub fn insecure_client(h1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_danger_accept_invalid_certs(true)
        .tls_info(true)
        .timeout(Duration::from_secs(20));
    if h1_only {
        b = b.http1_only();
    }
    b.build().expect("reqwest client")
}

impl Gateway {
    async fn launch(
        dir: Arc<tempfile::TempDir>,
        template: Value,
        env: Vec<(String, String)>,
    ) -> Gateway {
        super::init_crypto();
        let tls = template["listen"]["tls"] != "none";
        let mut gw = Gateway {
            dir,
            template,
            env,
            child: None,
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin: "127.0.0.1:0".parse().expect("addr"),
            authz: None,
            tls,
            admin_token: String::new(),
            logs: Vec::new(),
            config_path: PathBuf::new(),
            client: insecure_client(false),
            client_h1: insecure_client(true),
            admin_client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("admin client"),
        };
        gw.boot().await;
        gw
    }

    /// Starts the child on fresh ports and waits until it is ready; retries a start
    /// that lost a bind race.
    async fn boot(&mut self) {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let (lp, ap, zp) = (free_port(), free_port(), free_port());
            let config = render(&self.template, self.dir.path(), lp, ap, zp);
            let n = STARTS.fetch_add(1, Ordering::SeqCst);
            let config_path = self.dir.path().join(format!("keygate-{n}.yaml"));
            std::fs::write(
                &config_path,
                serde_yaml::to_string(&config).expect("config to YAML"),
            )
            .expect("write config");
            let log_path = self.dir.path().join(format!("keygate-{n}.log"));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_keygate"))
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .current_dir(self.dir.path())
                .envs(self.env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log clone"))
                .stderr(log)
                .spawn()
                .expect("spawn keygate");
            self.logs.push(log_path);
            self.config_path = config_path;
            self.child = Some(child);
            self.listen = format!("127.0.0.1:{lp}").parse().expect("addr");
            self.admin = format!("127.0.0.1:{ap}").parse().expect("addr");
            self.authz = config
                .get("authz")
                .map(|_| format!("127.0.0.1:{zp}").parse().expect("addr"));
            match self.wait_ready().await {
                Ok(()) => {
                    self.admin_token = self.read_admin_token().await;
                    return;
                }
                Err(e) => {
                    last_err = e;
                    self.kill9();
                    let bind_race = self.logs_text().to_lowercase().contains("in use");
                    if !bind_race {
                        break;
                    }
                }
            }
        }
        panic!(
            "keygate did not become ready: {last_err}\n--- config ---\n{}\n--- keygate output ---\n{}",
            serde_yaml::to_string(&self.template).unwrap_or_default(),
            self.logs_text()
        );
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("keygate exited early with {status}"));
            }
            if let Ok(r) = self
                .admin_client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("GET {url} was not 200 within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn read_admin_token(&self) -> String {
        let path = self.token_file();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(t) = std::fs::read_to_string(&path) {
                let t = t.trim().to_string();
                if !t.is_empty() {
                    return t;
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no admin token in {} after readiness\n--- keygate output ---\n{}",
                    path.display(),
                    self.logs_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn token_file(&self) -> PathBuf {
        self.template["admin"]["bootstrap_token_file"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("admin-token"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("keygate is running").id()
    }

    /// Everything keygate printed, over all starts.
    pub fn logs_text(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Whether the child process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`) with the shell's `kill` builtin, which
    /// every `sh` has (a `kill` binary may not be installed).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {}", self.pid()))
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGTERM and wait for a clean exit (bounded; SIGKILL after 10 s).
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.signal("TERM");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if tokio::time::Instant::now() > deadline {
                self.kill9();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Changes the config file in place (same ports and paths) and sends SIGHUP.
    pub fn reload_config(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.template);
        let config = render(
            &self.template,
            self.dir.path(),
            self.listen.port(),
            self.admin.port(),
            self.authz.map_or(0, |a| a.port()),
        );
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(
            &tmp,
            serde_yaml::to_string(&config).expect("config to YAML"),
        )
        .expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
        self.signal("HUP");
    }

    /// Starts keygate again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop keygate before restarting it");
        self.boot().await;
    }

    // ---- data plane ----

    pub fn url(&self, path_and_query: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path_and_query}", self.listen)
    }

    /// A client that negotiates HTTP/2 or HTTP/1.1 by ALPN and accepts the
    /// self-signed certificate.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn client_h1(&self) -> &reqwest::Client {
        &self.client_h1
    }

    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            self.url(path),
        )
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        Reply::from_reqwest(rb.send().await.expect("request to keygate")).await
    }

    /// A request with `Authorization: Bearer <token>` when a token is given.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        let mut rb = self.request(method, path);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call("GET", path, token).await
    }

    /// A raw connection to the data port (TLS or plain, as configured).
    pub async fn raw_conn(&self) -> RawConn {
        if self.tls {
            RawConn::tls(self.listen).await
        } else {
            RawConn::plain(self.listen).await
        }
    }

    /// Sends exact bytes on a new connection and reads one response.
    pub async fn raw(&self, bytes: impl AsRef<[u8]>) -> Reply {
        let mut c = self.raw_conn().await;
        assert!(
            c.send(bytes.as_ref()).await,
            "keygate closed before the request was sent"
        );
        c.read_response(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no response from keygate to a raw request ({e:?}): {:?}",
                    String::from_utf8_lossy(bytes.as_ref())
                )
            })
    }

    // ---- admin API ----

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn admin_call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.admin_call_as(&self.admin_token.clone(), method, path, body)
            .await
    }

    pub async fn admin_call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut rb = self
            .admin_client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                self.admin_url(path),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        Reply::from_reqwest(rb.send().await.expect("admin request")).await
    }

    pub async fn create_org(&self, id: &str) {
        let r = self
            .admin_call("POST", "/v1/orgs", Some(json!({ "id": id, "name": id })))
            .await;
        assert!(
            r.status == 201 || r.status == 200,
            "create org {id}: {} {}",
            r.status,
            r.text()
        );
    }

    /// Creates a key in `org`; `body` needs at least `scopes`; a name is added if absent.
    pub async fn create_key_as(&self, token: &str, org: &str, mut body: Value) -> Key {
        static N: AtomicUsize = AtomicUsize::new(0);
        if body.get("name").is_none() {
            body["name"] = json!(format!("test-key-{}", N.fetch_add(1, Ordering::SeqCst)));
        }
        let r = self
            .admin_call_as(
                token,
                "POST",
                &format!("/v1/orgs/{org}/keys"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 201, "create key {body}: {}", r.text());
        let v = r.json();
        Key {
            id: v["key"]["id"]
                .as_str()
                .expect("key.id in the create response")
                .to_string(),
            secret: v["secret"]
                .as_str()
                .expect("secret in the create response")
                .to_string(),
            record: v["key"].clone(),
        }
    }

    pub async fn create_key(&self, org: &str, body: Value) -> Key {
        let token = self.admin_token.clone();
        self.create_key_as(&token, org, body).await
    }

    pub async fn revoke_key(&self, org: &str, id: &str) {
        let r = self
            .admin_call("POST", &format!("/v1/orgs/{org}/keys/{id}/revoke"), None)
            .await;
        assert_eq!(r.status, 200, "revoke {id}: {}", r.text());
    }

    pub async fn delete_key(&self, org: &str, id: &str) {
        let r = self
            .admin_call("DELETE", &format!("/v1/orgs/{org}/keys/{id}"), None)
            .await;
        assert_eq!(r.status, 204, "delete {id}: {}", r.text());
    }

    pub async fn metrics(&self) -> String {
        let r = self
            .admin_client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("metrics body")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}
