//! What `keygate keys|orgs|principals …` prints for people: tables, one record's
//! details, the once-only secret block (API keys and admin tokens), and usage reports. (With `--json` the server's JSON is
//! printed as it came, and nothing here runs.)
//!
//! Everything here is a pure function from the server's JSON to text, so it is tested
//! without a server. Text that came from the server (names, descriptions, messages) goes
//! through [`clean`]: another admin's key name must not be able to move the cursor or
//! recolour the terminal. The admin token never reaches this module.

use std::fmt::Write as _;
use std::io::Write as _;

use jiff::Timestamp;
use serde_json::Value;

use super::error::CliError;

/// Longest name shown in a table cell; `show` prints it whole.
const MAX_NAME_COLUMN: usize = 40;

/// Writes `text` to stdout. A closed pipe (`keygate keys list | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Io(format!("cannot write to stdout: {e}"))),
    }
}

/// Server text made safe for a terminal: control characters are written as escapes
/// (`\n`, `\u{1b}`), everything else is kept.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A string field, cleaned; `None` when absent, null or not a string.
fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(clean)
}

/// An RFC 3339 timestamp as `2026-01-31 09:30Z` (`precise`: `09:30:12Z`); `none` when
/// null; unparsable text is shown as it came.
fn time_of(v: &Value, field: &str, none: &str, precise: bool) -> String {
    match v.get(field).and_then(Value::as_str) {
        None => none.to_string(),
        Some(s) if precise => precise_time(s),
        Some(s) => match s.parse::<Timestamp>() {
            Ok(t) => t.strftime("%Y-%m-%d %H:%MZ").to_string(),
            Err(_) => clean(s),
        },
    }
}

/// To the minute, for tables.
fn time(v: &Value, field: &str, none: &str) -> String {
    time_of(v, field, none, false)
}

/// To the second, for one key's details.
fn precise(v: &Value, field: &str, none: &str) -> String {
    time_of(v, field, none, true)
}

/// An RFC 3339 timestamp to the second, as `2026-01-31 09:30:12Z`.
pub fn precise_time(s: &str) -> String {
    match s.parse::<Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        Err(_) => clean(s),
    }
}

/// A list of strings joined with `sep`; `none` when the field is null or absent.
fn list(v: &Value, field: &str, sep: &str, none: &str) -> String {
    match v.get(field).and_then(Value::as_array) {
        None => none.to_string(),
        Some(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => clean(s),
                other => clean(&other.to_string()),
            })
            .collect::<Vec<_>>()
            .join(sep),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Rows of cells laid out in columns, the first row being the header.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The key table of `list`: id, name, prefix, scopes, status, created, last used,
/// expires.
pub fn key_table(keys: &[Value]) -> String {
    let mut rows = vec![
        [
            "ID",
            "NAME",
            "PREFIX",
            "SCOPES",
            "STATUS",
            "CREATED",
            "LAST USED",
            "EXPIRES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for k in keys {
        rows.push(vec![
            text(k, "id").unwrap_or_default(),
            truncate(&text(k, "name").unwrap_or_default(), MAX_NAME_COLUMN),
            text(k, "prefix").unwrap_or_default(),
            list(k, "scopes", ",", "-"),
            text(k, "status").unwrap_or_default(),
            time(k, "created_at", "-"),
            time(k, "last_used_at", "never"),
            time(k, "expires_at", "never"),
        ]);
    }
    table(&rows)
}

/// A key's rate limit: its own windows, or the org's and global defaults.
fn rate_limit(k: &Value) -> String {
    match k.get("rate_limit").and_then(Value::as_object) {
        Some(windows) if !windows.is_empty() => windows
            .iter()
            .map(|(w, n)| format!("{}={}", clean(w), clean(&n.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "org and global defaults".to_string(),
    }
}

/// Every field of one key, one per line, named as in the JSON.
pub fn key_details(k: &Value) -> String {
    const ANY: &str = "any (unrestricted)";
    let mut rows: Vec<(&str, String)> = vec![
        ("id", text(k, "id").unwrap_or_default()),
        ("name", text(k, "name").unwrap_or_default()),
        (
            "description",
            text(k, "description").unwrap_or_else(|| "-".into()),
        ),
        ("org", text(k, "org").unwrap_or_default()),
        ("environment", text(k, "environment").unwrap_or_default()),
        ("prefix", text(k, "prefix").unwrap_or_default()),
        ("status", text(k, "status").unwrap_or_default()),
        ("scopes", list(k, "scopes", ", ", "-")),
        ("resources", list(k, "resources", ", ", ANY)),
        ("endpoints", list(k, "endpoints", ", ", ANY)),
        ("ip_allow", list(k, "ip_allow", ", ", ANY)),
        ("rate_limit", rate_limit(k)),
        ("created_at", precise(k, "created_at", "-")),
        ("created_by", text(k, "created_by").unwrap_or_default()),
        ("updated_at", precise(k, "updated_at", "-")),
        ("last_used_at", precise(k, "last_used_at", "never")),
        ("expires_at", precise(k, "expires_at", "never")),
    ];
    for (field, label) in [
        ("revoked_at", "revoked_at"),
        ("deleted_at", "deleted_at"),
        ("grace_ends_at", "grace_ends_at"),
    ] {
        if k.get(field).is_some_and(|v| !v.is_null()) {
            rows.push((label, precise(k, field, "-")));
        }
    }
    aligned(&rows)
}

/// `label  value` lines with the values in one column.
fn aligned(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:width$}  {value}");
    }
    out
}

/// An org's rate limit, or what applies without one.
fn org_rate_limit(o: &Value) -> String {
    match o.get("rate_limit").and_then(Value::as_object) {
        Some(windows) if !windows.is_empty() => windows
            .iter()
            .filter(|(_, n)| !n.is_null())
            .map(|(w, n)| format!("{}={}", clean(w), clean(&n.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "global defaults".to_string(),
    }
}

fn number(v: &Value, field: &str, none: &str) -> String {
    match v.get(field) {
        Some(n @ Value::Number(_)) => n.to_string(),
        _ => none.to_string(),
    }
}

/// The org table of `orgs list`.
pub fn org_table(orgs: &[Value]) -> String {
    let mut rows = vec![
        [
            "ID",
            "NAME",
            "KEY POLICY",
            "MAX KEY DAYS",
            "RATE LIMIT",
            "CREATED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for o in orgs {
        rows.push(vec![
            text(o, "id").unwrap_or_default(),
            truncate(&text(o, "name").unwrap_or_default(), MAX_NAME_COLUMN),
            text(o, "key_policy").unwrap_or_default(),
            number(o, "max_key_lifetime_days", "-"),
            org_rate_limit(o),
            time(o, "created_at", "-"),
        ]);
    }
    table(&rows)
}

/// Every field of one org, named as in the JSON.
pub fn org_details(o: &Value) -> String {
    aligned(&[
        ("id", text(o, "id").unwrap_or_default()),
        ("name", text(o, "name").unwrap_or_default()),
        ("key_policy", text(o, "key_policy").unwrap_or_default()),
        (
            "max_key_lifetime_days",
            number(o, "max_key_lifetime_days", "none (keys may never expire)"),
        ),
        ("rate_limit", org_rate_limit(o)),
        ("created_at", precise(o, "created_at", "-")),
        ("updated_at", precise(o, "updated_at", "-")),
    ])
}

/// A principal's orgs: `*` (every org, owners) or the list.
fn principal_orgs(p: &Value) -> String {
    match p.get("orgs") {
        Some(Value::String(s)) => clean(s),
        _ => list(p, "orgs", ",", "-"),
    }
}

fn yes_no(v: &Value, field: &str) -> String {
    match v.get(field).and_then(Value::as_bool) {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

/// The principal table of `principals list`.
pub fn principal_table(principals: &[Value]) -> String {
    let mut rows = vec![
        [
            "ID",
            "NAME",
            "ROLE",
            "ORGS",
            "API ACCESS",
            "DISABLED",
            "CREATED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in principals {
        rows.push(vec![
            text(p, "id").unwrap_or_default(),
            truncate(&text(p, "name").unwrap_or_default(), MAX_NAME_COLUMN),
            text(p, "role").unwrap_or_default(),
            principal_orgs(p),
            yes_no(p, "api_access"),
            yes_no(p, "disabled"),
            time(p, "created_at", "-"),
        ]);
    }
    table(&rows)
}

/// Every field of one principal (never a token: the admin API shows none).
pub fn principal_details(p: &Value) -> String {
    aligned(&[
        ("id", text(p, "id").unwrap_or_default()),
        ("name", text(p, "name").unwrap_or_default()),
        ("role", text(p, "role").unwrap_or_default()),
        ("orgs", principal_orgs(p)),
        ("api_access", yes_no(p, "api_access")),
        ("disabled", yes_no(p, "disabled")),
        ("created_at", precise(p, "created_at", "-")),
    ])
}

/// `{principal, token}` of a create or rotate-token response: the principal's details,
/// then the token set apart.
pub fn principal_with_token(headline: &str, answer: &Value) -> Result<String, CliError> {
    let principal = answer
        .get("principal")
        .filter(|p| p.is_object())
        .ok_or_else(|| CliError::BadResponse("the admin API's answer has no `principal`".into()))?;
    let token = answer.get("token").and_then(Value::as_str).ok_or_else(|| {
        CliError::BadResponse("the admin API's answer has no `token` string".into())
    })?;
    let mut out = format!("{headline}\n\n{}", principal_details(principal));
    out.push_str(&secret_block(token));
    Ok(out)
}

/// The secret of a create or regenerate response, set apart, with the warning that it
/// will not be shown again.
pub fn secret_block(secret: &str) -> String {
    let rule = "=".repeat(72);
    format!(
        "\n{rule}\n\
         SECRET: shown only this once. keygate keeps only a hash of it and cannot\n\
         show it again. Store it now (e.g. in your secret manager).\n\
         \n    {}\n\
         {rule}\n",
        clean(secret)
    )
}

/// `{key, secret}` of a create or regenerate response: the key's details, then the
/// secret block.
pub fn key_with_secret(headline: &str, answer: &Value) -> Result<String, CliError> {
    let key = answer
        .get("key")
        .filter(|k| k.is_object())
        .ok_or_else(|| CliError::BadResponse("the admin API's answer has no `key`".into()))?;
    let secret = answer
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            CliError::BadResponse("the admin API's answer has no `secret` string".into())
        })?;
    let mut out = format!("{headline}\n\n{}", key_details(key));
    out.push_str(&secret_block(secret));
    Ok(out)
}

/// A usage report (`totals`, `series`, top routes and resources) rendered without
/// assuming more of its shape than "an object": scalars as `name: value`, objects as
/// indented `name: value` lines, lists of objects as tables.
pub fn usage_report(report: &Value) -> String {
    let mut out = String::new();
    let Some(fields) = report.as_object() else {
        let _ = writeln!(out, "{}", clean(&report.to_string()));
        return out;
    };
    for (name, value) in fields {
        match value {
            Value::Object(_) => {
                let _ = writeln!(out, "{}:", clean(name));
                let mut lines = Vec::new();
                flatten("", value, &mut lines);
                let width = lines.iter().map(|(l, _)| l.chars().count()).max();
                for (label, v) in &lines {
                    let pad = width.unwrap_or(0).saturating_sub(label.chars().count());
                    let _ = writeln!(out, "  {label}{}  {v}", " ".repeat(pad));
                }
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                let _ = writeln!(out, "{}:", clean(name));
                if items.is_empty() {
                    let _ = writeln!(out, "  (none)");
                }
                for line in object_table(items).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            other => {
                let _ = writeln!(out, "{}: {}", clean(name), scalar(other));
            }
        }
    }
    out
}

/// `a.b.c` → value lines of nested objects.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let label = if prefix.is_empty() {
                    clean(k)
                } else {
                    format!("{prefix}.{}", clean(k))
                };
                flatten(&label, v, out);
            }
        }
        other => out.push((prefix.to_string(), scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => clean(&other.to_string()),
    }
}

/// A table whose columns are the keys of the objects, in order of first appearance.
fn object_table(items: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Some(map) = item.as_object() {
            for k in map.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let mut rows = vec![columns.iter().map(|c| clean(c)).collect::<Vec<_>>()];
    for item in items {
        rows.push(
            columns
                .iter()
                .map(|c| match item.get(c) {
                    Some(Value::String(s)) if c.ends_with("_at") || c == "start" || c == "end" => {
                        match s.parse::<Timestamp>() {
                            Ok(t) => t.strftime("%Y-%m-%d %H:%MZ").to_string(),
                            Err(_) => clean(s),
                        }
                    }
                    Some(v @ Value::Object(_)) => clean(&v.to_string()),
                    Some(v) => scalar(v),
                    None => "-".into(),
                })
                .collect(),
        );
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> Value {
        json!({
            "id": "key_01jabc", "org": "acme", "name": "ci deploy", "description": null,
            "environment": "live", "prefix": "mtf_live_3vQ8", "scopes": ["read", "write"],
            "resources": ["feed:*"], "endpoints": null, "ip_allow": null,
            "rate_limit": {"per_minute": 600},
            "created_at": "2026-01-31T09:30:12Z", "created_by": "prn_1",
            "updated_at": "2026-01-31T09:30:12Z", "last_used_at": null,
            "expires_at": null, "revoked_at": null, "deleted_at": null,
            "grace_ends_at": null, "status": "active"
        })
    }

    #[test]
    fn the_table_has_the_columns_people_look_for() {
        let t = key_table(&[key()]);
        let mut lines = t.lines();
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
        let row = lines.next().unwrap();
        for cell in [
            "key_01jabc",
            "ci deploy",
            "mtf_live_3vQ8",
            "read,write",
            "active",
            "2026-01-31 09:30Z",
            "never",
        ] {
            assert!(row.contains(cell), "{row}");
        }
        // Columns line up: each header starts where its cells start.
        assert_eq!(header.find("STATUS"), row.find("active"));
    }

    /// The value on the `label` line of a details listing.
    fn value<'a>(details: &'a str, label: &str) -> &'a str {
        details
            .lines()
            .find_map(|l| l.strip_prefix(label).filter(|r| r.starts_with(' ')))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {label} in\n{details}"))
    }

    #[test]
    fn details_show_restrictions_and_defaults_plainly() {
        let d = key_details(&key());
        assert_eq!(value(&d, "resources"), "feed:*");
        assert_eq!(value(&d, "endpoints"), "any (unrestricted)");
        assert_eq!(value(&d, "rate_limit"), "per_minute=600");
        assert_eq!(value(&d, "expires_at"), "never");
        assert_eq!(value(&d, "description"), "-");
        assert!(!d.contains("revoked_at"), "{d}");
        // Values line up in one column.
        let starts: Vec<usize> = d
            .lines()
            .map(|l| l.len() - l[l.find(' ').unwrap()..].trim_start().len())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{d}");
        let mut revoked = key();
        revoked["revoked_at"] = json!("2026-02-01T00:00:00Z");
        assert_eq!(
            value(&key_details(&revoked), "revoked_at"),
            "2026-02-01 00:00:00Z"
        );
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let mut k = key();
        k["name"] = json!("evil\u{1b}]0;title\u{7}\nname");
        let t = key_table(&[k.clone()]);
        let d = key_details(&k);
        for out in [t, d] {
            assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
            assert!(out.contains("evil\\u{1b}]0;title\\u{7}\\nname"), "{out}");
        }
    }

    #[test]
    fn long_names_are_cut_in_the_table_only() {
        let mut k = key();
        let long = "n".repeat(100);
        k["name"] = json!(long);
        assert!(key_table(&[k.clone()]).contains(&format!("{}…", "n".repeat(39))));
        assert!(key_details(&k).contains(&long));
    }

    #[test]
    fn the_secret_is_printed_once_and_set_apart() {
        let answer = json!({"key": key(), "secret": "mtf_live_SECRET"});
        let out = key_with_secret("Created key key_01jabc.", &answer).unwrap();
        assert_eq!(out.matches("mtf_live_SECRET").count(), 1);
        assert!(out.contains("shown only this once"));
        assert!(matches!(
            key_with_secret("x", &json!({"key": key()})),
            Err(CliError::BadResponse(_))
        ));
    }

    #[test]
    fn usage_reports_render_whatever_their_shape() {
        let report = json!({
            "key_id": "key_1",
            "totals": {"requests": 10, "denials": {"rate_limited": 2}},
            "series": [{"start": "2026-01-31T09:00:00Z", "requests": 10}],
            "routes": [{"route": "list-feeds", "requests": 10}],
        });
        let out = usage_report(&report);
        assert!(out.contains("key_id: key_1"), "{out}");
        assert!(out.contains("denials.rate_limited  2"), "{out}");
        assert!(out.contains("2026-01-31 09:00Z"), "{out}");
        assert!(out.contains("list-feeds"), "{out}");
    }
}
