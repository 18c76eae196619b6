//! The command line of `keygate keys …` (clap types; `orgs` and `principals` keep theirs
//! in their own files), and the checks clap runs on single
//! values (`--rate-limit`, `--expires-at`), so that a bad value is a usage error (exit 2)
//! naming the option before any request is made.
//!
//! There is deliberately no option for the admin token: a command line is visible to
//! every user of the machine (`ps`). The token comes from `KEYGATE_ADMIN_TOKEN` or
//! `--admin-token-file`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Where the admin API is when neither `--admin-url` nor `KEYGATE_ADMIN_URL` says.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// The rate-limit windows of SPEC §3.
pub const WINDOWS: &[&str] = &[
    "per_second",
    "per_minute",
    "per_hour",
    "per_day",
    "per_month",
];

/// Help heading of the options every subcommand takes.
pub(super) const GLOBAL: &str = "Global options";

pub(super) const AFTER_HELP: &str = "\
The admin token is read from KEYGATE_ADMIN_TOKEN, or from the file named by
--admin-token-file (never from the command line, where `ps` would show it).
On first start `keygate serve` writes the owner's token to data/admin-token.

Exit codes: 0 done, 1 the admin API refused (its error code, message and field are
printed on stderr), 2 usage error, 3 the admin API could not be reached.";

#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct KeysArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Options every `keys` subcommand takes: where the admin API is, and the org.
#[derive(Args, Debug)]
pub struct GlobalArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The org whose keys to manage (required).
    #[arg(
        long,
        env = "KEYGATE_ORG",
        global = true,
        value_name = "ORG",
        help_heading = GLOBAL
    )]
    pub org: Option<String>,
}

/// Options every `keys`, `orgs` and `principals` subcommand takes.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "KEYGATE_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL,
        global = true,
        value_name = "URL",
        help_heading = GLOBAL
    )]
    pub admin_url: String,
    /// Read the admin token from FILE (otherwise from KEYGATE_ADMIN_TOKEN).
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub admin_token_file: Option<PathBuf>,
    /// Print the admin API's JSON as it came, for scripts.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create(CreateArgs),
    /// List the org's keys, newest first (deleted keys are left out).
    List(ListArgs),
    /// Show one key (a deleted key is 404).
    Show {
        /// Key id (key_…).
        id: String,
    },
    /// Change a key's settings (sent as a JSON Merge Patch; unnamed settings stay).
    Edit(EditArgs),
    /// Revoke a key: at once, for good. It stays listed with status revoked.
    Revoke {
        /// Key id (key_…).
        id: String,
    },
    /// Issue a new secret for a key (same id and settings); printed once.
    Regenerate {
        /// Key id (key_…).
        id: String,
        /// Keep the previous secret working for this long (at most 604800, 7 days).
        #[arg(long, value_name = "N")]
        grace_seconds: Option<u64>,
    },
    /// Delete a key: it stops at once and leaves listings and `show`; its usage stays readable.
    Delete {
        /// Key id (key_…).
        id: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// A key's usage: totals, series, top routes and resources.
    Usage(UsageArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnvironmentArg {
    Live,
    Test,
}

impl EnvironmentArg {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentArg::Live => "live",
            EnvironmentArg::Test => "test",
        }
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name (1 to 100 characters).
    #[arg(long)]
    pub name: String,
    /// A scope the key holds; repeat or separate with commas (e.g. --scope read,write).
    #[arg(
        long = "scope",
        value_name = "SCOPE",
        required = true,
        value_delimiter = ','
    )]
    pub scopes: Vec<String>,
    /// Free text for people.
    #[arg(long)]
    pub description: Option<String>,
    /// live (default) or test.
    #[arg(long, value_enum)]
    pub environment: Option<EnvironmentArg>,
    /// Restrict the key to these resources (type:id or type:*); repeatable.
    #[arg(long = "resource", value_name = "PATTERN", value_delimiter = ',')]
    pub resources: Vec<String>,
    /// Restrict the key to these routes, by route name; repeatable.
    #[arg(long = "endpoint", value_name = "NAME", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Restrict the key to client addresses in these CIDRs; repeatable.
    #[arg(long = "ip", value_name = "CIDR", value_delimiter = ',')]
    pub ip_allow: Vec<String>,
    /// Expire this many days from now.
    #[arg(long, value_name = "N", conflicts_with = "expires_at")]
    pub expires_in_days: Option<u32>,
    /// Expire at this time (RFC 3339, e.g. 2030-01-31T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp)]
    pub expires_at: Option<String>,
    /// A rate-limit window of the key, e.g. per_minute=600; repeatable.
    #[arg(long = "rate-limit", value_name = "WINDOW=N", value_parser = parse_rate_limit_set)]
    pub rate_limits: Vec<(String, u64)>,
    /// Sent as the Idempotency-Key header: a retry with the same value creates no
    /// second key (the admin API answers 409 with the first key's id).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Active,
    Revoked,
    Expired,
    Suspended,
}

impl StatusArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusArg::Active => "active",
            StatusArg::Revoked => "revoked",
            StatusArg::Expired => "expired",
            StatusArg::Suspended => "suspended",
        }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only keys with this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Keys per page (the admin API allows 1 to 200; default 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Follow next_cursor and list every page (with --json: one object holding them all).
    #[arg(long)]
    pub all: bool,
    /// Start after this cursor (the next_cursor of an earlier page).
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub cursor: Option<String>,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    /// Key id (key_…).
    pub id: String,
    /// New name (1 to 100 characters).
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long, conflicts_with = "no_description")]
    pub description: Option<String>,
    /// Remove the description.
    #[arg(long)]
    pub no_description: bool,
    /// Replace the key's scopes with these; repeatable.
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Replace the key's resources with these; repeatable.
    #[arg(
        long = "resource",
        value_name = "PATTERN",
        value_delimiter = ',',
        conflicts_with = "no_resources"
    )]
    pub resources: Vec<String>,
    /// Lift the resource restriction (the key may call any resource its scopes allow).
    #[arg(long)]
    pub no_resources: bool,
    /// Replace the key's endpoints with these route names; repeatable.
    #[arg(
        long = "endpoint",
        value_name = "NAME",
        value_delimiter = ',',
        conflicts_with = "no_endpoints"
    )]
    pub endpoints: Vec<String>,
    /// Lift the endpoint restriction.
    #[arg(long)]
    pub no_endpoints: bool,
    /// Replace the key's allowed CIDRs with these; repeatable.
    #[arg(
        long = "ip",
        value_name = "CIDR",
        value_delimiter = ',',
        conflicts_with = "no_ip_allow"
    )]
    pub ip_allow: Vec<String>,
    /// Lift the IP restriction.
    #[arg(long)]
    pub no_ip_allow: bool,
    /// Set a rate-limit window (per_minute=600) or drop it (per_minute=none); repeatable.
    #[arg(
        long = "rate-limit",
        value_name = "WINDOW=N|none",
        value_parser = parse_rate_limit_edit,
        conflicts_with = "no_rate_limit"
    )]
    pub rate_limits: Vec<(String, Option<u64>)>,
    /// Drop the key's own rate limits (the org's and global ones then apply).
    #[arg(long)]
    pub no_rate_limit: bool,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_timestamp,
          conflicts_with_all = ["expires_in_days", "no_expiry"])]
    pub expires_at: Option<String>,
    /// Expire this many days from now.
    #[arg(long, value_name = "N", conflicts_with = "no_expiry")]
    pub expires_in_days: Option<u32>,
    /// Never expire (refused when the org sets max_key_lifetime_days).
    #[arg(long)]
    pub no_expiry: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    Hour,
    Day,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Key id (key_…); deleted keys too.
    pub id: String,
    /// Start of the period (RFC 3339, as the admin API takes it).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the period (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Series by hour or by day.
    #[arg(long, value_enum)]
    pub granularity: Option<GranularityArg>,
    /// json (shown as tables, or as is with --json) or csv (printed as is).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}

/// An RFC 3339 timestamp with an offset; passed on as written once it parses.
fn parse_timestamp(s: &str) -> Result<String, String> {
    s.parse::<jiff::Timestamp>()
        .map(|_| s.to_string())
        .map_err(|_| {
            "must be an RFC 3339 timestamp with an offset, such as 2030-01-31T00:00:00Z".to_string()
        })
}

/// `WINDOW=VALUE`, with the window one of [`WINDOWS`].
fn split_window(s: &str) -> Result<(String, &str), String> {
    let Some((window, value)) = s.split_once('=') else {
        return Err(format!(
            "expected WINDOW=N, e.g. per_minute=600 (windows: {})",
            WINDOWS.join(", ")
        ));
    };
    let window = window.trim();
    if !WINDOWS.contains(&window) {
        return Err(format!(
            "unknown window `{window}`; windows are {}",
            WINDOWS.join(", ")
        ));
    }
    Ok((window.to_string(), value.trim()))
}

fn parse_limit(window: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{window} must be a whole number of at least 1, got `{value}`"))
}

pub(super) fn parse_rate_limit_set(s: &str) -> Result<(String, u64), String> {
    let (window, value) = split_window(s)?;
    let n = parse_limit(&window, value)?;
    Ok((window, n))
}

pub(super) fn parse_rate_limit_edit(s: &str) -> Result<(String, Option<u64>), String> {
    let (window, value) = split_window(s)?;
    if value.eq_ignore_ascii_case("none") || value.eq_ignore_ascii_case("null") {
        return Ok((window, None));
    }
    let n = parse_limit(&window, value)?;
    Ok((window, Some(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_values() {
        assert_eq!(
            parse_rate_limit_set("per_minute=600"),
            Ok(("per_minute".into(), 600))
        );
        assert_eq!(
            parse_rate_limit_edit("per_day=none"),
            Ok(("per_day".into(), None))
        );
        assert!(parse_rate_limit_set("per_day=none").is_err());
        for bad in [
            "per_minute",
            "per_week=5",
            "per_minute=0",
            "per_minute=-1",
            "=5",
        ] {
            let e = parse_rate_limit_set(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            parse_rate_limit_set("per_week=5")
                .unwrap_err()
                .contains("per_month")
        );
    }

    #[test]
    fn timestamps() {
        assert!(parse_timestamp("2030-01-31T00:00:00Z").is_ok());
        assert!(parse_timestamp("2030-01-31T00:00:00+02:00").is_ok());
        assert!(parse_timestamp("2030-01-31").is_err());
        assert!(parse_timestamp("tomorrow").is_err());
    }
}
