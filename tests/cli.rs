//! `keygate keys …`, `keygate orgs …` and `keygate principals …` against the real
//! binary: the gateway of tests/common (plain HTTP, org `acme`, a recording upstream),
//! then each subcommand run as a child process with `KEYGATE_ADMIN_URL` /
//! `KEYGATE_ADMIN_TOKEN` (and `KEYGATE_ORG` for `keys`) set.
//!
//! Every run checks that the admin token appears in neither stdout nor stderr.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// A running gateway and the CLI pointed at its admin API.
struct Cli {
    env: Env,
    admin_url: String,
    token: String,
}

impl Cli {
    async fn start() -> Cli {
        let env = Env::start_with(|b| b.plain()).await;
        let admin_url = env.gw.admin_url("");
        let token = env.gw.admin_token.clone();
        assert!(token.starts_with("kga_"));
        Cli {
            env,
            admin_url,
            token,
        }
    }

    fn token_file(&self) -> PathBuf {
        self.env.gw.token_file()
    }

    /// `keygate keys ARGS` with the contract's env vars set to this gateway and org `acme`.
    fn keys(&self, args: &[&str]) -> Out {
        self.keys_with(
            args,
            &[
                ("KEYGATE_ADMIN_URL", &self.admin_url),
                ("KEYGATE_ADMIN_TOKEN", &self.token),
                ("KEYGATE_ORG", ORG),
            ],
        )
    }

    fn keys_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_with("keys", args, env)
    }

    /// `keygate orgs ARGS` as this gateway's owner.
    fn orgs(&self, args: &[&str]) -> Out {
        self.as_owner("orgs", args)
    }

    /// `keygate principals ARGS` as this gateway's owner.
    fn principals(&self, args: &[&str]) -> Out {
        self.as_owner("principals", args)
    }

    fn as_owner(&self, command: &str, args: &[&str]) -> Out {
        self.run_with(
            command,
            args,
            &[
                ("KEYGATE_ADMIN_URL", &self.admin_url),
                ("KEYGATE_ADMIN_TOKEN", &self.token),
            ],
        )
    }

    fn run_with(&self, command: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = cli_cmd(command, args, env);
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains(&self.token),
                "admin token printed by {command} {args:?}"
            );
        }
        out
    }

    /// Status of a data-plane `POST /v1/feeds/abc/refresh` (scope write, resource
    /// `feed:abc`) with this bearer token: 200 when the upstream was reached.
    async fn data_plane_status(&self, key: &str) -> u16 {
        self.env
            .gw
            .call("POST", "/v1/feeds/abc/refresh", Some(key))
            .await
            .status
    }

    /// Status of `GET /v1/orgs` on the admin API with this admin token.
    async fn admin_status(&self, token: &str) -> u16 {
        self.env
            .gw
            .admin_call_as(token, "GET", "/v1/orgs", None)
            .await
            .status
    }
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

/// Runs `keygate COMMAND ARGS` with only the given KEYGATE_* variables and stdin not a
/// terminal.
fn cli_cmd(command: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg(command).args(args).stdin(Stdio::null());
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

fn keys_cmd(args: &[&str], env: &[(&str, &str)]) -> Out {
    cli_cmd("keys", args, env)
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

#[tokio::test]
async fn keys_lifecycle_through_the_cli() {
    let gw = Cli::start().await;

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
    // The printed secret is the real one: it passes authorization and reaches the upstream.
    assert_eq!(gw.data_plane_status(&live_secret).await, 200);

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
    assert_eq!(gw.data_plane_status(&live_secret).await, 401);
    assert_eq!(gw.data_plane_status(&secrets[0]).await, 200);
    // With a grace period both work until grace_ends_at.
    let previous = secrets[0].clone();
    let v = gw
        .keys(&["regenerate", &live, "--grace-seconds", "600", "--json"])
        .ok()
        .json();
    assert!(v["key"]["grace_ends_at"].is_string(), "{v}");
    let newest = v["secret"].as_str().unwrap().to_string();
    assert_eq!(gw.data_plane_status(&previous).await, 200);
    assert_eq!(gw.data_plane_status(&newest).await, 200);
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
    assert_eq!(gw.data_plane_status(&newest).await, 200);
    let out = gw.keys(&["delete", &live, "--yes"]).ok();
    assert!(out.stdout.contains("Deleted key"), "{}", out.stdout);
    assert_eq!(gw.data_plane_status(&newest).await, 401);
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

#[tokio::test]
async fn tokens_urls_and_orgs_are_checked() {
    let gw = Cli::start().await;
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
    let url = format!("http://127.0.0.1:{}", upstream::dead_port());
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

/// Every admin token (`kga_…`) in `text`.
fn admin_tokens_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("kga_") && w.len() > 20)
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn orgs_through_the_cli() {
    let gw = Cli::start().await;

    // create: details as a person reads them; --json: the server's JSON as is.
    let out = gw
        .orgs(&[
            "create",
            "--id",
            "globex",
            "--name",
            "Globex",
            "--key-policy",
            "creator",
            "--max-key-lifetime-days",
            "90",
            "--rate-limit",
            "per_day=1000",
        ])
        .ok();
    assert!(out.stdout.contains("Created org globex"), "{}", out.stdout);
    for part in ["creator", "90", "per_day=1000"] {
        assert!(out.stdout.contains(part), "{part}: {}", out.stdout);
    }
    let v = gw
        .orgs(&["create", "--json", "--id", "initech", "--name", "Initech"])
        .ok()
        .json();
    assert_eq!(v["id"], "initech");
    assert_eq!(v["key_policy"], "org");
    // The id is taken: the server's 409, exit 1.
    let out = gw
        .orgs(&["create", "--id", "globex", "--name", "Again"])
        .fails(1);
    assert!(out.stderr.contains("HTTP 409 org_exists"), "{}", out.stderr);
    // A bad value is the server's 422 naming the field.
    let out = gw
        .orgs(&["create", "--id", "Bad Id", "--name", "x"])
        .fails(1);
    assert!(out.stderr.contains("field: id"), "{}", out.stderr);

    // list: every org the owner sees, by id.
    let out = gw.orgs(&["list"]).ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "NAME", "KEY POLICY", "MAX KEY DAYS", "RATE LIMIT"] {
        assert!(header.contains(col), "{header}");
    }
    let listed: Vec<String> = gw.orgs(&["list", "--json"]).ok().json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![ORG, "globex", "initech"]);

    // show and edit: a merge patch of what was named.
    let out = gw.orgs(&["show", "globex"]).ok();
    assert!(out.stdout.contains("Globex"), "{}", out.stdout);
    let out = gw
        .orgs(&[
            "edit",
            "globex",
            "--name",
            "Globex Corp",
            "--no-max-key-lifetime",
            "--rate-limit",
            "per_day=none",
            "--rate-limit",
            "per_minute=60",
        ])
        .ok();
    assert!(out.stdout.contains("Updated org globex"), "{}", out.stdout);
    let v = gw.orgs(&["show", "globex", "--json"]).ok().json();
    assert_eq!(v["name"], "Globex Corp");
    assert_eq!(v["key_policy"], "creator");
    assert!(v["max_key_lifetime_days"].is_null(), "{v}");
    assert_eq!(v["rate_limit"]["per_minute"], 60, "{v}");
    assert!(v["rate_limit"]["per_day"].is_null(), "{v}");
    let out = gw.orgs(&["edit", "globex"]).fails(2);
    assert!(out.stderr.contains("nothing to change"), "{}", out.stderr);
    let out = gw.orgs(&["show", "nobody"]).fails(1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);

    // An org made here takes keys like any other.
    let out = gw
        .keys(&[
            "create", "--org", "globex", "--name", "k", "--scope", "read",
        ])
        .ok();
    assert_eq!(secrets_in(&out.stdout).len(), 1, "{}", out.stdout);
}

#[tokio::test]
async fn principals_through_the_cli() {
    let gw = Cli::start().await;

    // create: the token printed once, set apart; it works on the admin API.
    let out = gw
        .principals(&[
            "create",
            "--name",
            "acme admin",
            "--role",
            "admin",
            "--org",
            ORG,
        ])
        .ok();
    let tokens = admin_tokens_in(&out.stdout);
    assert_eq!(tokens.len(), 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("shown only this once"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Created principal prn_"),
        "{}",
        out.stdout
    );
    let admin_token = tokens[0].clone();
    let admin_id = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("prn_"))
        .map(|w| w.to_string())
        .unwrap();
    assert_eq!(gw.admin_status(&admin_token).await, 200);

    // --json: {principal, token}; a manager with API access.
    let v = gw
        .principals(&[
            "create",
            "--json",
            "--name",
            "ci",
            "--role",
            "manager",
            "--org",
            ORG,
            "--api-access",
        ])
        .ok()
        .json();
    let manager = v["principal"]["id"].as_str().unwrap().to_string();
    let manager_token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["principal"]["api_access"], true);
    assert_eq!(v["principal"]["orgs"], json!([ORG]));
    // An owner without --org holds every org.
    let v = gw
        .principals(&["create", "--json", "--name", "ops", "--role", "owner"])
        .ok()
        .json();
    assert_eq!(v["principal"]["orgs"], "*");
    // Refusals are the server's, field named.
    let out = gw
        .principals(&["create", "--name", "x", "--role", "admin"])
        .fails(1);
    assert!(out.stderr.contains("field: orgs"), "{}", out.stderr);
    let out = gw
        .principals(&["create", "--name", "x", "--role", "emperor", "--org", ORG])
        .fails(1);
    assert!(out.stderr.contains("HTTP 422"), "{}", out.stderr);

    // list and show: never a token.
    let out = gw.principals(&["list"]).ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "NAME", "ROLE", "ORGS", "API ACCESS", "DISABLED"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.stdout.contains(&admin_id) && out.stdout.contains(&manager));
    assert!(admin_tokens_in(&out.stdout).is_empty(), "{}", out.stdout);
    let out = gw.principals(&["show", &manager]).ok();
    assert!(out.stdout.contains("manager"), "{}", out.stdout);
    assert!(admin_tokens_in(&out.stdout).is_empty(), "{}", out.stdout);

    // edit: name and API access.
    let v = gw
        .principals(&[
            "edit",
            &manager,
            "--name",
            "ci bot",
            "--no-api-access",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["name"], "ci bot");
    assert_eq!(v["api_access"], false);
    gw.principals(&["edit", &manager]).fails(2);

    // disable: the token stops; enable: it works again.
    let out = gw.principals(&["disable", &admin_id]).ok();
    assert!(out.stdout.contains("Disabled principal"), "{}", out.stdout);
    assert_eq!(gw.admin_status(&admin_token).await, 401);
    let v = gw.principals(&["enable", &admin_id, "--json"]).ok().json();
    assert_eq!(v["disabled"], false);
    assert_eq!(gw.admin_status(&admin_token).await, 200);
    // Nobody disables itself: the server's 409.
    let me = gw.principals(&["list", "--json"]).ok().json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "owner" && p["name"] != "ops")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .unwrap();
    let out = gw.principals(&["disable", &me]).fails(1);
    assert!(out.stderr.contains("self_lockout"), "{}", out.stderr);

    // rotate-token: a new token once; the old one stops at once.
    let out = gw.principals(&["rotate-token", &admin_id]).ok();
    let rotated = admin_tokens_in(&out.stdout);
    assert_eq!(rotated.len(), 1, "{}", out.stdout);
    assert_ne!(rotated[0], admin_token);
    assert!(out.stdout.contains("no longer works"), "{}", out.stdout);
    assert_eq!(gw.admin_status(&admin_token).await, 401);
    assert_eq!(gw.admin_status(&rotated[0]).await, 200);

    // delete: refused without --yes when stdin is not a terminal; then the token stops.
    let out = gw.principals(&["delete", &manager]).fails(2);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(gw.admin_status(&manager_token).await, 200);
    let v = gw
        .principals(&["delete", &manager, "--yes", "--json"])
        .ok()
        .json();
    assert_eq!(v["deleted"], true);
    assert_eq!(gw.admin_status(&manager_token).await, 401);
    let out = gw.principals(&["show", &manager]).fails(1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);

    // No token on the command line; a principal's own token file works.
    gw.principals(&["list", "--admin-token", "kga_x"]).fails(2);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{}\n", rotated[0])).unwrap();
    let out = cli_cmd(
        "principals",
        &[
            "list",
            "--admin-token-file",
            file.path().to_str().unwrap(),
            "--json",
        ],
        &[("KEYGATE_ADMIN_URL", &gw.admin_url)],
    )
    .ok();
    assert!(!out.stdout.contains(&rotated[0]));
    // An admin sees only principals within its orgs (and itself).
    let seen = out.json()["data"].as_array().unwrap().len();
    assert!(seen >= 1, "{}", out.stdout);
}
