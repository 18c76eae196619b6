//! The "API keys" page (SPEC §5) end to end in a real browser: Debian's Chromium,
//! headless, driven over WebDriver by chromedriver, against the real `keygate` binary
//! (plain HTTP data plane, embedded store in a temp dir) and a tiny upstream.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian: `apt-get install -y
//! chromium chromium-driver`; `CHROMIUM` and `CHROMEDRIVER` override the paths). A
//! missing browser fails the test: it is never skipped.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots/`; with
//! `KEYGATE_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/`, where they are checked in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Longest wait for anything the page or a process does.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A process killed (and reaped) when dropped, so a failing test leaves nothing behind.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &Path, args: &[&str], dir: &Path, log_name: &str) -> Result<Process> {
    let log = dir.join(log_name);
    let out = std::fs::File::create(&log)?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Process { child, log })
}

/// A browser tool, from its environment override or the Debian path; a clear failure
/// when absent.
fn tool(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: the API keys page test needs a real browser. Install it with \
         `apt-get install -y chromium chromium-driver` (package {package}), or set {env}.",
        path.display()
    );
    path
}

/// The upstream behind keygate: answers every request with 200 and what keygate told
/// it about the key, so the test sees that a request went through.
async fn start_upstream() -> SocketAddr {
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let key = headers
            .get("x-api-key-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        axum::Json(json!({ "upstream": "ok", "key_id": key }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Keygate {
    process: Process,
    admin: String,
    data: String,
    token: String,
    http: reqwest::Client,
}

impl Keygate {
    async fn start(dir: &Path, upstream: SocketAddr) -> Result<Keygate> {
        let (data_port, admin_port) = (free_port(), free_port());
        let config = format!(
            r#"listen: {{ address: "127.0.0.1:{data_port}", tls: none }}
admin: {{ address: "127.0.0.1:{admin_port}", bootstrap_token_file: "{dir}/admin-token" }}
store: {{ backend: embedded, path: "{dir}/keygate.db" }}
keys: {{ prefix: kg }}
upstreams:
  demo: {{ url: "http://{upstream}", test_url: "http://{upstream}", connect_timeout: 2s, timeout: 5s }}
scopes: {{ read: [], write: [read], billing: [] }}
routes:
  - {{ name: list-feeds, methods: [GET], path: /v1/feeds, upstream: demo, scope: read }}
  - {{ name: refresh-feed, methods: [POST], path: "/v1/feeds/{{feed_id}}/refresh", upstream: demo, scope: write, resource: "feed:{{feed_id}}" }}
  - {{ name: execute-flow, methods: [POST], path: "/flows/{{flow_id}}/execute", upstream: demo, scope: write, resource: "flow:{{flow_id}}" }}
"#,
            dir = dir.display()
        );
        let config_path = dir.join("keygate.yaml");
        std::fs::write(&config_path, config)?;
        let process = spawn(
            Path::new(env!("CARGO_BIN_EXE_keygate")),
            &[
                "serve",
                "--config",
                config_path.to_str().context("utf-8 path")?,
            ],
            dir,
            "keygate.log",
        )?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let admin = format!("http://127.0.0.1:{admin_port}");
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{admin}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!("keygate was not ready in {WAIT:?}:\n{}", process.output());
            }
            tokio::time::sleep(POLL).await;
        }
        let token = std::fs::read_to_string(dir.join("admin-token"))
            .context("reading the bootstrap admin token")?
            .trim()
            .to_string();
        Ok(Keygate {
            process,
            admin,
            data: format!("http://127.0.0.1:{data_port}"),
            token,
            http,
        })
    }

    async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A data-plane GET with `secret`: status and error code (empty on success).
    async fn call_with(&self, secret: &str, path: &str) -> Result<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}{path}", self.data))
            .bearer_auth(secret)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

struct Browser {
    _driver: Process,
    client: Client,
    screenshots: PathBuf,
}

impl Browser {
    async fn start(dir: &Path) -> Result<Browser> {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let port = free_port();
        let driver = spawn(
            &chromedriver,
            &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
            dir,
            "chromedriver.log",
        )?;
        let url = format!("http://127.0.0.1:{port}");
        let status = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + WAIT;
        loop {
            let r = status.get(format!("{url}/status")).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver did not start in {WAIT:?}:\n{}",
                    driver.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile)?;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,860",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| anyhow!("starting a Chromium session: {e}\n{}", driver.output()))?;
        let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&screenshots)?;
        Ok(Browser {
            _driver: driver,
            client,
            screenshots,
        })
    }

    async fn css(&self, selector: &str) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(selector))
            .await
            .with_context(|| format!("waiting for `{selector}`"))
    }

    /// Clicks `selector`, finding it again if the list was re-rendered in between
    /// (stale element) or something still covered it (a closing dialog).
    async fn click(&self, selector: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let attempt = match self.css(selector).await {
                Ok(e) => e.click().await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("clicking `{selector}`")));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn fill(&self, selector: &str, text: &str) -> Result<()> {
        let e = self.css(selector).await?;
        e.clear().await?;
        e.send_keys(text).await?;
        let value = e.prop("value").await?.unwrap_or_default();
        ensure!(
            value == text,
            "`{selector}` holds {value:?} after typing {text:?}"
        );
        Ok(())
    }

    async fn select(&self, selector: &str, value: &str) -> Result<()> {
        self.css(selector).await?.select_by_value(value).await?;
        Ok(())
    }

    async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("running `{script}`"))
    }

    /// Waits until `script` (a function body) returns true.
    async fn until(&self, what: &str, script: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(script, vec![]).await? == json!(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting until {what}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the visible text of `selector` contains `needle`; returns that text.
    async fn text_contains(&self, selector: &str, needle: &str) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(selector)).await
                && let Ok(t) = e.text().await
            {
                if t.contains(needle) {
                    return Ok(t);
                }
                last = t;
            }
            if Instant::now() > deadline {
                bail!("`{selector}` never contained {needle:?}; last text: {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn row(&self, key_id: &str) -> String {
        format!("tr[data-key-id=\"{key_id}\"]")
    }

    async fn screenshot(&self, name: &str) -> Result<()> {
        // Let transitions, focus rings and fonts settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await?;
        ensure!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        std::fs::write(self.screenshots.join(name), &png)?;
        if std::env::var_os("KEYGATE_UPDATE_SCREENSHOTS").is_some() {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::create_dir_all(&docs)?;
            std::fs::write(docs.join(name), &png)?;
        }
        Ok(())
    }

    /// The secret shown in the panel, after checking the panel's warning and copy button.
    async fn secret_from_panel(&self) -> Result<String> {
        let warning = self
            .text_contains("#secret-panel", "will not be shown again")
            .await?;
        ensure!(warning.contains("Copy"), "the panel has a copy button");
        let secret = self
            .css("#secret-value")
            .await?
            .prop("value")
            .await?
            .context("the secret input has a value")?;
        ensure!(
            secret.starts_with("kg_"),
            "secret {secret:?} has the kg_ prefix"
        );
        Ok(secret)
    }

    /// Dismisses the panel, then checks that the secret is nowhere in the page.
    async fn dismiss_secret(&self, secret: &str) -> Result<()> {
        self.click("#dismiss-secret").await?;
        self.until(
            "the secret panel is gone",
            "return document.getElementById('secret-panel') === null",
        )
        .await?;
        let found = self
            .js(
                "const s = arguments[0]; \
                 const inputs = Array.from(document.querySelectorAll('input,textarea')).some(i => i.value.includes(s)); \
                 return inputs || document.documentElement.outerHTML.includes(s) \
                     || Object.values(sessionStorage).some(v => v.includes(s));",
                vec![json!(secret)],
            )
            .await?;
        ensure!(
            found == json!(false),
            "the secret is still in the page after dismissing"
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keys_page_manages_keys_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let upstream = start_upstream().await;
    let gateway = Keygate::start(dir.path(), upstream)
        .await
        .expect("start keygate");
    let browser = Browser::start(dir.path()).await.expect("start Chromium");
    let result = walk_through(&gateway, &browser).await;
    if result.is_err() {
        let _ = browser.screenshot("failure.png").await;
    }
    let Browser { client, .. } = browser;
    let _ = client.close().await;
    if let Err(e) = result {
        panic!(
            "{e:#}\n(screenshot: {}/screenshots/failure.png)\n--- keygate output ---\n{}",
            env!("CARGO_TARGET_TMPDIR"),
            gateway.process.output()
        );
    }
}

async fn walk_through(gw: &Keygate, b: &Browser) -> Result<()> {
    use reqwest::Method;

    // The page and its security headers, from the real binary.
    let page = gw.http.get(format!("{}/", gw.admin)).send().await?;
    ensure!(page.status() == 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str()?;
    ensure!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe"),
        "CSP: {csp}"
    );
    ensure!(h["x-content-type-options"] == "nosniff");
    ensure!(h["x-frame-options"] == "DENY");

    // An org and some keys made through the API beforehand, one with a hostile name.
    let (s, _) = gw
        .admin_call(
            Method::POST,
            "/v1/orgs",
            Some(json!({"id": "acme", "name": "Acme Corp"})),
        )
        .await?;
    ensure!(s == 201, "create org: {s}");
    let mut made = Vec::new();
    for body in [
        json!({"name": "billing-export", "scopes": ["write"], "environment": "test",
               "description": "Nightly export job", "expires_in_days": 30}),
        json!({"name": "partner-feeds", "scopes": ["read"], "resources": ["feed:*"],
               "ip_allow": ["203.0.113.0/24"]}),
        json!({"name": "<img src=x onerror=alert(1)>", "scopes": ["read"]}),
    ] {
        let (s, v) = gw
            .admin_call(Method::POST, "/v1/orgs/acme/keys", Some(body))
            .await?;
        ensure!(s == 201, "create key through the API: {s} {v}");
        made.push(v);
    }
    let hostile = made.pop().context("three keys made")?;

    // Sign in: the token goes to sessionStorage only, never into the URL.
    b.client.goto(&format!("{}/", gw.admin)).await?;
    // Everything the page renders from here on is checked against its CSP.
    b.js(
        "window.cspViolations = []; document.addEventListener('securitypolicyviolation', \
         e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));",
        vec![],
    )
    .await?;
    b.fill("#token", &gw.token).await?;
    b.click("#sign-in-submit").await?;
    b.text_contains("#keys-table", "billing-export").await?;
    let url = b.client.current_url().await?;
    ensure!(!url.as_str().contains(&gw.token), "token in the URL");
    let stored = b
        .js(
            "return [sessionStorage.getItem('keygate.admin-token'), localStorage.length]",
            vec![],
        )
        .await?;
    ensure!(stored == json!([gw.token, 0]), "storage: {stored}");
    ensure!(b.css("#org-select").await?.prop("value").await?.as_deref() == Some("acme"));

    // Data is rendered as text: the hostile name shows literally and makes no element.
    b.text_contains("#keys-table", "<img src=x onerror=alert(1)>")
        .await?;
    let imgs = b
        .js(
            "return document.querySelectorAll('#keys-body img').length",
            vec![],
        )
        .await?;
    ensure!(imgs == json!(0), "markup from a key name was rendered");
    let hostile = hostile["key"]["id"].as_str().context("hostile key id")?;
    let (s, _) = gw
        .admin_call(
            Method::DELETE,
            &format!("/v1/orgs/acme/keys/{hostile}"),
            None,
        )
        .await?;
    ensure!(s == 204, "delete the hostile key: {s}");

    // A throwaway key for the screenshot of the secret panel.
    b.click("#new-key").await?;
    b.fill("#f-name", "ci-runner").await?;
    b.fill("#f-description", "Build pipeline smoke tests")
        .await?;
    b.click("#key-submit").await?;
    let throwaway = b.secret_from_panel().await?;
    // Copy: the clipboard when the browser allows it, else the text is left selected.
    b.click("#copy-secret").await?;
    let copied = b.text_contains("#copy-status", "C").await?;
    ensure!(
        copied.contains("Copied") || copied.contains("Ctrl+C"),
        "copy status: {copied}"
    );
    let selected = b
        .js("const i = document.getElementById('secret-value'); return i.value.substring(i.selectionStart, i.selectionEnd)", vec![])
        .await?;
    ensure!(
        selected == json!(throwaway),
        "the secret is selected after Copy"
    );
    b.screenshot("create-secret.png").await?;
    b.dismiss_secret(&throwaway).await?;

    // Create through the page: a server error names its field, then the fixed form works.
    b.click("#new-key").await?;
    b.fill("#f-name", "feeds-reader").await?;
    b.click("#scope-options input[value=\"read\"]").await?; // untick the default
    b.click("#scope-options input[value=\"write\"]").await?;
    b.select("#f-expiry", "90").await?;
    // A scope the server does not know (as from a config change) is refused with 422;
    // the page then offers exactly the scopes the server named.
    b.js(
        "const box = document.getElementById('scope-options'); \
         const ghost = document.createElement('input'); \
         ghost.type = 'checkbox'; ghost.value = 'ghost'; ghost.checked = true; box.append(ghost);",
        vec![],
    )
    .await?;
    b.click("#key-submit").await?;
    b.text_contains("#key-form-error", "unknown scope `ghost`")
        .await?;
    b.css("#scope-options input[value=\"billing\"]").await?;
    let offered = b
        .js(
            "return Array.from(document.querySelectorAll('#scope-options input')).map(i => i.value + (i.checked ? '*' : ''))",
            vec![],
        )
        .await?;
    ensure!(
        offered == json!(["read", "write*", "billing"]),
        "scopes offered: {offered}"
    );
    b.click("#f-ip-on").await?;
    b.fill("#f-ip", "not-an-address").await?;
    b.click("#key-submit").await?;
    let err = b.text_contains("#key-form-error", "ip_allow[0]").await?;
    b.screenshot("create-form-error.png").await?;
    ensure!(err.contains("Field"), "error names the field: {err}");
    ensure!(
        b.css("#f-ip").await?.attr("aria-invalid").await?.as_deref() == Some("true"),
        "the IP field is marked invalid"
    );
    b.fill("#f-ip", "127.0.0.1/32\n::1").await?;
    b.click("#key-submit").await?;
    let secret = b.secret_from_panel().await?;

    let (s, v) = gw
        .admin_call(Method::GET, "/v1/orgs/acme/keys?limit=200", None)
        .await?;
    ensure!(s == 200);
    let created = v["data"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["name"] == "feeds-reader"))
        .cloned()
        .context("feeds-reader is listed by the API")?;
    let id = created["id"].as_str().context("key id")?.to_string();
    ensure!(created["scopes"] == json!(["write"]), "{created}");
    ensure!(
        created["ip_allow"] == json!(["127.0.0.1/32", "::1/128"]),
        "{created}"
    );
    ensure!(
        created["expires_at"].is_string(),
        "90-day expiry: {created}"
    );

    // The secret read from the panel works on the data plane.
    let (s, body) = gw.call_with(&secret, "/v1/feeds").await?;
    ensure!(
        s == 200 && body["upstream"] == "ok" && body["key_id"] == id.as_str(),
        "{s} {body}"
    );
    b.dismiss_secret(&secret).await?;
    let row = b.row(&id);
    b.text_contains(&row, "feeds-reader").await?;

    // Edit: name, description, scopes, and expiry (custom date).
    b.click(&format!("{row} button[data-action=\"edit\"]"))
        .await?;
    b.fill("#f-name", "feeds-reader-2").await?;
    b.fill("#f-description", "Reads feeds for the dashboard")
        .await?;
    b.click("#scope-options input[value=\"read\"]").await?;
    b.click("#scope-options input[value=\"write\"]").await?;
    b.select("#f-expiry", "custom").await?;
    b.js(
        "document.getElementById('f-expiry-date').value = arguments[0]",
        vec![json!("2031-01-31")],
    )
    .await?;
    b.click("#key-submit").await?;
    b.text_contains(&row, "feeds-reader-2").await?;
    let (_, v) = gw
        .admin_call(Method::GET, &format!("/v1/orgs/acme/keys/{id}"), None)
        .await?;
    ensure!(v["name"] == "feeds-reader-2", "{v}");
    ensure!(v["description"] == "Reads feeds for the dashboard", "{v}");
    ensure!(v["scopes"] == json!(["read"]), "{v}");
    ensure!(
        v["expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2031-01-31") || t.starts_with("2031-02-01")),
        "{v}"
    );
    ensure!(
        v["ip_allow"] == json!(["127.0.0.1/32", "::1/128"]),
        "edit kept ip_allow: {v}"
    );

    // Regenerate with a 1-hour grace: both secrets work, and the row says until when.
    b.click(&format!("{row} button[data-action=\"regenerate\"]"))
        .await?;
    b.select("#regen-grace", "3600").await?;
    b.screenshot("regenerate.png").await?;
    b.click("#regen-submit").await?;
    let graced = b.secret_from_panel().await?;
    ensure!(graced != secret);
    for (which, s) in [("old", &secret), ("new", &graced)] {
        let (status, body) = gw.call_with(s, "/v1/feeds").await?;
        ensure!(
            status == 200,
            "{which} secret during grace: {status} {body}"
        );
    }
    b.text_contains(&row, "old secret until").await?;
    b.dismiss_secret(&graced).await?;

    // Regenerate at once: only the newest secret works; any grace ends.
    b.click(&format!("{row} button[data-action=\"regenerate\"]"))
        .await?;
    b.select("#regen-grace", "0").await?;
    b.click("#regen-submit").await?;
    let new_secret = b.secret_from_panel().await?;
    let (s, _) = gw.call_with(&new_secret, "/v1/feeds").await?;
    ensure!(s == 200, "new secret: {s}");
    for old in [&secret, &graced] {
        let (s, body) = gw.call_with(old, "/v1/feeds").await?;
        ensure!(s == 401, "an earlier secret after regenerate: {s} {body}");
    }
    b.dismiss_secret(&new_secret).await?;

    // Usage: a chart when the endpoint answers, a clear message when it is 404.
    let (usage_status, _) = gw
        .admin_call(Method::GET, &format!("/v1/orgs/acme/keys/{id}/usage"), None)
        .await?;
    b.click(&format!("{row} button[data-action=\"usage\"]"))
        .await?;
    match usage_status {
        404 => {
            b.text_contains("#usage-unavailable", "Usage is not available")
                .await?;
            b.screenshot("usage-unavailable.png").await?;
        }
        200 => {
            b.until(
                "a usage chart or an empty notice",
                "return !!document.querySelector('#usage-chart, #usage-empty')",
            )
            .await?;
        }
        other => bail!("usage endpoint answered {other}"),
    }
    // The chart itself, from a report of the documented shape (totals, series, top
    // routes), answered by the browser in place of the server.
    let report = sample_usage_report();
    b.js(
        "const report = arguments[0]; const real = window.fetch; \
         window.fetch = (url, init) => String(url).includes('/usage?') \
           ? Promise.resolve(new Response(JSON.stringify(report), \
               { status: 200, headers: { 'Content-Type': 'application/json' } })) \
           : real(url, init);",
        vec![report],
    )
    .await?;
    b.select("#usage-range", "7d").await?;
    b.css("#usage-chart").await?;
    let bars = b
        .js(
            "return document.querySelectorAll('#usage-chart g.bar').length",
            vec![],
        )
        .await?;
    ensure!(bars == json!(7), "one bar per day: {bars}");
    b.text_contains("#usage-totals", "1939").await?;
    b.screenshot("usage.png").await?;
    b.click("#usage-close").await?;

    // Revoke behind the confirmation dialog: cancel first, then confirm.
    b.click(&format!("{row} button[data-action=\"revoke\"]"))
        .await?;
    b.text_contains("#confirm-dialog", "cannot be undone")
        .await?;
    b.click("#confirm-cancel").await?;
    let (s, _) = gw.call_with(&new_secret, "/v1/feeds").await?;
    ensure!(s == 200, "cancel left the key working: {s}");
    b.click(&format!("{row} button[data-action=\"revoke\"]"))
        .await?;
    b.text_contains("#confirm-dialog", "cannot be undone")
        .await?;
    b.screenshot("revoke-confirm.png").await?;
    b.click("#confirm-ok").await?;
    b.until(
        "the row shows revoked",
        &format!("const r = document.querySelector('{row}'); return !!r && r.dataset.status === 'revoked'"),
    )
    .await?;
    let (s, body) = gw.call_with(&new_secret, "/v1/feeds").await?;
    ensure!(
        s == 401 && body["error"]["code"] == "revoked_api_key",
        "{s} {body}"
    );
    b.screenshot("keys-list.png").await?;

    // The status filter and load more (pages of 50: 54 keys make two pages).
    b.select("#status-filter", "revoked").await?;
    b.until(
        "only revoked keys are listed",
        "const rows = document.querySelectorAll('#keys-body tr'); \
         return rows.length === 1 && rows[0].dataset.status === 'revoked'",
    )
    .await?;
    b.select("#status-filter", "").await?;
    for i in 0..50 {
        let body = json!({"name": format!("bulk-{i:02}"), "scopes": ["read"]});
        let (s, _) = gw
            .admin_call(Method::POST, "/v1/orgs/acme/keys", Some(body))
            .await?;
        ensure!(s == 201);
    }
    b.click("#refresh").await?;
    b.until(
        "a first page of 50 and a load more button",
        "return document.querySelectorAll('#keys-body tr').length === 50 \
           && !document.getElementById('load-more').hidden",
    )
    .await?;
    b.click("#load-more").await?;
    b.until(
        "all 54 keys and no load more button",
        "return document.querySelectorAll('#keys-body tr').length === 54 \
           && document.getElementById('load-more').hidden",
    )
    .await?;

    // Delete behind the confirmation dialog: gone from the list and from the API (404).
    b.click(&format!("{row} button[data-action=\"delete\"]"))
        .await?;
    b.text_contains("#confirm-title", "Delete").await?;
    b.click("#confirm-ok").await?;
    b.until(
        "the deleted key's row is gone",
        &format!("return document.querySelector('{row}') === null"),
    )
    .await?;
    let (s, v) = gw
        .admin_call(Method::GET, &format!("/v1/orgs/acme/keys/{id}"), None)
        .await?;
    ensure!(s == 404 && v["error"]["code"] == "not_found", "{s} {v}");

    let violations = b.js("return window.cspViolations", vec![]).await?;
    ensure!(violations == json!([]), "CSP violations: {violations}");

    // Sign out forgets the token.
    b.click("#sign-out").await?;
    b.css("#sign-in:not([hidden])").await?;
    let left = b
        .js("return sessionStorage.length + localStorage.length", vec![])
        .await?;
    ensure!(left == json!(0), "storage after sign out: {left}");
    b.click("#token").await?;
    b.screenshot("sign-in.png").await?;

    // A wrong token is refused with the server's message.
    b.fill("#token", "kga_not-a-real-token").await?;
    b.click("#sign-in-submit").await?;
    b.text_contains("#banner", "refused").await?;
    Ok(())
}

/// A week of daily usage in the shape SPEC §5 names: `totals`, `series`, top routes.
fn sample_usage_report() -> Value {
    let days = [
        ("2026-11-16", 180, 172),
        ("2026-11-17", 240, 231),
        ("2026-11-18", 310, 296),
        ("2026-11-19", 205, 190),
        ("2026-11-20", 388, 351),
        ("2026-11-21", 296, 290),
        ("2026-11-22", 320, 301),
    ];
    let series: Vec<Value> = days
        .iter()
        .map(|(d, requests, ok)| {
            json!({ "start": format!("{d}T00:00:00Z"), "requests": requests, "successes": ok })
        })
        .collect();
    let requests: u64 = days.iter().map(|d| d.1).sum();
    let successes: u64 = days.iter().map(|d| d.2).sum();
    json!({
        "totals": {
            "requests": requests,
            "successes": successes,
            "client_errors": 41,
            "rate_limited": 18,
            "upstream_errors": 9
        },
        "series": series,
        "top_routes": [
            { "route": "list-feeds", "requests": 1630 },
            { "route": "refresh-feed", "requests": 309 }
        ]
    })
}
