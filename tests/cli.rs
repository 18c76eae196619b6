//! `keygate keys …` (SPEC §7) against the real binary: a `keygate serve` on free
//! loopback ports with an embedded store in a tempdir, then each subcommand run as a
//! child process with `KEYGATE_ADMIN_URL` / `KEYGATE_ADMIN_TOKEN` / `KEYGATE_ORG` set.
//!
//! Every run checks that the admin token appears in neither stdout nor stderr.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
/// How long a gateway may take to become ready on a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `keygate serve`, killed on drop.
struct Gateway {
    child: Child,
    dir: tempfile::TempDir,
    admin_url: String,
    data_url: String,
    token: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (data, admin) = (free_port(), free_port());
        let d = dir.path().display();
        // The upstream is a closed port: a key that passes authorization gets 502.
        let config = format!(
            r#"listen:
  address: 127.0.0.1:{data}
  tls: none
admin:
  address: 127.0.0.1:{admin}
  bootstrap_token_file: {d}/admin-token
store:
  backend: embedded
  path: {d}/keygate.db
upstreams:
  feeds: {{ url: "http://127.0.0.1:{closed}" }}
routes:
  - {{ name: list-feeds, methods: [GET], path: /v1/feeds, upstream: feeds, scope: read }}
  - name: refresh-feed
    methods: [POST]
    path: "/v1/feeds/{{feed_id}}/refresh"
    upstream: feeds
    scope: write
    resource: "feed:{{feed_id}}"
"#,
            closed = free_port()
        );
        let config_path = dir.path().join("keygate.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child,
            admin_url: format!("http://127.0.0.1:{admin}"),
            data_url: format!("http://127.0.0.1:{data}"),
            dir,
            token: String::new(),
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("keygate serve exited with {status}:\n{}", gw.log());
            }
            if http("GET", &format!("{}/readyz", gw.admin_url), None, None).0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in {READY_WITHIN:?}:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gw.token = std::fs::read_to_string(gw.token_file())
            .unwrap()
            .trim()
            .to_string();
        assert!(gw.token.starts_with("kga_"));
        gw
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("admin-token")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn create_org(&self, id: &str) {
        let (status, body) = http(
            "POST",
            &format!("{}/v1/orgs", self.admin_url),
            Some(&self.token),
            Some(json!({ "id": id, "name": id })),
        );
        assert_eq!(status, 201, "{body}");
    }

    /// `keygate keys ARGS` with the contract's env vars set to this gateway and org `acme`.
    fn keys(&self, args: &[&str]) -> Out {
        self.keys_with(
            args,
            &[
                ("KEYGATE_ADMIN_URL", &self.admin_url),
                ("KEYGATE_ADMIN_TOKEN", &self.token),
                ("KEYGATE_ORG", "acme"),
            ],
        )
    }

    fn keys_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = keys_cmd(args, env);
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains(&self.token),
                "admin token printed by keys {args:?}"
            );
        }
        out
    }

    /// Status of a data-plane `POST /v1/feeds/abc/refresh` (scope write, resource
    /// `feed:abc`) with this bearer token.
    fn data_plane_status(&self, key: &str) -> u16 {
        let url = format!("{}/v1/feeds/abc/refresh", self.data_url);
        let (status, _) = http("POST", &url, Some(key), None);
        status
    }
}

/// One HTTP exchange on loopback (reqwest on a runtime of its own).
fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(_) => (0, Value::Null),
        }
    })
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn fails(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `keygate keys ARGS` with only the given KEYGATE_* variables and stdin not a
/// terminal.
fn keys_cmd(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg("keys").args(args).stdin(Stdio::null());
    for var in [
        "KEYGATE_ADMIN_URL",
        "KEYGATE_ADMIN_TOKEN",
        "KEYGATE_ORG",
        "KEYGATE_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Every API key (`kg_live_…`, `kg_test_…`, 40 body characters) in `text`.
fn secrets_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| (w.starts_with("kg_live_") || w.starts_with("kg_test_")) && w.len() == 8 + 40)
        .map(str::to_string)
        .collect()
}

/// The `key_…` id in `Created key key_… in org …`.
fn created_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .map(|w| w.trim_end_matches('.').to_string())
        .unwrap_or_else(|| panic!("no key id in:\n{stdout}"))
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn keys_lifecycle_through_the_cli() {
    let gw = Gateway::start();
    gw.create_org("acme");

    // create: details, then the secret once, set apart with its warning.
    let out = gw
        .keys(&[
            "create",
            "--name",
            "ci deploy",
            "--scope",
            "read",
            "--scope",
            "write",
            "--description",
            "deploy bot",
            "--resource",
            "feed:abc",
            "--rate-limit",
            "per_minute=600",
        ])
        .ok();
    let secrets = secrets_in(&out.stdout);
    assert_eq!(secrets.len(), 1, "{}", out.stdout);
    assert_eq!(out.stdout.matches(&secrets[0]).count(), 1);
    assert!(
        out.stdout.contains("shown only this once"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("feed:abc"), "{}", out.stdout);
    let live = created_id(&out.stdout);
    let live_secret = secrets[0].clone();
    assert!(live_secret.starts_with("kg_live_"));
    // The printed secret is the real one: it passes authorization (502: no upstream).
    assert_eq!(gw.data_plane_status(&live_secret), 502);

    // create --json: the server's JSON as is, the secret in it only.
    let out = gw
        .keys(&[
            "create",
            "--json",
            "--name",
            "sandbox",
            "--scope",
            "read",
            "--environment",
            "test",
            "--expires-in-days",
            "30",
            "--ip",
            "10.0.0.0/8",
        ])
        .ok();
    let v = out.json();
    let test_id = v["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["key"]["environment"], "test");
    assert!(v["key"]["expires_at"].is_string());
    assert_eq!(v["key"]["ip_allow"], json!(["10.0.0.0/8"]));
    assert!(v["secret"].as_str().unwrap().starts_with("kg_test_"));
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    // list: table and JSON, newest first.
    let out = gw.keys(&["list"]).ok();
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap();
    for col in [
        "ID",
        "NAME",
        "PREFIX",
        "SCOPES",
        "STATUS",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.stdout.contains(&live) && out.stdout.contains(&test_id));
    assert!(out.stdout.contains("ci deploy") && out.stdout.contains("read,write"));
    assert!(secrets_in(&out.stdout).is_empty());
    let all = gw.keys(&["list", "--json"]).ok().json();
    assert_eq!(ids(&all), vec![test_id.clone(), live.clone()]);
    assert!(all["next_cursor"].is_null());

    // Paging: one page says there is more; --all follows next_cursor.
    let out = gw.keys(&["list", "--limit", "1"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
    let paged = gw
        .keys(&["list", "--limit", "1", "--all", "--json"])
        .ok()
        .json();
    assert_eq!(ids(&paged), vec![test_id.clone(), live.clone()]);

    // show: every field, never the secret.
    let out = gw.keys(&["show", &live]).ok();
    for part in [
        "ci deploy",
        "deploy bot",
        "feed:abc",
        "per_minute=600",
        "any (unrestricted)",
    ] {
        assert!(out.stdout.contains(part), "{part}: {}", out.stdout);
    }
    assert!(secrets_in(&out.stdout).is_empty());
    let shown = gw.keys(&["show", &live, "--json"]).ok().json();
    assert_eq!(shown["resources"], json!(["feed:abc"]));
    assert!(shown.get("secret").is_none());

    // edit: a merge patch; --no-resources lifts the restriction, the rest stays.
    let out = gw
        .keys(&["edit", &live, "--no-resources", "--name", "ci deploy 2"])
        .ok();
    assert!(out.stdout.contains("Updated key"), "{}", out.stdout);
    let shown = gw.keys(&["show", &live, "--json"]).ok().json();
    assert!(shown["resources"].is_null(), "{shown}");
    assert_eq!(shown["name"], "ci deploy 2");
    assert_eq!(shown["description"], "deploy bot");
    assert_eq!(shown["rate_limit"], json!({"per_minute": 600}));
    // Nothing to change is a usage error; a bad value is the server's 422, field named.
    let out = gw.keys(&["edit", &live]).fails(2);
    assert!(out.stderr.contains("nothing to change"), "{}", out.stderr);
    let out = gw.keys(&["edit", &live, "--scope", "admin"]).fails(1);
    assert!(
        out.stderr.contains("HTTP 422 invalid_field"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("field: scopes"), "{}", out.stderr);

    // regenerate: a new secret, printed once; the old one stops at once.
    let out = gw.keys(&["regenerate", &live]).ok();
    let secrets = secrets_in(&out.stdout);
    assert_eq!(secrets.len(), 1, "{}", out.stdout);
    assert_ne!(secrets[0], live_secret);
    assert!(out.stdout.contains("no longer works"), "{}", out.stdout);
    assert_eq!(gw.data_plane_status(&live_secret), 401);
    assert_eq!(gw.data_plane_status(&secrets[0]), 502);
    // With a grace period both work until grace_ends_at.
    let previous = secrets[0].clone();
    let v = gw
        .keys(&["regenerate", &live, "--grace-seconds", "600", "--json"])
        .ok()
        .json();
    assert!(v["key"]["grace_ends_at"].is_string(), "{v}");
    let newest = v["secret"].as_str().unwrap().to_string();
    assert_eq!(gw.data_plane_status(&previous), 502);
    assert_eq!(gw.data_plane_status(&newest), 502);
    let out = gw
        .keys(&["regenerate", &live, "--grace-seconds", "999999"])
        .fails(1);
    assert!(
        out.stderr.contains("field: grace_seconds"),
        "{}",
        out.stderr
    );

    // revoke: immediate, idempotent, listed as revoked; final for edits.
    let out = gw.keys(&["revoke", &test_id]).ok();
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    let v = gw.keys(&["revoke", &test_id, "--json"]).ok().json();
    assert_eq!(v["status"], "revoked");
    let revoked = gw
        .keys(&["list", "--status", "revoked", "--json"])
        .ok()
        .json();
    assert_eq!(ids(&revoked), vec![test_id.clone()]);
    let active = gw
        .keys(&["list", "--status", "active", "--json"])
        .ok()
        .json();
    assert_eq!(ids(&active), vec![live.clone()]);
    let out = gw.keys(&["list", "--status", "suspended"]).ok();
    assert!(out.stdout.contains("No suspended keys"), "{}", out.stdout);
    let out = gw.keys(&["edit", &test_id, "--name", "x"]).fails(1);
    assert!(
        out.stderr.contains("HTTP 409 key_not_editable"),
        "{}",
        out.stderr
    );

    // An Idempotency-Key used twice: 409 naming the first key.
    let create = [
        "create",
        "--name",
        "once",
        "--scope",
        "read",
        "--idempotency-key",
        "abc-1",
        "--json",
    ];
    let first = gw.keys(&create).ok().json();
    let out = gw.keys(&create).fails(1);
    assert!(
        out.stderr.contains("idempotency_key_reused"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(first["key"]["id"].as_str().unwrap()),
        "{}",
        out.stderr
    );

    // delete: refused without --yes when stdin is not a terminal; then done.
    let out = gw.keys(&["delete", &live]).fails(2);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(gw.data_plane_status(&newest), 502);
    let out = gw.keys(&["delete", &live, "--yes"]).ok();
    assert!(out.stdout.contains("Deleted key"), "{}", out.stdout);
    assert_eq!(gw.data_plane_status(&newest), 401);
    let listed = gw.keys(&["list", "--json", "--all"]).ok().json();
    assert!(!ids(&listed).contains(&live));
    // SPEC §1: a deleted key is gone from the admin API (404), its usage stays readable.
    let out = gw.keys(&["show", &live, "--json"]).fails(1);
    assert!(out.stderr.contains("HTTP 404 not_found"), "{}", out.stderr);
    let out = gw.keys(&["delete", &live, "--yes", "--json"]).fails(1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);

    // usage: served for the deleted key too (issue 5); an unknown key is the server's 404.
    let v = gw
        .keys(&["usage", &live, "--granularity", "day", "--json"])
        .ok()
        .json();
    assert!(v["totals"]["requests"].is_u64(), "{v}");
    let out = gw.keys(&["usage", &live, "--format", "csv"]).ok();
    assert!(
        out.stdout.starts_with("start,end,requests"),
        "{}",
        out.stdout
    );
    let out = gw.keys(&["usage", "key_nope"]).fails(1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("does not serve key usage"),
        "{}",
        out.stderr
    );
    gw.keys(&["usage", &live, "--format", "csv", "--json"])
        .fails(2);

    // Unknown key, unknown org: the server's 404, exit 1.
    let out = gw.keys(&["show", "key_nope"]).fails(1);
    assert!(out.stderr.contains("HTTP 404 not_found"), "{}", out.stderr);
    let out = gw.keys(&["list", "--org", "nobody"]).fails(1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);
}

#[test]
fn tokens_urls_and_orgs_are_checked() {
    let gw = Gateway::start();
    gw.create_org("acme");
    let url = gw.admin_url.as_str();

    // A wrong token: the server's 401, exit 1, never the token in the output.
    let wrong = "kga_wrongwrongwrongwrongwrongwrongwrong";
    let out = gw
        .keys_with(
            &["list"],
            &[
                ("KEYGATE_ADMIN_URL", url),
                ("KEYGATE_ADMIN_TOKEN", wrong),
                ("KEYGATE_ORG", "acme"),
            ],
        )
        .fails(1);
    assert!(
        out.stderr.contains("HTTP 401 invalid_admin_token"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("KEYGATE_ADMIN_TOKEN"), "{}", out.stderr);
    assert!(!out.stderr.contains(wrong) && !out.stdout.contains(wrong));

    // No token at all: a usage error naming both ways to give one.
    let out = gw
        .keys_with(
            &["list"],
            &[("KEYGATE_ADMIN_URL", url), ("KEYGATE_ORG", "acme")],
        )
        .fails(2);
    assert!(
        out.stderr.contains("KEYGATE_ADMIN_TOKEN") && out.stderr.contains("--admin-token-file"),
        "{}",
        out.stderr
    );

    // --admin-token-file works (the bootstrap file itself, with its newline).
    let file = gw.token_file();
    let file = file.to_str().unwrap();
    let out = gw
        .keys_with(
            &[
                "list",
                "--admin-token-file",
                file,
                "--org",
                "acme",
                "--admin-url",
                url,
            ],
            &[],
        )
        .ok();
    assert!(out.stdout.contains("No keys in org acme"), "{}", out.stdout);
    let out = gw
        .keys_with(
            &["list", "--admin-token-file", "/nonexistent/keygate-token"],
            &[("KEYGATE_ADMIN_URL", url), ("KEYGATE_ORG", "acme")],
        )
        .fails(2);
    assert!(
        out.stderr.contains("/nonexistent/keygate-token"),
        "{}",
        out.stderr
    );

    // The token is never taken on the command line.
    gw.keys(&["list", "--admin-token", "kga_x"]).fails(2);

    // No org: a usage error.
    let out = gw
        .keys_with(
            &["list"],
            &[
                ("KEYGATE_ADMIN_URL", url),
                ("KEYGATE_ADMIN_TOKEN", &gw.token),
            ],
        )
        .fails(2);
    assert!(out.stderr.contains("KEYGATE_ORG"), "{}", out.stderr);

    // clap's own usage errors exit 2 as well.
    gw.keys(&["create", "--name", "x"]).fails(2);
    gw.keys(&[
        "create",
        "--name",
        "x",
        "--scope",
        "read",
        "--rate-limit",
        "per_week=1",
    ])
    .fails(2);
    gw.keys(&["list", "--status", "bogus"]).fails(2);
}

#[test]
fn an_unreachable_admin_api_exits_3_naming_the_url() {
    // A port nothing listens on (bound, then released).
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = keys_cmd(
        &["list"],
        &[
            ("KEYGATE_ADMIN_URL", &url),
            ("KEYGATE_ADMIN_TOKEN", "kga_unreachable_test_token"),
            ("KEYGATE_ORG", "acme"),
        ],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains(&url), "{}", out.stderr);
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(!out.stderr.contains("kga_unreachable_test_token"));

    let out = keys_cmd(
        &["list"],
        &[
            ("KEYGATE_ADMIN_URL", "127.0.0.1:9090"),
            ("KEYGATE_ADMIN_TOKEN", "kga_x"),
            ("KEYGATE_ORG", "acme"),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("KEYGATE_ADMIN_URL"), "{}", out.stderr);
}
