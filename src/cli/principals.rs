//! `keygate principals …`: the people and programs that hold admin tokens, through the
//! admin API (`/v1/principals`, owners and admins). A new principal's token, and the one
//! `rotate-token` issues, is printed once; no command takes a token as an argument.

use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::args::{AFTER_HELP, AdminArgs};
use super::client::{AdminClient, Answer, Body};
use super::error::CliError;
use super::output::{self, clean, emit};
use super::{block_on, confirm, connect, emit_raw};

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct PrincipalsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(subcommand)]
    pub command: PrincipalsCommand,
}

#[derive(Subcommand, Debug)]
pub enum PrincipalsCommand {
    /// Create a principal; its admin token is printed once.
    Create(PrincipalCreateArgs),
    /// List the principals this admin token may see.
    List,
    /// Show one principal.
    Show {
        /// Principal id (prn_…).
        id: String,
    },
    /// Change a principal's name or API access (role and orgs are fixed).
    Edit(PrincipalEditArgs),
    /// Disable a principal: its token stops working until it is enabled again.
    Disable {
        /// Principal id (prn_…).
        id: String,
    },
    /// Enable a disabled principal.
    Enable {
        /// Principal id (prn_…).
        id: String,
    },
    /// Delete a principal: its token stops at once, for good.
    Delete {
        /// Principal id (prn_…).
        id: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Issue a new admin token for a principal (printed once); the old one stops at once.
    RotateToken {
        /// Principal id (prn_…).
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct PrincipalCreateArgs {
    /// Name (1 to 100 characters).
    #[arg(long)]
    pub name: String,
    /// owner (every org), admin, manager or viewer.
    #[arg(long, value_name = "ROLE")]
    pub role: String,
    /// An org the principal may act on; repeat or separate with commas. Owners hold
    /// every org and take none.
    #[arg(long = "org", value_name = "ORG", value_delimiter = ',')]
    pub orgs: Vec<String>,
    /// Managers: may create, edit and regenerate keys (otherwise read only).
    #[arg(long)]
    pub api_access: bool,
}

#[derive(Args, Debug)]
pub struct PrincipalEditArgs {
    /// Principal id (prn_…).
    pub id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// Grant API access.
    #[arg(long, conflicts_with = "no_api_access")]
    pub api_access: bool,
    /// Withdraw API access.
    #[arg(long)]
    pub no_api_access: bool,
}

/// Runs one `keygate principals …` command.
pub fn run(args: PrincipalsArgs) -> std::process::ExitCode {
    block_on(execute(args))
}

async fn execute(args: PrincipalsArgs) -> Result<(), CliError> {
    let client = connect(&args.admin)?;
    let s = Principals {
        client,
        json: args.admin.json,
    };
    match args.command {
        PrincipalsCommand::Create(a) => s.create(&a).await,
        PrincipalsCommand::List => s.list().await,
        PrincipalsCommand::Show { id } => s.show(&id).await,
        PrincipalsCommand::Edit(a) => {
            let patch = edit_patch(&a).ok_or_else(|| {
                CliError::usage(
                    "nothing to change: name at least one of --name, --api-access or \
                     --no-api-access (disable and enable are commands of their own)",
                )
            })?;
            s.patch(&a.id, patch, "Updated").await
        }
        PrincipalsCommand::Disable { id } => {
            s.patch(&id, json!({ "disabled": true }), "Disabled").await
        }
        PrincipalsCommand::Enable { id } => {
            s.patch(&id, json!({ "disabled": false }), "Enabled").await
        }
        PrincipalsCommand::Delete { id, yes } => s.delete(&id, yes).await,
        PrincipalsCommand::RotateToken { id } => s.rotate_token(&id).await,
    }
}

/// The `POST /v1/principals` body. An owner without `--org` holds every org (`"*"`).
pub fn create_body(a: &PrincipalCreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(a.name));
    body.insert("role".into(), json!(a.role));
    if a.orgs.is_empty() && a.role == "owner" {
        body.insert("orgs".into(), json!("*"));
    } else if !a.orgs.is_empty() {
        body.insert("orgs".into(), json!(a.orgs));
    }
    if a.api_access {
        body.insert("api_access".into(), json!(true));
    }
    Value::Object(body)
}

/// The merge patch of `principals edit`; `None` when nothing was named.
pub fn edit_patch(a: &PrincipalEditArgs) -> Option<Value> {
    let mut p = Map::new();
    if let Some(n) = &a.name {
        p.insert("name".into(), json!(n));
    }
    if a.api_access {
        p.insert("api_access".into(), json!(true));
    }
    if a.no_api_access {
        p.insert("api_access".into(), json!(false));
    }
    (!p.is_empty()).then_some(Value::Object(p))
}

struct Principals {
    client: AdminClient,
    json: bool,
}

impl Principals {
    fn url(&self, rest: &[&str]) -> reqwest::Url {
        let mut segments = vec!["v1", "principals"];
        segments.extend_from_slice(rest);
        self.client.url(&segments, &[])
    }

    async fn send(
        &self,
        method: Method,
        rest: &[&str],
        body: Option<Body>,
    ) -> Result<Answer, CliError> {
        self.client
            .send(method, self.url(rest), body, HeaderMap::new())
            .await
    }

    async fn create(&self, a: &PrincipalCreateArgs) -> Result<(), CliError> {
        let answer = self
            .send(Method::POST, &[], Some(Body::Json(create_body(a))))
            .await?;
        if self.json {
            return emit_raw(&answer);
        }
        let v = answer.json("create")?;
        let headline = format!(
            "Created principal {} ({}).",
            v["principal"]["id"].as_str().map(clean).unwrap_or_default(),
            v["principal"]["role"]
                .as_str()
                .map(clean)
                .unwrap_or_default()
        );
        emit(&output::principal_with_token(&headline, &v)?)
    }

    async fn list(&self) -> Result<(), CliError> {
        let answer = self.send(Method::GET, &[], None).await?;
        if self.json {
            return emit_raw(&answer);
        }
        let v = answer.json("list")?;
        let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
            CliError::BadResponse("the admin API's principal list has no `data` array".into())
        })?;
        emit(&output::principal_table(data))
    }

    async fn show(&self, id: &str) -> Result<(), CliError> {
        let answer = self.send(Method::GET, &[id], None).await?;
        if self.json {
            return emit_raw(&answer);
        }
        emit(&output::principal_details(&answer.json("show")?))
    }

    async fn patch(&self, id: &str, patch: Value, done: &str) -> Result<(), CliError> {
        let answer = self
            .send(Method::PATCH, &[id], Some(Body::MergePatch(patch)))
            .await?;
        if self.json {
            return emit_raw(&answer);
        }
        let v = answer.json("edit")?;
        emit(&format!(
            "{done} principal {}.\n\n{}",
            clean(id),
            output::principal_details(&v)
        ))
    }

    async fn delete(&self, id: &str, yes: bool) -> Result<(), CliError> {
        if !yes {
            if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(CliError::usage(format!(
                    "refusing to delete principal {} without --yes: stdin is not a terminal, \
                     so no one can confirm",
                    clean(id)
                )));
            }
            let p = self.send(Method::GET, &[id], None).await?.json("show")?;
            let question = format!(
                "Delete principal {} \"{}\" ({})? Its admin token stops working for good. [y/N] ",
                clean(id),
                p["name"].as_str().map(clean).unwrap_or_default(),
                p["role"].as_str().map(clean).unwrap_or_default(),
            );
            if !confirm(&question)? {
                return Err(CliError::Cancelled);
            }
        }
        self.send(Method::DELETE, &[id], None).await?;
        if self.json {
            // 204 has no body; scripts still get an object to read.
            return emit(&format!("{}\n", json!({ "id": id, "deleted": true })));
        }
        emit(&format!(
            "Deleted principal {}: its admin token no longer works.\n",
            clean(id)
        ))
    }

    async fn rotate_token(&self, id: &str) -> Result<(), CliError> {
        let answer = self
            .send(
                Method::POST,
                &[id, "rotate-token"],
                Some(Body::Json(json!({}))),
            )
            .await?;
        if self.json {
            return emit_raw(&answer);
        }
        let v = answer.json("rotate-token")?;
        let headline = format!(
            "New admin token for principal {}. The previous token no longer works.",
            clean(id)
        );
        emit(&output::principal_with_token(&headline, &v)?)
    }
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
        Principals(PrincipalsArgs),
    }

    fn parse(args: &[&str]) -> Result<PrincipalsCommand, clap::Error> {
        let mut argv = vec!["keygate", "principals"];
        argv.extend_from_slice(args);
        Top::try_parse_from(argv).map(|t| match t.cmd {
            Cmd::Principals(p) => p.command,
        })
    }

    #[test]
    fn bodies_hold_only_what_was_named() {
        let create = |args: &[&str]| match parse(args).unwrap() {
            PrincipalsCommand::Create(a) => create_body(&a),
            other => panic!("{other:?}"),
        };
        let cases = [
            (
                &["create", "--name", "ops", "--role", "owner"][..],
                json!({"name": "ops", "role": "owner", "orgs": "*"}),
            ),
            (
                &[
                    "create",
                    "--name",
                    "ci",
                    "--role",
                    "manager",
                    "--org",
                    "a,b",
                    "--api-access",
                ][..],
                json!({"name": "ci", "role": "manager", "orgs": ["a", "b"], "api_access": true}),
            ),
            // No org for an admin: the server's 422 names the field.
            (
                &["create", "--name", "x", "--role", "admin"][..],
                json!({"name": "x", "role": "admin"}),
            ),
        ];
        for (args, want) in cases {
            assert_eq!(create(args), want, "{args:?}");
        }
        let edit = |args: &[&str]| match parse(args).unwrap() {
            PrincipalsCommand::Edit(a) => edit_patch(&a),
            other => panic!("{other:?}"),
        };
        assert_eq!(edit(&["edit", "prn_1"]), None);
        assert_eq!(
            edit(&["edit", "prn_1", "--name", "n", "--no-api-access"]),
            Some(json!({"name": "n", "api_access": false}))
        );
        assert!(parse(&["edit", "prn_1", "--api-access", "--no-api-access"]).is_err());
        assert!(parse(&["create", "--name", "x"]).is_err());
        // No token on the command line, anywhere.
        assert!(parse(&["rotate-token", "prn_1", "--token", "kga_x"]).is_err());
        assert!(parse(&["list", "--admin-token", "kga_x"]).is_err());
    }
}
