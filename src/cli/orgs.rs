//! `keygate orgs …`: create, list, show and edit orgs through the admin API
//! (`/v1/orgs`, owners only for create and edit). The admin API has no way to delete or
//! disable an org, so neither has this command.

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::args::{AFTER_HELP, AdminArgs, parse_rate_limit_edit, parse_rate_limit_set};
use super::client::{AdminClient, Body};
use super::error::CliError;
use super::output::{self, clean, emit};
use super::{block_on, connect, emit_raw};

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct OrgsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: OrgsCommand,
}

#[derive(Subcommand, Debug)]
pub enum OrgsCommand {
    /// Create an org (owner only).
    Create(OrgCreateArgs),
    /// List the orgs the admin token may see, by id.
    List,
    /// Show one org.
    Show {
        /// Org id.
        org: String,
    },
    /// Change an org's settings (owner only; unnamed settings stay).
    Edit(OrgEditArgs),
}

/// Who a key belongs to when its creator is disabled or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyPolicyArg {
    /// Keys keep working (the default).
    Org,
    /// Keys are suspended while their creator is disabled, for good once deleted.
    Creator,
}

impl KeyPolicyArg {
    fn as_str(self) -> &'static str {
        match self {
            KeyPolicyArg::Org => "org",
            KeyPolicyArg::Creator => "creator",
        }
    }
}

#[derive(Args, Debug)]
pub struct OrgCreateArgs {
    /// Org id: what key URLs and `--org` name (1 to 64 lowercase letters, digits, `-`
    /// or `_`, starting with a letter or digit).
    #[arg(long)]
    pub id: String,
    /// Name for people (1 to 100 characters).
    #[arg(long)]
    pub name: String,
    /// org (default) or creator.
    #[arg(long, value_enum)]
    pub key_policy: Option<KeyPolicyArg>,
    /// Every new key of the org expires within this many days.
    #[arg(long, value_name = "N")]
    pub max_key_lifetime_days: Option<u32>,
    /// A default rate-limit window for the org's keys, e.g. per_minute=600; repeatable.
    #[arg(long = "rate-limit", value_name = "WINDOW=N", value_parser = parse_rate_limit_set)]
    pub rate_limits: Vec<(String, u64)>,
}

#[derive(Args, Debug)]
pub struct OrgEditArgs {
    /// Org id.
    pub org: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// org or creator.
    #[arg(long, value_enum)]
    pub key_policy: Option<KeyPolicyArg>,
    /// Bound every new key's lifetime to this many days.
    #[arg(long, value_name = "N", conflicts_with = "no_max_key_lifetime")]
    pub max_key_lifetime_days: Option<u32>,
    /// Lift the bound on new keys' lifetime.
    #[arg(long)]
    pub no_max_key_lifetime: bool,
    /// Set a default window (per_minute=600) or drop it (per_minute=none); repeatable.
    #[arg(
        long = "rate-limit",
        value_name = "WINDOW=N|none",
        value_parser = parse_rate_limit_edit,
        conflicts_with = "no_rate_limit"
    )]
    pub rate_limits: Vec<(String, Option<u64>)>,
    /// Drop the org's rate limits (the global ones then apply).
    #[arg(long)]
    pub no_rate_limit: bool,
}

/// Runs one `keygate orgs …` command.
pub fn run(args: OrgsArgs) -> std::process::ExitCode {
    block_on(execute(args))
}

async fn execute(args: OrgsArgs) -> Result<(), CliError> {
    let client = connect(&args.admin)?;
    let json = args.admin.json;
    match args.command {
        OrgsCommand::Create(a) => create(&client, json, &a).await,
        OrgsCommand::List => list(&client, json).await,
        OrgsCommand::Show { org } => show(&client, json, &org).await,
        OrgsCommand::Edit(a) => edit(&client, json, &a).await,
    }
}

/// The `POST /v1/orgs` body: only what was named.
pub fn create_body(a: &OrgCreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("id".into(), json!(a.id));
    body.insert("name".into(), json!(a.name));
    if let Some(p) = a.key_policy {
        body.insert("key_policy".into(), json!(p.as_str()));
    }
    if let Some(d) = a.max_key_lifetime_days {
        body.insert("max_key_lifetime_days".into(), json!(d));
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

/// The merge patch of `orgs edit`: only what was named; `None` when nothing was.
pub fn edit_patch(a: &OrgEditArgs) -> Option<Value> {
    let mut p = Map::new();
    if let Some(n) = &a.name {
        p.insert("name".into(), json!(n));
    }
    if let Some(k) = a.key_policy {
        p.insert("key_policy".into(), json!(k.as_str()));
    }
    if let Some(d) = a.max_key_lifetime_days {
        p.insert("max_key_lifetime_days".into(), json!(d));
    }
    if a.no_max_key_lifetime {
        p.insert("max_key_lifetime_days".into(), Value::Null);
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
    (!p.is_empty()).then_some(Value::Object(p))
}

fn org_url(client: &AdminClient, org: Option<&str>) -> reqwest::Url {
    match org {
        Some(o) => client.url(&["v1", "orgs", o], &[]),
        None => client.url(&["v1", "orgs"], &[]),
    }
}

async fn create(client: &AdminClient, json: bool, a: &OrgCreateArgs) -> Result<(), CliError> {
    let answer = client
        .send(
            Method::POST,
            org_url(client, None),
            Some(Body::Json(create_body(a))),
            HeaderMap::new(),
        )
        .await?;
    if json {
        return emit_raw(&answer);
    }
    let v = answer.json("create")?;
    emit(&format!(
        "Created org {}.\n\n{}",
        clean(&a.id),
        output::org_details(&v)
    ))
}

async fn list(client: &AdminClient, json: bool) -> Result<(), CliError> {
    let answer = client
        .send(Method::GET, org_url(client, None), None, HeaderMap::new())
        .await?;
    if json {
        return emit_raw(&answer);
    }
    let v = answer.json("list")?;
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
        CliError::BadResponse("the admin API's org list has no `data` array".into())
    })?;
    if data.is_empty() {
        return emit("No orgs (or none this admin token may see).\n");
    }
    emit(&output::org_table(data))
}

async fn show(client: &AdminClient, json: bool, org: &str) -> Result<(), CliError> {
    let answer = client
        .send(
            Method::GET,
            org_url(client, Some(org)),
            None,
            HeaderMap::new(),
        )
        .await?;
    if json {
        return emit_raw(&answer);
    }
    emit(&output::org_details(&answer.json("show")?))
}

async fn edit(client: &AdminClient, json: bool, a: &OrgEditArgs) -> Result<(), CliError> {
    let patch = edit_patch(a).ok_or_else(|| {
        CliError::usage(
            "nothing to change: name at least one of --name, --key-policy, \
             --max-key-lifetime-days, --no-max-key-lifetime, --rate-limit or --no-rate-limit",
        )
    })?;
    let answer = client
        .send(
            Method::PATCH,
            org_url(client, Some(&a.org)),
            Some(Body::MergePatch(patch)),
            HeaderMap::new(),
        )
        .await?;
    if json {
        return emit_raw(&answer);
    }
    let v = answer.json("edit")?;
    emit(&format!(
        "Updated org {}.\n\n{}",
        clean(&a.org),
        output::org_details(&v)
    ))
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
        Orgs(OrgsArgs),
    }

    fn parse(args: &[&str]) -> Result<OrgsCommand, clap::Error> {
        let mut argv = vec!["keygate", "orgs"];
        argv.extend_from_slice(args);
        Top::try_parse_from(argv).map(|t| match t.cmd {
            Cmd::Orgs(o) => o.command,
        })
    }

    #[test]
    fn bodies_hold_only_what_was_named() {
        type Case<'a> = (&'a [&'a str], Option<Value>);
        let creates: &[Case] = &[
            (
                &["create", "--id", "acme", "--name", "Acme"],
                Some(json!({"id": "acme", "name": "Acme"})),
            ),
            (
                &[
                    "create",
                    "--id",
                    "acme",
                    "--name",
                    "Acme",
                    "--key-policy",
                    "creator",
                    "--max-key-lifetime-days",
                    "90",
                    "--rate-limit",
                    "per_day=1000",
                ],
                Some(
                    json!({"id": "acme", "name": "Acme", "key_policy": "creator",
                            "max_key_lifetime_days": 90, "rate_limit": {"per_day": 1000}}),
                ),
            ),
            (&["create", "--id", "acme"], None),
            (
                &[
                    "create",
                    "--id",
                    "a",
                    "--name",
                    "A",
                    "--key-policy",
                    "nobody",
                ],
                None,
            ),
        ];
        for (args, want) in creates {
            let got = parse(args).ok().map(|c| match c {
                OrgsCommand::Create(a) => create_body(&a),
                other => panic!("{other:?}"),
            });
            assert_eq!(&got, want, "{args:?}");
        }
        let edits: &[Case] = &[
            (&["edit", "acme"], None),
            (
                &["edit", "acme", "--name", "Acme 2", "--no-max-key-lifetime"],
                Some(json!({"name": "Acme 2", "max_key_lifetime_days": null})),
            ),
            (
                &[
                    "edit",
                    "acme",
                    "--rate-limit",
                    "per_day=none",
                    "--rate-limit",
                    "per_minute=5",
                ],
                Some(json!({"rate_limit": {"per_day": null, "per_minute": 5}})),
            ),
            (
                &["edit", "acme", "--no-rate-limit"],
                Some(json!({"rate_limit": null})),
            ),
        ];
        for (args, want) in edits {
            let got = match parse(args).unwrap() {
                OrgsCommand::Edit(a) => edit_patch(&a),
                other => panic!("{other:?}"),
            };
            assert_eq!(&got, want, "{args:?}");
        }
        for conflicting in [
            &[
                "edit",
                "a",
                "--max-key-lifetime-days",
                "3",
                "--no-max-key-lifetime",
            ][..],
            &["edit", "a", "--rate-limit", "per_day=1", "--no-rate-limit"][..],
        ] {
            assert!(parse(conflicting).is_err(), "{conflicting:?}");
        }
    }
}
