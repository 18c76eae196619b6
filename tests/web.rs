//! The admin page (SPEC §5, issue 15) end to end in a real browser: Debian's Chromium,
//! headless, driven over WebDriver by chromedriver, against the real `keygate` binary
//! started by the common test builder (plain HTTP data plane, embedded store in a temp
//! dir, a recording upstream). One browser session per role: an owner, an admin, a
//! manager with and one without API access, and a viewer; each checks what it may and
//! may not do, the page's CSP, and runs axe-core (vendored in `tests/axe/`) on its
//! screens; the manager's session is keyboard only.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian: `apt-get install -y
//! chromium chromium-driver`; `CHROMIUM` and `CHROMEDRIVER` override the paths). A
//! missing browser fails the test: it is never skipped.
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots/`; with
//! `KEYGATE_UPDATE_SCREENSHOTS=1` also to `docs/screenshots/`, where they are checked in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod common;
use common::Env;
use common::ports::free_port;

/// Longest wait for anything the page or a process does.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
/// WebDriver key codes.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

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

/// The real binary through the one test builder (`tests/common`), on plain HTTP, with
/// an extra `billing` scope so that the page can learn scopes from a 422.
struct Keygate {
    env: Env,
    admin: String,
    token: String,
    http: reqwest::Client,
}

impl Keygate {
    async fn start() -> Keygate {
        let env = Env::start_with(|b| b.plain().with(|c| c["scopes"]["billing"] = json!([]))).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        Keygate {
            admin: env.gw.admin_url(""),
            token: env.gw.admin_token.clone(),
            env,
            http,
        }
    }

    fn output(&self) -> String {
        self.env.gw.logs_text()
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

    /// A data-plane GET with `secret`: status and body.
    async fn call_with(&self, secret: &str, path: &str) -> Result<(u16, Value)> {
        let r = self.env.gw.get(path, Some(secret)).await;
        let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok((r.status, body))
    }

    /// The key id the upstream saw on its last request.
    fn upstream_saw_key(&self) -> String {
        self.env.up.last().header_one("x-api-key-id")
    }
}

/// chromedriver, started once; each role signs in through its own browser session.
struct Driver {
    process: Process,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    async fn start(dir: &Path) -> Result<Driver> {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let port = free_port();
        let process = spawn(
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
                    process.output()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(Driver {
            process,
            url,
            chromium,
        })
    }

    /// A fresh Chromium session with its own profile and download folder.
    async fn session(&self, dir: &Path, name: &str) -> Result<Browser> {
        let profile = dir.join(format!("profile-{name}"));
        let downloads = dir.join(format!("downloads-{name}"));
        std::fs::create_dir_all(&profile)?;
        std::fs::create_dir_all(&downloads)?;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,860",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .map_err(|e| {
                anyhow!(
                    "starting a Chromium session: {e}\n{}",
                    self.process.output()
                )
            })?;
        let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&screenshots)?;
        Ok(Browser {
            client,
            screenshots,
            downloads,
        })
    }
}

struct Browser {
    client: Client,
    screenshots: PathBuf,
    /// Where this session's downloads land.
    downloads: PathBuf,
}

impl Browser {
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

    /// Opens the page and signs in with `token`, checking CSP violations from then on.
    async fn sign_in(&self, admin: &str, token: &str) -> Result<()> {
        self.open(admin).await?;
        self.fill("#token", token).await?;
        self.click("#sign-in-submit").await?;
        self.css("#session:not([hidden])").await?;
        Ok(())
    }

    /// Opens the page and records CSP violations from then on.
    async fn open(&self, admin: &str) -> Result<()> {
        self.client.goto(&format!("{admin}/")).await?;
        self.js(
            "window.cspViolations = []; document.addEventListener('securitypolicyviolation', \
             e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));",
            vec![],
        )
        .await?;
        Ok(())
    }

    async fn no_csp_violations(&self) -> Result<()> {
        let violations = self.js("return window.cspViolations", vec![]).await?;
        ensure!(violations == json!([]), "CSP violations: {violations}");
        Ok(())
    }

    /// Whether `selector` matches an element that is rendered (not hidden).
    async fn visible(&self, selector: &str) -> Result<bool> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); \
                 return !!e && e.getClientRects().length > 0",
                vec![json!(selector)],
            )
            .await?;
        Ok(v == json!(true))
    }

    /// How many elements match `selector`.
    async fn count(&self, selector: &str) -> Result<u64> {
        let v = self
            .js(
                "return document.querySelectorAll(arguments[0]).length",
                vec![json!(selector)],
            )
            .await?;
        v.as_u64().context("a count")
    }

    /// Runs axe-core (vendored under tests/axe/) on the page as it is: no serious or
    /// critical violation of WCAG 2.1 A/AA rules.
    async fn accessible(&self, screen: &str) -> Result<()> {
        let installed = self
            .js("return typeof window.axe === 'object'", vec![])
            .await?;
        if installed != json!(true) {
            let axe = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/axe/axe.min.js"),
            )
            .context("reading tests/axe/axe.min.js")?;
            self.js(&axe, vec![]).await?;
        }
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }) \
                   .then(r => done(r.violations \
                     .filter(v => v.impact === 'serious' || v.impact === 'critical') \
                     .map(v => v.id + ': ' + v.help + ' — ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')))) \
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await?;
        ensure!(
            found == json!([]),
            "accessibility violations on {screen}: {found:#}"
        );
        Ok(())
    }

    /// Presses keys on whatever has the focus, as a keyboard user would.
    async fn keys(&self, text: &str) -> Result<()> {
        self.client.active_element().await?.send_keys(text).await?;
        Ok(())
    }

    /// Presses Tab until `selector` has the focus (at most 60 times).
    async fn tab_to(&self, selector: &str) -> Result<()> {
        for _ in 0..60 {
            let here = self
                .js(
                    "return document.activeElement === document.querySelector(arguments[0])",
                    vec![json!(selector)],
                )
                .await?;
            if here == json!(true) {
                return Ok(());
            }
            self.keys(TAB).await?;
        }
        bail!("Tab never reached `{selector}`")
    }

    /// Waits for a finished download named `name`; returns its text.
    async fn downloaded(&self, name: &str) -> Result<String> {
        let path = self.downloads.join(name);
        let deadline = Instant::now() + WAIT;
        loop {
            let partial = std::fs::read_dir(&self.downloads)?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"));
            if path.exists() && !partial {
                return Ok(std::fs::read_to_string(&path)?);
            }
            if Instant::now() > deadline {
                bail!("{name} was not downloaded to {}", self.downloads.display());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
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
async fn the_admin_page_does_every_job_for_every_role_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = Keygate::start().await;
    let driver = Driver::start(dir.path()).await.expect("start chromedriver");
    if let Err(e) = every_role(&gateway, &driver, dir.path()).await {
        panic!(
            "{e:#}\n(screenshots: {}/screenshots/failure-*.png)\n--- keygate output ---\n{}",
            env!("CARGO_TARGET_TMPDIR"),
            gateway.output()
        );
    }
}

/// Closes a session, with a screenshot when it failed.
async fn finish<T>(b: Browser, name: &str, result: Result<T>) -> Result<T> {
    if result.is_err() {
        let _ = b.screenshot(&format!("failure-{name}.png")).await;
    }
    b.close().await;
    result
}

/// The admin tokens the owner hands out on the People page.
struct Team {
    admin: String,
    /// Max: a manager whom the admin grants API access.
    manager: String,
    /// Mo: a manager without API access.
    idle_manager: String,
    viewer: String,
    /// Ver: a verifier, which may only call `POST /v1/verify`.
    verifier: String,
}

async fn every_role(gw: &Keygate, driver: &Driver, dir: &Path) -> Result<()> {
    let b = driver.session(dir, "owner").await?;
    let r = owner_keys(gw, &b).await;
    let r = match r {
        Ok(()) => owner_pages(gw, &b).await,
        Err(e) => Err(e),
    };
    let team = finish(b, "owner", r).await?;
    let b = driver.session(dir, "admin").await?;
    let r = admin_session(gw, &b, &team).await;
    finish(b, "admin", r).await?;
    let b = driver.session(dir, "manager").await?;
    let r = manager_session(gw, &b, &team).await;
    finish(b, "manager", r).await?;
    let b = driver.session(dir, "idle-manager").await?;
    let r = idle_manager_session(gw, &b, &team).await;
    finish(b, "idle-manager", r).await?;
    let b = driver.session(dir, "viewer").await?;
    let r = viewer_session(gw, &b, &team).await;
    finish(b, "viewer", r).await
}

/// The owner on the API keys page: list, create, edit, regenerate, details with limits,
/// usage and export, revoke, filter, load more, delete, sign out.
async fn owner_keys(gw: &Keygate, b: &Browser) -> Result<()> {
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
            Method::PATCH,
            "/v1/orgs/acme",
            Some(json!({"name": "Acme Corp"})),
        )
        .await?;
    ensure!(s == 200, "name the org: {s}");
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
    let partner = made.pop().context("partner-feeds made")?;
    let billing = made.pop().context("billing-export made")?;

    // Alerts: a key with 5 requests an hour that has used 4 (80 %), and failed
    // authentications of a key restricted to an address the test does not call from.
    let (s, quota) = gw
        .admin_call(
            Method::POST,
            "/v1/orgs/acme/keys",
            Some(json!({"name": "quota-demo", "scopes": ["read"],
                        "rate_limit": {"per_hour": 5}})),
        )
        .await?;
    ensure!(s == 201, "create quota-demo: {s} {quota}");
    let quota_secret = quota["secret"].as_str().context("secret")?;
    let quota_id = quota["key"]["id"].as_str().context("id")?.to_string();
    for _ in 0..4 {
        let (s, body) = gw.call_with(quota_secret, "/v1/feeds").await?;
        ensure!(s == 200, "quota-demo call: {s} {body}");
    }
    let partner_secret = partner["secret"].as_str().context("secret")?;
    let partner_id = partner["key"]["id"].as_str().context("id")?.to_string();
    for _ in 0..3 {
        let (s, body) = gw.call_with(partner_secret, "/v1/feeds").await?;
        ensure!(
            s == 403 && body["error"]["code"] == "ip_not_allowed",
            "{s} {body}"
        );
    }

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
    // Restricted or not, plainly.
    let billing_id = billing["key"]["id"].as_str().context("id")?;
    b.text_contains(&b.row(billing_id), "Unrestricted").await?;
    let partner_row = b.text_contains(&b.row(&partner_id), "Restricted").await?;
    ensure!(!partner_row.contains("Unrestricted"), "{partner_row}");
    // The owner sees every page.
    for nav in ["#nav-keys", "#nav-people", "#nav-audit", "#nav-org"] {
        ensure!(b.visible(nav).await?, "{nav} is shown to an owner");
    }
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
    ensure!(s == 200, "{s} {body}");
    ensure!(gw.upstream_saw_key() == id, "the upstream saw the key's id");
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

    // Details: every field, restrictions, limits, usage, export and audit events.
    b.click(&format!("{row} button[data-action=\"open\"]"))
        .await?;
    b.css("#key-detail:not([hidden])").await?;
    b.text_contains("#detail-fields", &id).await?;
    b.text_contains("#detail-fields", "Reads feeds for the dashboard")
        .await?;
    b.text_contains("#detail-restrictions", "127.0.0.1/32")
        .await?;
    b.text_contains("#detail-restrictions", "Unrestricted (any resource)")
        .await?;
    b.text_contains("#detail-limits", "Failed authentications")
        .await?;
    b.text_contains("#detail-audit-table", "key.regenerate")
        .await?;
    b.text_contains("#detail-audit-table", "key.create").await?;
    b.until(
        "a usage chart or an empty notice",
        "return !!document.querySelector('#usage-chart, #usage-empty')",
    )
    .await?;
    // The chart itself, from a report of the documented shape (totals, series, top
    // routes), answered by the browser in place of the server.
    let report = sample_usage_report();
    b.js(
        "const report = arguments[0]; const real = window.fetch; window.realFetch = real; \
         window.fetch = (url, init) => String(url).includes('/usage?') \
           ? Promise.resolve(new Response(JSON.stringify(report), \
               { status: 200, headers: { 'Content-Type': 'application/json' } })) \
           : real(url, init);",
        vec![report],
    )
    .await?;
    b.select("#usage-range", "7d").await?;
    b.css("#usage-chart").await?;
    let bars = b.count("#usage-chart g.bar").await?;
    ensure!(bars == 7, "one bar per day: {bars}");
    b.text_contains("#usage-totals", "1939").await?;
    b.screenshot("usage.png").await?;
    b.js("window.fetch = window.realFetch", vec![]).await?;
    b.click("#detail-back").await?;
    b.css("#keys-card:not([hidden])").await?;

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

    // The status filter and load more (pages of 50: 55 keys make two pages).
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
        "all 55 keys and no load more button",
        "return document.querySelectorAll('#keys-body tr').length === 55 \
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
    // SPEC §1: a deleted key's id is 404.
    ensure!(s == 404 && v["error"]["code"] == "not_found", "{s} {v}");

    // The list warns at 80 % of a limit and counts failed authentications.
    wait_for_usage(gw, &quota_id, &partner_id).await?;
    b.click("#refresh").await?;
    b.click("#load-more").await?;
    let quota_row = b.row(&quota_id);
    let near = b
        .text_contains(&format!("{quota_row} [data-near-limit=\"true\"]"), "80 %")
        .await?;
    ensure!(near.contains("per hour"), "{near}");
    b.text_contains(&b.row(&partner_id), "3 failed auth")
        .await?;
    b.js(
        "document.querySelector(arguments[0]).scrollIntoView({ block: 'center' })",
        vec![json!(quota_row)],
    )
    .await?;
    b.screenshot("keys-list.png").await?;
    b.accessible("the API keys list").await?;

    // The detail view of the key near its limit: the warning, and an export of the
    // chosen range whose rows are the usage API's.
    b.click(&format!("{quota_row} button[data-action=\"open\"]"))
        .await?;
    let warning = b
        .text_contains(
            "#limits-table tr[data-window=\"per_hour\"][data-near-limit=\"true\"]",
            "Warning",
        )
        .await?;
    ensure!(warning.contains("80 %"), "{warning}");
    ensure!(
        b.text_contains("#limits-table tr[data-window=\"per_hour\"]", "4")
            .await?
            .contains("from the key"),
        "the per-hour limit is the key's own"
    );
    b.text_contains("#usage-totals", "4").await?;
    b.click("#export-json").await?;
    let json_file = b.downloaded(&format!("usage-{quota_id}-24h.json")).await?;
    let exported: Value = serde_json::from_str(&json_file).context("the JSON export")?;
    let query = format!(
        "/v1/orgs/acme/keys/{quota_id}/usage?from={}&to={}&granularity=hour",
        exported["from"].as_str().context("from")?,
        exported["to"].as_str().context("to")?
    );
    let (s, from_api) = gw.admin_call(Method::GET, &query, None).await?;
    ensure!(s == 200, "{s} {from_api}");
    ensure!(
        exported == from_api,
        "the JSON export is the usage API's answer"
    );
    ensure!(exported["totals"]["requests"] == 4, "{exported}");
    b.click("#export-csv").await?;
    let csv_file = b.downloaded(&format!("usage-{quota_id}-24h.csv")).await?;
    let csv_api = gw
        .http
        .get(format!("{}{query}&format=csv", gw.admin))
        .bearer_auth(&gw.token)
        .send()
        .await?
        .text()
        .await?;
    ensure!(csv_file == csv_api, "the CSV export is the usage API's CSV");
    let hours = exported["series"].as_array().context("series")?.len();
    ensure!(
        csv_file.lines().count() == hours + 1,
        "a header and one row per hour: {csv_file}"
    );
    b.text_contains("#export-status", "Downloaded").await?;
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("key-detail.png").await?;
    b.accessible("the key detail view").await?;
    b.click("#detail-back").await?;

    b.no_csp_violations().await?;

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

/// Waits (bounded) until the usage recorder has flushed the test's data-plane calls.
async fn wait_for_usage(gw: &Keygate, quota_id: &str, partner_id: &str) -> Result<()> {
    use reqwest::Method;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, q) = gw
            .admin_call(
                Method::GET,
                &format!("/v1/orgs/acme/keys/{quota_id}/limits"),
                None,
            )
            .await?;
        let (_, p) = gw
            .admin_call(
                Method::GET,
                &format!("/v1/orgs/acme/keys/{partner_id}/limits"),
                None,
            )
            .await?;
        if q["windows"][2]["used"] == 4 && p["last_24h"]["failed_auth"] == 3 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("usage never reached the store: {q} {p}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The token of the show-once panel, after checking it is an admin token; then hides it.
async fn token_from_panel(b: &Browser) -> Result<String> {
    b.text_contains("#secret-panel", "will not be shown again")
        .await?;
    let token = b
        .css("#secret-value")
        .await?
        .prop("value")
        .await?
        .context("the token input has a value")?;
    ensure!(token.starts_with("kga_"), "an admin token: {token:?}");
    Ok(token)
}

/// Adds a person on the People page; returns the token shown once.
async fn add_person(b: &Browser, name: &str, role: &str, api_access: bool) -> Result<String> {
    b.click("#new-person").await?;
    b.fill("#p-name", name).await?;
    b.select("#p-role", role).await?;
    let checked = b.css("#p-api").await?.prop("checked").await?;
    if (checked.as_deref() == Some("true")) != api_access {
        b.click("#p-api").await?;
    }
    b.click("#person-submit").await?;
    let token = token_from_panel(b).await?;
    b.text_contains("#people-body", name).await?;
    Ok(token)
}

async fn person_row(gw: &Keygate, name: &str) -> Result<String> {
    let (_, v) = gw
        .admin_call(reqwest::Method::GET, "/v1/principals", None)
        .await?;
    let id = v["data"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .and_then(|p| p["id"].as_str())
        .with_context(|| format!("{name} is listed by the API"))?;
    Ok(format!("tr[data-principal-id=\"{id}\"]"))
}

/// Whether `token` is accepted on the admin API.
async fn token_works(gw: &Keygate, token: &str) -> Result<bool> {
    let r = gw
        .http
        .get(format!("{}/v1/whoami", gw.admin))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(r.status() == 200)
}

/// The owner on People, Audit and Org settings; hands out the team's tokens.
async fn owner_pages(gw: &Keygate, b: &Browser) -> Result<Team> {
    use reqwest::Method;
    b.sign_in(&gw.admin, &gw.token).await?;

    // People: add one of each role, the token shown once; every role is on offer.
    b.click("#nav-people").await?;
    b.css("#people-card:not([hidden])").await?;
    b.click("#new-person").await?;
    let roles = b
        .js(
            "return Array.from(document.querySelectorAll('#p-role option')).map(o => o.value)",
            vec![],
        )
        .await?;
    ensure!(
        roles == json!(["owner", "admin", "manager", "viewer", "verifier"]),
        "{roles}"
    );
    b.select("#p-role", "admin").await?;
    ensure!(
        b.css("#p-api").await?.prop("checked").await?.as_deref() == Some("true"),
        "administrators have API access by default"
    );
    b.click("#person-cancel").await?;
    let admin = add_person(b, "Ada Admin", "admin", true).await?;
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("people-token.png").await?;
    b.click("#dismiss-secret").await?;
    let manager = add_person(b, "Max Manager", "manager", false).await?;
    b.click("#dismiss-secret").await?;
    let idle_manager = add_person(b, "Mo Manager", "manager", false).await?;
    b.click("#dismiss-secret").await?;
    let viewer = add_person(b, "Vi Viewer", "viewer", false).await?;
    b.click("#dismiss-secret").await?;
    let temp = add_person(b, "Temp Person", "viewer", false).await?;
    b.click("#dismiss-secret").await?;
    let verifier = add_person(b, "Ver Ifier", "verifier", false).await?;
    b.click("#dismiss-secret").await?;
    for t in [&admin, &manager, &idle_manager, &viewer, &temp, &verifier] {
        ensure!(token_works(gw, t).await?, "a token from the page works");
    }
    let (_, mo) = gw.admin_call(Method::GET, "/v1/principals", None).await?;
    let mo = mo["data"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "Mo Manager"))
        .cloned()
        .context("Mo is listed")?;
    ensure!(
        mo["role"] == "manager" && mo["orgs"] == json!(["acme"]) && mo["api_access"] == false,
        "{mo}"
    );

    // Disable stops a token at once, enable brings it back; delete is for good.
    let temp_row = person_row(gw, "Temp Person").await?;
    b.click(&format!("{temp_row} button[data-action=\"disable\"]"))
        .await?;
    b.text_contains("#confirm-dialog", "stops working").await?;
    b.click("#confirm-ok").await?;
    b.until(
        "the row shows disabled",
        &format!("const r = document.querySelector('{temp_row}'); return !!r && r.dataset.disabled === 'true'"),
    )
    .await?;
    ensure!(
        !token_works(gw, &temp).await?,
        "a disabled person's token is refused"
    );
    b.click(&format!("{temp_row} button[data-action=\"enable\"]"))
        .await?;
    b.until(
        "the row shows enabled",
        &format!("const r = document.querySelector('{temp_row}'); return !!r && r.dataset.disabled === 'false'"),
    )
    .await?;
    ensure!(token_works(gw, &temp).await?, "enabled again");
    b.click(&format!("{temp_row} button[data-action=\"delete\"]"))
        .await?;
    b.click("#confirm-ok").await?;
    b.until(
        "the deleted person's row is gone",
        &format!("return document.querySelector('{temp_row}') === null"),
    )
    .await?;
    ensure!(
        !token_works(gw, &temp).await?,
        "a deleted person's token is refused"
    );
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("people.png").await?;
    b.accessible("the People page").await?;

    // Audit: paginated, filtered by key and by actor.
    b.click("#nav-audit").await?;
    b.css("#audit-card:not([hidden])").await?;
    b.text_contains("#audit-body", "key.create").await?;
    ensure!(
        b.count("#audit-body tr").await? == 50,
        "a first page of 50 events"
    );
    b.click("#audit-more").await?;
    b.until(
        "a second page",
        "return document.querySelectorAll('#audit-body tr').length > 50",
    )
    .await?;
    let (_, keys) = gw
        .admin_call(Method::GET, "/v1/orgs/acme/keys?limit=200", None)
        .await?;
    let quota_id = keys["data"]
        .as_array()
        .and_then(|all| all.iter().find(|k| k["name"] == "quota-demo"))
        .and_then(|k| k["id"].as_str())
        .context("quota-demo listed")?
        .to_string();
    b.fill("#audit-key", &quota_id).await?;
    b.click("#audit-apply").await?;
    b.until(
        "only the key's events",
        "const rows = Array.from(document.querySelectorAll('#audit-body tr')); \
         return rows.length === 1 && rows[0].dataset.action === 'key.create'",
    )
    .await?;
    b.click("#audit-clear").await?;
    // By actor: Ada has done nothing yet; the owner did everything so far.
    let ada = person_row(gw, "Ada Admin").await?;
    let ada_id = ada.split('"').nth(1).context("Ada's id")?.to_string();
    b.select("#audit-actor", &ada_id).await?;
    b.click("#audit-apply").await?;
    b.text_contains("#audit-empty", "No audit events match")
        .await?;
    let (_, me) = gw.admin_call(Method::GET, "/v1/whoami", None).await?;
    let owner_id = me["principal"]["id"].as_str().context("owner id")?;
    b.select("#audit-actor", owner_id).await?;
    b.click("#audit-apply").await?;
    b.until(
        "only the owner's events",
        &format!(
            "const rows = Array.from(document.querySelectorAll('#audit-body tr')); \
             return rows.length > 0 && rows.every(r => r.dataset.actor === '{owner_id}')"
        ),
    )
    .await?;
    // A malformed filter is refused with the server's message naming the field.
    b.select("#audit-actor", "").await?;
    b.fill("#audit-key", "not-a-key").await?;
    b.click("#audit-apply").await?;
    b.text_contains("#banner", "key").await?;
    b.fill("#audit-key", "").await?;
    b.click("#audit-apply").await?;
    b.text_contains("#audit-body", "principal.create").await?;
    b.click("#banner-close").await?;
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("audit.png").await?;
    b.accessible("the Audit page").await?;

    // Org settings: key policy, key lifetime and org rate limits.
    b.click("#nav-org").await?;
    b.css("#org-card:not([hidden])").await?;
    ensure!(
        b.css("#o-name").await?.prop("value").await?.as_deref() == Some("Acme Corp"),
        "the form shows the org"
    );
    b.click("input[name=\"key_policy\"][value=\"creator\"]")
        .await?;
    b.fill("#o-lifetime", "0").await?;
    b.click("#org-submit").await?;
    b.text_contains("#org-form-error", "max_key_lifetime_days")
        .await?;
    b.fill("#o-lifetime", "400").await?;
    b.fill("#o-per_day", "1000").await?;
    b.fill("#o-per_minute", "120").await?;
    b.click("#org-submit").await?;
    b.text_contains("#banner", "saved").await?;
    let (_, org) = gw.admin_call(Method::GET, "/v1/orgs/acme", None).await?;
    ensure!(org["key_policy"] == "creator", "{org}");
    ensure!(org["max_key_lifetime_days"] == 400, "{org}");
    ensure!(
        org["rate_limit"] == json!({"per_minute": 120, "per_day": 1000}),
        "{org}"
    );
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("org-settings.png").await?;
    b.accessible("the Org settings page").await?;
    // Back to defaults: clearing a box removes the setting.
    b.click("input[name=\"key_policy\"][value=\"org\"]").await?;
    b.fill("#o-lifetime", "").await?;
    b.fill("#o-per_minute", "").await?;
    b.click("#org-submit").await?;
    b.until(
        "the org is saved",
        "return document.getElementById('banner-text').textContent.includes('saved')",
    )
    .await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, org) = gw.admin_call(Method::GET, "/v1/orgs/acme", None).await?;
        if org["key_policy"] == "org"
            && org["max_key_lifetime_days"].is_null()
            && org["rate_limit"] == json!({"per_day": 1000})
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("org settings were not cleared: {org}");
        }
        tokio::time::sleep(POLL).await;
    }
    // A new organisation: a bad id is refused naming the field; then the page moves to it.
    b.click("#org-new").await?;
    b.fill("#on-id", "Not An Id").await?;
    b.fill("#on-name", "Beta Ltd").await?;
    b.click("#org-new-submit").await?;
    let err = b.text_contains("#org-new-error", "Field: id").await?;
    ensure!(!err.is_empty());
    b.fill("#on-id", "beta").await?;
    b.click("#org-new-submit").await?;
    b.until(
        "the new org is chosen",
        "return document.getElementById('org-select').value === 'beta'",
    )
    .await?;
    b.text_contains("#org-settings-subtitle", "beta").await?;
    let (s, beta) = gw.admin_call(Method::GET, "/v1/orgs/beta", None).await?;
    ensure!(s == 200 && beta["name"] == "Beta Ltd", "{s} {beta}");
    b.no_csp_violations().await?;
    Ok(Team {
        admin,
        manager,
        idle_manager,
        viewer,
        verifier,
    })
}

/// What the keys page offers a role: (create, edit, regenerate, revoke, delete).
async fn key_buttons(b: &Browser) -> Result<[bool; 5]> {
    b.css("#keys-body tr").await?;
    let mut out = [false; 5];
    out[0] = b.visible("#new-key").await?;
    for (i, action) in ["edit", "regenerate", "revoke", "delete"]
        .iter()
        .enumerate()
    {
        out[i + 1] = b
            .count(&format!("#keys-body button[data-action=\"{action}\"]"))
            .await?
            > 0;
    }
    Ok(out)
}

/// An admin grants a manager API access; it may offer only manager and viewer roles.
async fn admin_session(gw: &Keygate, b: &Browser, team: &Team) -> Result<()> {
    b.sign_in(&gw.admin, &team.admin).await?;
    ensure!(
        key_buttons(b).await? == [true; 5],
        "an admin may do every key job"
    );
    ensure!(!b.visible("#nav-org").await?, "org settings are for owners");
    b.click("#nav-people").await?;
    b.click("#new-person").await?;
    let roles = b
        .js(
            "return Array.from(document.querySelectorAll('#p-role option')).map(o => o.value)",
            vec![],
        )
        .await?;
    ensure!(roles == json!(["manager", "viewer", "verifier"]), "{roles}");
    let orgs = b
        .js(
            "return Array.from(document.querySelectorAll('#p-org-options input')).map(o => o.value)",
            vec![],
        )
        .await?;
    ensure!(orgs == json!(["acme"]), "{orgs}");
    b.click("#person-cancel").await?;
    let max = person_row(gw, "Max Manager").await?;
    b.click(&format!("{max} input[data-action=\"api-access\"]"))
        .await?;
    b.text_contains("#banner", "API access for “Max Manager” is now on")
        .await?;
    let (_, v) = gw
        .admin_call(reqwest::Method::GET, "/v1/principals", None)
        .await?;
    let granted = v["data"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "Max Manager"))
        .map(|p| p["api_access"].clone());
    ensure!(granted == Some(json!(true)), "{v}");
    // An admin sees no owner, cannot disable or delete itself, and manages managers.
    ensure!(
        b.count("tr[data-role=\"owner\"]").await? == 0,
        "owners are hidden"
    );
    ensure!(
        b.count("tr[data-role=\"admin\"] button[data-action=\"delete\"]")
            .await?
            == 0,
        "no delete on its own row"
    );
    let mo = person_row(gw, "Mo Manager").await?;
    b.css(&format!("{mo} button[data-action=\"disable\"]"))
        .await?;
    b.click("#nav-audit").await?;
    b.text_contains("#audit-body", "principal.update").await?;
    b.accessible("the admin's Audit page").await?;
    b.no_csp_violations().await
}

/// A manager with API access, using the keyboard only: creates a key; no revoke.
async fn manager_session(gw: &Keygate, b: &Browser, team: &Team) -> Result<()> {
    b.open(&gw.admin).await?;
    b.css("#token").await?.click().await?;
    b.keys(&format!("{}{ENTER}", team.manager)).await?;
    b.css("#session:not([hidden])").await?;
    ensure!(
        key_buttons(b).await? == [true, true, true, false, false],
        "a manager creates, edits and regenerates, and never revokes or deletes"
    );
    for nav in ["#nav-people", "#nav-audit", "#nav-org"] {
        ensure!(!b.visible(nav).await?, "{nav} is hidden from a manager");
    }
    // Keyboard only: Tab to "Create API key", Enter, type, Enter.
    b.tab_to("#new-key").await?;
    b.keys(ENTER).await?;
    b.until(
        "the create dialog has the focus in its name field",
        "return document.activeElement === document.getElementById('f-name')",
    )
    .await?;
    b.keys(&format!("keyboard-made{ENTER}")).await?;
    let secret = b.secret_from_panel().await?;
    let (s, _) = gw.call_with(&secret, "/v1/feeds").await?;
    ensure!(s == 200, "the keyboard-made key works: {s}");
    b.tab_to("#dismiss-secret").await?;
    b.keys(ENTER).await?;
    b.until(
        "the secret panel is gone",
        "return document.getElementById('secret-panel') === null",
    )
    .await?;
    // Escape closes a dialog.
    b.tab_to("#new-key").await?;
    b.keys(ENTER).await?;
    b.css("#key-dialog[open]").await?;
    b.keys("\u{E00C}").await?;
    b.until(
        "the dialog closed",
        "return !document.getElementById('key-dialog').open",
    )
    .await?;
    b.accessible("the manager's API keys page").await?;
    b.no_csp_violations().await
}

/// A manager without API access reads keys and is told why it cannot change them.
async fn idle_manager_session(gw: &Keygate, b: &Browser, team: &Team) -> Result<()> {
    b.sign_in(&gw.admin, &team.idle_manager).await?;
    let why = b.text_contains("#access-notice", "api_access").await?;
    ensure!(why.contains("administrator"), "{why}");
    ensure!(key_buttons(b).await? == [false; 5], "read only");
    b.js("window.scrollTo(0, 0)", vec![]).await?;
    b.screenshot("manager-without-api-access.png").await?;
    b.accessible("the read-only API keys page").await?;
    b.no_csp_violations().await
}

/// A viewer sees no write button anywhere, and rotates its own token.
async fn viewer_session(gw: &Keygate, b: &Browser, team: &Team) -> Result<()> {
    b.sign_in(&gw.admin, &team.viewer).await?;
    ensure!(key_buttons(b).await? == [false; 5], "read only");
    b.click("#keys-body tr button[data-action=\"open\"]")
        .await?;
    b.css("#key-detail:not([hidden])").await?;
    b.text_contains("#detail-fields", "scopes").await?;
    ensure!(
        b.count("#detail-actions button").await? == 0,
        "no write button in the detail view"
    );
    b.text_contains("#detail-audit", "owners and admins")
        .await?;
    b.click("#detail-back").await?;
    b.click("#rotate-own").await?;
    b.click("#confirm-ok").await?;
    let fresh = token_from_panel(b).await?;
    ensure!(
        !token_works(gw, &team.viewer).await?,
        "the old token stops at once"
    );
    ensure!(token_works(gw, &fresh).await?, "the new token works");
    // The tab carries on with the new token.
    b.click("#dismiss-secret").await?;
    b.click("#refresh").await?;
    b.css("#keys-body tr").await?;
    ensure!(b.visible("#session").await?, "still signed in");
    b.no_csp_violations().await?;

    // A verifier's token opens nothing: the page says what it is for.
    b.click("#sign-out").await?;
    b.fill("#token", &team.verifier).await?;
    b.click("#sign-in-submit").await?;
    b.text_contains("#banner", "verifier").await?;
    ensure!(
        !b.visible("#session").await?,
        "a verifier is not signed in to the page"
    );
    b.no_csp_violations().await
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
