//! `keygate keys …`, `keygate orgs …` and `keygate principals …`: clients of the admin
//! API (docs/admin-api.md) for one org's keys, for orgs, and for admin principals.
//!
//! # Layout
//!
//! - [`args`]: the command line of `keys` and the options all three share (clap types
//!   and single-value checks); the `keys` commands are in this file.
//! - [`orgs`], [`principals`]: their command lines and commands.
//! - [`client`]: the admin API's URL and token, one request → one answer or error.
//! - [`output`]: tables and details for people; `--json` prints the server's JSON as is.
//! - [`error`]: the one error type and its exit codes (1 refused, 2 usage, 3 unreachable).
//!
//! This module only talks to the admin API; it never opens the store or reads the
//! gateway's config, so it works against a remote keygate just as against a local one.
//! It never prints or logs the admin token it uses, and prints a key's secret or a
//! principal's token only from the answer that creates it, once.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

pub mod args;
pub mod client;
pub mod error;
pub mod orgs;
pub mod output;
pub mod principals;

pub use args::KeysArgs;
use args::{CreateArgs, EditArgs, FormatArg, GranularityArg, KeysCommand, ListArgs, UsageArgs};
use client::{AdminClient, AdminToken, Body};
use error::CliError;
pub use orgs::OrgsArgs;
use output::{clean, emit};
pub use principals::PrincipalsArgs;

/// Pages `list --all` reads at most; at the admin API's largest page that is two million
/// keys, far beyond any org, so only a server bug could reach it.
const MAX_PAGES: usize = 10_000;

/// Runs one `keygate keys …` command; errors are printed on stderr and turned into the
/// exit code.
pub fn run(args: KeysArgs) -> ExitCode {
    block_on(execute(args))
}

/// What every command needs: the client, the org, and whether to print JSON.
struct Session {
    client: AdminClient,
    org: String,
    json: bool,
}

impl Session {
    /// `/v1/orgs/{org}/keys/…`
    fn keys_url(&self, rest: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut segments = vec!["v1", "orgs", self.org.as_str(), "keys"];
        segments.extend_from_slice(rest);
        self.client.url(&segments, query)
    }
}

async fn execute(args: KeysArgs) -> Result<(), CliError> {
    let g = args.global;
    let org = match g.org.as_deref().map(str::trim) {
        Some(o) if !o.is_empty() => o.to_string(),
        _ => {
            return Err(CliError::usage("no org: pass --org ORG or set KEYGATE_ORG"));
        }
    };
    let s = Session {
        client: connect(&g.admin)?,
        org,
        json: g.admin.json,
    };
    match args.command {
        KeysCommand::Create(a) => create(&s, a).await,
        KeysCommand::List(a) => list(&s, a).await,
        KeysCommand::Show { id } => show(&s, &id).await,
        KeysCommand::Edit(a) => edit(&s, a).await,
        KeysCommand::Revoke { id } => revoke(&s, &id).await,
        KeysCommand::Regenerate { id, grace_seconds } => regenerate(&s, &id, grace_seconds).await,
        KeysCommand::Delete { id, yes } => delete(&s, &id, yes).await,
        KeysCommand::Usage(a) => usage(&s, a).await,
    }
}

/// The admin API client the global options describe.
fn connect(a: &args::AdminArgs) -> Result<AdminClient, CliError> {
    let base = client::parse_base_url(&a.admin_url)?;
    let token = AdminToken::load(a.admin_token_file.as_deref())?;
    AdminClient::new(base, &token)
}

/// Runs `future` on a single-threaded runtime; errors are printed on stderr and turned
/// into the exit code.
fn block_on(future: impl std::future::Future<Output = Result<(), CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

/// The server's bytes as they came, on one line of their own.
fn emit_raw(answer: &client::Answer) -> Result<(), CliError> {
    let mut text = String::from_utf8_lossy(&answer.body).into_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    emit(&text)
}

/// The `POST …/keys` body. Lists the user did not name are left out (unrestricted).
pub fn create_body(a: &CreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(a.name));
    body.insert("scopes".into(), json!(a.scopes));
    if let Some(d) = &a.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(e) = a.environment {
        body.insert("environment".into(), json!(e.as_str()));
    }
    for (field, list) in [
        ("resources", &a.resources),
        ("endpoints", &a.endpoints),
        ("ip_allow", &a.ip_allow),
    ] {
        if !list.is_empty() {
            body.insert(field.into(), json!(list));
        }
    }
    if let Some(d) = a.expires_in_days {
        body.insert("expires_in_days".into(), json!(d));
    }
    if let Some(t) = &a.expires_at {
        body.insert("expires_at".into(), json!(t));
    }
    if !a.rate_limits.is_empty() {
        let windows: Map<String, Value> = a
            .rate_limits
            .iter()
            .map(|(w, n)| (w.clone(), json!(n)))
            .collect();
        body.insert("rate_limit".into(), Value::Object(windows));
    }
    Value::Object(body)
}

async fn create(s: &Session, a: CreateArgs) -> Result<(), CliError> {
    let mut headers = HeaderMap::new();
    if let Some(k) = &a.idempotency_key {
        let value = HeaderValue::from_str(k)
            .map_err(|_| CliError::usage("--idempotency-key must be visible ASCII characters"))?;
        headers.insert(HeaderName::from_static("idempotency-key"), value);
    }
    let url = s.keys_url(&[], &[]);
    let answer = s
        .client
        .send(
            Method::POST,
            url,
            Some(Body::Json(create_body(&a))),
            headers,
        )
        .await?;
    if s.json {
        return emit_raw(&answer);
    }
    let v = answer.json("create")?;
    let headline = format!(
        "Created key {} in org {}.",
        v["key"]["id"].as_str().map(clean).unwrap_or_default(),
        clean(&s.org)
    );
    emit(&output::key_with_secret(&headline, &v)?)
}

async fn list(s: &Session, a: ListArgs) -> Result<(), CliError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(st) = a.status {
        query.push(("status", st.as_str().to_string()));
    }
    if let Some(l) = a.limit {
        query.push(("limit", l.to_string()));
    }
    let mut cursor = a.cursor.clone();
    let mut keys: Vec<Value> = Vec::new();
    let mut next: Option<String> = None;
    for page in 0..MAX_PAGES {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let answer = s
            .client
            .send(Method::GET, s.keys_url(&[], &q), None, HeaderMap::new())
            .await?;
        if s.json && !a.all {
            return emit_raw(&answer);
        }
        let v = answer.json("list")?;
        let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
            CliError::BadResponse("the admin API's key list has no `data` array".into())
        })?;
        keys.extend(data.iter().cloned());
        next = v
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        if !a.all || next.is_none() {
            break;
        }
        if next == cursor {
            return Err(CliError::BadResponse(
                "the admin API returned the same next_cursor twice; stopping".into(),
            ));
        }
        if page + 1 == MAX_PAGES {
            return Err(CliError::BadResponse(format!(
                "stopped after {MAX_PAGES} pages"
            )));
        }
        cursor = next.clone();
    }
    if s.json {
        let all = json!({ "data": keys, "next_cursor": null });
        return emit(&format!("{all}\n"));
    }
    if keys.is_empty() {
        let what = a.status.map(|st| format!("{} ", st.as_str()));
        emit(&format!(
            "No {}keys in org {}.\n",
            what.unwrap_or_default(),
            clean(&s.org)
        ))?;
    } else {
        emit(&output::key_table(&keys))?;
    }
    if let Some(c) = next {
        eprintln!(
            "More keys: run again with --all, or with --cursor {}",
            clean(&c)
        );
    }
    Ok(())
}

async fn get_key(s: &Session, id: &str) -> Result<client::Answer, CliError> {
    s.client
        .send(Method::GET, s.keys_url(&[id], &[]), None, HeaderMap::new())
        .await
}

async fn show(s: &Session, id: &str) -> Result<(), CliError> {
    let answer = get_key(s, id).await?;
    if s.json {
        return emit_raw(&answer);
    }
    emit(&output::key_details(&answer.json("show")?))
}

/// The merge patch of `edit`: only what was named. `None` when nothing was.
pub fn edit_patch(a: &EditArgs) -> Option<Value> {
    let mut p = Map::new();
    if let Some(n) = &a.name {
        p.insert("name".into(), json!(n));
    }
    if let Some(d) = &a.description {
        p.insert("description".into(), json!(d));
    }
    if a.no_description {
        p.insert("description".into(), Value::Null);
    }
    if !a.scopes.is_empty() {
        p.insert("scopes".into(), json!(a.scopes));
    }
    for (field, list, lift) in [
        ("resources", &a.resources, a.no_resources),
        ("endpoints", &a.endpoints, a.no_endpoints),
        ("ip_allow", &a.ip_allow, a.no_ip_allow),
    ] {
        if lift {
            p.insert(field.into(), Value::Null);
        } else if !list.is_empty() {
            p.insert(field.into(), json!(list));
        }
    }
    if a.no_rate_limit {
        p.insert("rate_limit".into(), Value::Null);
    } else if !a.rate_limits.is_empty() {
        let windows: Map<String, Value> = a
            .rate_limits
            .iter()
            .map(|(w, n)| (w.clone(), json!(n)))
            .collect();
        p.insert("rate_limit".into(), Value::Object(windows));
    }
    if let Some(t) = &a.expires_at {
        p.insert("expires_at".into(), json!(t));
    }
    if let Some(d) = a.expires_in_days {
        p.insert("expires_in_days".into(), json!(d));
    }
    if a.no_expiry {
        p.insert("expires_at".into(), Value::Null);
    }
    (!p.is_empty()).then_some(Value::Object(p))
}

async fn edit(s: &Session, a: EditArgs) -> Result<(), CliError> {
    let patch = edit_patch(&a).ok_or_else(|| {
        CliError::usage(
            "nothing to change: name at least one of --name, --description, --scope, \
             --resource, --endpoint, --ip, --rate-limit, --expires-at, --expires-in-days \
             or a --no-… option",
        )
    })?;
    let answer = s
        .client
        .send(
            Method::PATCH,
            s.keys_url(&[&a.id], &[]),
            Some(Body::MergePatch(patch)),
            HeaderMap::new(),
        )
        .await?;
    if s.json {
        return emit_raw(&answer);
    }
    let v = answer.json("edit")?;
    emit(&format!(
        "Updated key {}.\n\n{}",
        clean(&a.id),
        output::key_details(&v)
    ))
}

async fn revoke(s: &Session, id: &str) -> Result<(), CliError> {
    let answer = s
        .client
        .send(
            Method::POST,
            s.keys_url(&[id, "revoke"], &[]),
            None,
            HeaderMap::new(),
        )
        .await?;
    if s.json {
        return emit_raw(&answer);
    }
    let v = answer.json("revoke")?;
    emit(&format!(
        "Revoked key {}: it no longer authenticates, and stays listed as revoked.\n\n{}",
        clean(id),
        output::key_details(&v)
    ))
}

async fn regenerate(s: &Session, id: &str, grace: Option<u64>) -> Result<(), CliError> {
    let body = match grace {
        Some(g) => json!({ "grace_seconds": g }),
        None => json!({}),
    };
    let answer = s
        .client
        .send(
            Method::POST,
            s.keys_url(&[id, "regenerate"], &[]),
            Some(Body::Json(body)),
            HeaderMap::new(),
        )
        .await?;
    if s.json {
        return emit_raw(&answer);
    }
    let v = answer.json("regenerate")?;
    let previous = match v["key"]["grace_ends_at"].as_str() {
        Some(t) => format!(
            "The previous secret keeps working until {}.",
            output::precise_time(t)
        ),
        None => "The previous secret no longer works.".to_string(),
    };
    let headline = format!("Regenerated key {}. {previous}", clean(id));
    emit(&output::key_with_secret(&headline, &v)?)
}

async fn delete(s: &Session, id: &str, yes: bool) -> Result<(), CliError> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(format!(
                "refusing to delete key {} without --yes: stdin is not a terminal, so no one \
                 can confirm",
                clean(id)
            )));
        }
        // Show what is about to go, and fail early on a wrong id.
        let key = get_key(s, id).await?.json("show")?;
        let question = format!(
            "Delete key {} \"{}\" ({}, {}) from org {}? It stops working at once. [y/N] ",
            clean(id),
            key["name"].as_str().map(clean).unwrap_or_default(),
            key["prefix"].as_str().map(clean).unwrap_or_default(),
            key["status"].as_str().map(clean).unwrap_or_default(),
            clean(&s.org),
        );
        if !confirm(&question)? {
            return Err(CliError::Cancelled);
        }
    }
    s.client
        .send(
            Method::DELETE,
            s.keys_url(&[id], &[]),
            None,
            HeaderMap::new(),
        )
        .await?;
    if s.json {
        // The admin API answers 204 with no body; scripts still get an object to read.
        return emit(&format!(
            "{}\n",
            json!({ "id": id, "org": s.org, "deleted": true })
        ));
    }
    emit(&format!(
        "Deleted key {} from org {}: it no longer authenticates and is gone from \
         listings and `keys show`; `keygate keys usage {}` still reads its usage.\n",
        clean(id),
        clean(&s.org),
        clean(id)
    ))
}

/// Asks on stderr, reads one line from stdin: `y` or `yes` confirms.
pub(crate) fn confirm(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(question.as_bytes());
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Io(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn usage(s: &Session, a: UsageArgs) -> Result<(), CliError> {
    if s.json && a.format == Some(FormatArg::Csv) {
        return Err(CliError::usage(
            "--json and --format csv ask for two formats; give one",
        ));
    }
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(f) = &a.from {
        query.push(("from", f.clone()));
    }
    if let Some(t) = &a.to {
        query.push(("to", t.clone()));
    }
    if let Some(g) = a.granularity {
        let g = match g {
            GranularityArg::Hour => "hour",
            GranularityArg::Day => "day",
        };
        query.push(("granularity", g.into()));
    }
    if let Some(f) = a.format {
        let f = match f {
            FormatArg::Json => "json",
            FormatArg::Csv => "csv",
        };
        query.push(("format", f.into()));
    }
    let url = s.keys_url(&[&a.id, "usage"], &query);
    let answer = match s
        .client
        .send(Method::GET, url, None, HeaderMap::new())
        .await
    {
        Ok(answer) => answer,
        Err(CliError::Refused(mut r)) if r.status == 404 => {
            // A 404 is either "no such key" or a server without the usage endpoint;
            // reading the key tells them apart.
            if get_key(s, &a.id).await.is_ok() {
                r.hint = Some(format!(
                    "key {} exists, so the admin API at {} does not serve key usage \
                     (GET /v1/orgs/{{org}}/keys/{{id}}/usage): this keygate server does not \
                     provide usage reports yet",
                    clean(&a.id),
                    s.client.shown_base()
                ));
            }
            return Err(CliError::Refused(r));
        }
        Err(e) => return Err(e),
    };
    if s.json || a.format == Some(FormatArg::Csv) {
        return emit_raw(&answer);
    }
    let v = answer.json("usage")?;
    emit(&output::usage_report(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(clap::Subcommand)]
    enum Cmd {
        Keys(KeysArgs),
    }

    fn parse(args: &[&str]) -> Result<KeysArgs, clap::Error> {
        let mut argv = vec!["keygate", "keys"];
        argv.extend_from_slice(args);
        Top::try_parse_from(argv).map(|t| match t.cmd {
            Cmd::Keys(k) => k,
        })
    }

    #[test]
    fn create_sends_only_what_was_named() {
        let a = parse(&[
            "create",
            "--name",
            "ci",
            "--scope",
            "read,write",
            "--resource",
            "feed:*",
            "--resource",
            "flow:abc",
            "--rate-limit",
            "per_minute=600",
            "--expires-in-days",
            "30",
            "--org",
            "acme",
        ])
        .unwrap();
        assert_eq!(a.global.org.as_deref(), Some("acme"));
        let KeysCommand::Create(c) = a.command else {
            panic!()
        };
        assert_eq!(
            create_body(&c),
            json!({
                "name": "ci", "scopes": ["read", "write"], "resources": ["feed:*", "flow:abc"],
                "rate_limit": {"per_minute": 600}, "expires_in_days": 30
            })
        );
    }

    #[test]
    fn create_refuses_two_expiries_and_needs_a_scope() {
        assert!(parse(&["create", "--name", "x"]).is_err());
        assert!(
            parse(&[
                "create",
                "--name",
                "x",
                "--scope",
                "read",
                "--expires-in-days",
                "3",
                "--expires-at",
                "2030-01-01T00:00:00Z"
            ])
            .is_err()
        );
    }

    #[test]
    fn edit_is_a_merge_patch_of_what_was_named() {
        let edit = |args: &[&str]| {
            let mut all = vec!["edit", "key_1"];
            all.extend_from_slice(args);
            match parse(&all).unwrap().command {
                KeysCommand::Edit(e) => edit_patch(&e),
                _ => panic!(),
            }
        };
        assert_eq!(edit(&[]), None);
        assert_eq!(
            edit(&["--no-resources", "--scope", "read", "--no-expiry"]),
            Some(json!({"resources": null, "scopes": ["read"], "expires_at": null}))
        );
        assert_eq!(
            edit(&[
                "--rate-limit",
                "per_minute=10",
                "--rate-limit",
                "per_day=none",
                "--ip",
                "10.0.0.0/8",
                "--no-description"
            ]),
            Some(json!({
                "rate_limit": {"per_minute": 10, "per_day": null},
                "ip_allow": ["10.0.0.0/8"], "description": null
            }))
        );
        assert!(parse(&["edit", "key_1", "--resource", "feed:*", "--no-resources"]).is_err());
        assert!(parse(&["edit", "key_1", "--expires-in-days", "3", "--no-expiry"]).is_err());
    }

    #[test]
    fn there_is_no_token_option() {
        let e = parse(&["list", "--admin-token", "kga_x"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(parse(&["list", "--admin-token-file", "/tmp/t", "--json"]).is_ok());
        assert!(parse(&["--json", "--org", "a", "show", "key_1"]).is_ok());
    }
}
