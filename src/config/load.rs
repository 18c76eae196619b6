//! Reading the file: text → raw types (serde_yaml) → validated [`Config`], and the
//! one error type, [`ConfigError`], whose `Display` is what `keygate check-config`
//! prints: `FILE:LINE: FIELD: MESSAGE`, one line per problem.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::Config;
use super::locate::Locator;
use super::raw::RawConfig;
use super::schema::{self, Unknown};
use super::validate::{self, Problem};

/// A config problem, naming file, line and field.
///
/// Every problem found is reported: the first (in file order) is in the top-level
/// fields, the rest in `more`. A YAML syntax error comes alone (nothing after it can be
/// read); a type error or missing field comes with every unknown field of the file;
/// validation problems all come together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as it was named (`config/keygate.yaml`).
    pub file: String,
    /// 1-based; 0 when no line applies (the file could not be read).
    pub line: usize,
    /// Field path such as `routes[2].upstream`; empty for the file as a whole.
    pub field: String,
    pub message: String,
    /// Further problems found in the same pass, in file order.
    pub more: Vec<ConfigError>,
}

impl ConfigError {
    fn new(file: &Path, line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            line,
            field: field.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// This problem and those in `more`, in file order.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.more.iter())
    }

    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_one(f)?;
        for e in &self.more {
            f.write_str("\n")?;
            e.fmt_one(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// An error about `field` of this config, with the field's line in the file: for
    /// problems found after loading (route conflicts, unreadable PEM contents).
    pub fn error_at(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.source, self.locator.line_of(field), field, message)
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::InvalidData => "the file is not UTF-8 text".to_string(),
            _ => e.to_string(),
        };
        ConfigError::new(path, 0, "", format!("cannot read the config file: {why}"))
    })?;
    parse(path, &text)
}

/// Validates config `text`; `path` is where it came from, for messages and reload.
pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let locator = Arc::new(Locator::new(text));
    // serde_yaml refuses an empty document; an empty file is an empty mapping, which
    // then fails validation with a useful message (listen.tls is required).
    let text = if is_blank(text) { "{}" } else { text };
    // The whole document first: serde reads it as it goes, so a syntax error further
    // down (often a line indented wrongly) would otherwise hide behind the symptom serde
    // meets on the way, such as a mapping that ends early and seems to lack a field.
    // Reading into a plain YAML value can only fail on the YAML itself (duplicate keys
    // are left to the typed pass, which names the first occurrence).
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text)
        && let Some(at) = e.location()
        && !e.to_string().starts_with("duplicate")
    {
        let message = strip_positions(&e.to_string());
        return Err(ConfigError::new(
            path,
            at.line(),
            "",
            format!("{SYNTAX_ERROR}{message}{}", indentation_hint(&message)),
        ));
    }
    // serde stops at the first unknown field; the schema walk finds them all.
    let unknown = schema::unknown_fields(&locator);
    let raw: RawConfig =
        match serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)) {
            Ok(raw) => raw,
            Err(e) => {
                return Err(with_unknown(
                    path,
                    &locator,
                    from_serde(path, &locator, &e),
                    unknown,
                ));
            }
        };
    validate::validate(raw, path.to_path_buf(), Arc::clone(&locator))
        .map_err(|problems| from_problems(path, &locator, problems))
}

/// For `routes[3]`: the line of `key` in `routes[4]`, if that item has it.
fn next_item_has(locator: &Locator, item: &str, key: &str) -> Option<usize> {
    let (list, index) = item.strip_suffix(']')?.rsplit_once('[')?;
    let next: usize = index.parse::<usize>().ok()? + 1;
    locator.find(&format!("{list}[{next}].{key}"))
}

const SYNTAX_ERROR: &str = "YAML syntax error: ";

/// serde's one error together with every unknown field, in file order. A required field
/// that serde misses while the same key sits elsewhere as an unknown field is one
/// mistake, an indentation, reported on the misplaced key's line.
fn with_unknown(
    path: &Path,
    locator: &Locator,
    first: ConfigError,
    unknown: Vec<Unknown>,
) -> ConfigError {
    let mut first = Some(first);
    let mut unknown = unknown;
    if let Some(e) = first.as_mut() {
        if unknown.iter().any(|u| u.field == e.field) {
            // serde's unknown-field error is one of the walk's.
            first = None;
        } else if e.message == "is required" {
            let (parent, key) = e.field.rsplit_once('.').unwrap_or(("", e.field.as_str()));
            if let Some(i) = unknown.iter().position(|u| u.key == key) {
                let misplaced = unknown.remove(i);
                let within = if parent.is_empty() {
                    "the top level".to_string()
                } else {
                    format!("{parent} (line {})", e.line)
                };
                e.message = format!(
                    "is required, and `{key}` on this line is not inside {within}: check its \
                     indentation"
                );
                e.line = misplaced.line;
            } else if let Some(line) = next_item_has(locator, parent, key) {
                // `- path: …` one item too far: a stray `-` started a new item.
                e.message = format!(
                    "is required, and `{key}` on this line starts a new item of the list (its \
                     `-`) instead of continuing {parent} (line {}): check the indentation",
                    e.line
                );
                e.line = line;
            }
        }
    }
    let mut errors: Vec<ConfigError> = first.into_iter().collect();
    errors.extend(
        unknown
            .iter()
            .map(|u| ConfigError::new(path, u.line, u.field.clone(), u.message())),
    );
    errors.sort_by_key(|e| e.line);
    let mut iter = errors.into_iter();
    let mut head = iter
        .next()
        .unwrap_or_else(|| ConfigError::new(path, 0, "", "invalid configuration"));
    head.more = iter.collect();
    head
}

/// Nothing but blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

fn from_problems(path: &Path, locator: &Locator, problems: Vec<Problem>) -> ConfigError {
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|p| ConfigError::new(path, locator.line_of(&p.field), p.field, p.message))
        .collect();
    // Stable: problems on one line keep the order validation found them in.
    errors.sort_by_key(|e| e.line);
    let mut iter = errors.into_iter();
    let mut first = iter
        .next()
        .unwrap_or_else(|| ConfigError::new(path, 0, "", "invalid configuration"));
    first.more = iter.collect();
    first
}

/// serde_yaml's message carries its own copy of the path and position
/// (`routes[1]: unknown field ... at line 9 column 16`); keep only the message and
/// put the path and line where `Display` expects them.
fn from_serde(
    path: &Path,
    locator: &Locator,
    e: &serde_path_to_error::Error<serde_yaml::Error>,
) -> ConfigError {
    let mut field = e.path().to_string();
    // `.` is the root; `?` stands for a part serde never reached (a syntax error).
    while field == "." || field == "?" || field.ends_with(".?") {
        field.truncate(field.len().saturating_sub(2));
    }
    let mut line = e
        .inner()
        .location()
        .map_or_else(|| locator.line_of(&field), |l| l.line());
    let mut message = strip_positions(&e.inner().to_string());
    // serde_yaml prefixes the path it knows, which may be a parent of ours.
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && (field.starts_with(prefix) || prefix == ".")
    {
        message = rest.to_string();
    }
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        field = if field.is_empty() {
            missing.to_string()
        } else {
            format!("{field}.{missing}")
        };
        message = "is required".into();
    } else if let Some(key) = message
        .strip_prefix("duplicate field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let key = key.to_string();
        message = match locator.repeated_key_lines(&field, &key) {
            Some((first, repeat)) => {
                line = repeat;
                format!("appears twice; the first is on line {first}")
            }
            None => "appears twice".into(),
        };
        field = if field.is_empty() {
            key
        } else {
            format!("{field}.{key}")
        };
    } else if message.starts_with("unknown field `") {
        message = message.replacen(", expected", "; expected", 1);
    } else if e.inner().location().is_some() && is_syntax_error(&message) {
        message = format!("{SYNTAX_ERROR}{message}{}", indentation_hint(&message));
    } else {
        message = plain_types(&message);
    }
    ConfigError::new(path, line, field, message)
}

/// serde names Rust types (`expected u64`, `expected struct RawConfig`); say what to
/// write in YAML instead.
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected {
        "u64" | "u32" | "usize" => "a whole number (0 or more)",
        "a boolean" => "true or false",
        "a sequence" => "a list, e.g. [a, b]",
        "a map" => "a mapping (key: value)",
        e if e.starts_with("struct ") => "a mapping (key: value)",
        e => e,
    };
    format!("{head}, expected {expected}")
}

/// libyaml's messages about block structure usually mean a line indented wrongly.
fn indentation_hint(message: &str) -> &'static str {
    if message.contains("block") || message.contains("mapping values are not allowed") {
        " (check the indentation of this line against the lines above it)"
    } else {
        ""
    }
}

/// libyaml's own messages (scanner and parser) as opposed to serde's type errors.
fn is_syntax_error(message: &str) -> bool {
    message.contains("while parsing") || message.contains("while scanning")
}

/// Removes every ` at line N column M` and ` at position N`: the line is shown once,
/// up front.
fn strip_positions(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" at ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let skipped = skip_position(after);
        match skipped {
            Some(r) => rest = r,
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn skip_position(s: &str) -> Option<&str> {
    fn number(s: &str) -> Option<&str> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        (end > 0).then(|| &s[end..])
    }
    if let Some(r) = s.strip_prefix("line ") {
        let r = number(r)?;
        let r = r.strip_prefix(" column ")?;
        return number(r);
    }
    number(s.strip_prefix("position ")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stripped() {
        assert_eq!(
            strip_positions("a: unknown field `x` at line 9 column 16"),
            "a: unknown field `x`"
        );
        assert_eq!(
            strip_positions(
                "did not find expected node content at line 2 column 1, while parsing a flow node"
            ),
            "did not find expected node content, while parsing a flow node"
        );
        assert_eq!(strip_positions("looking at things"), "looking at things");
    }

    #[test]
    fn display_with_and_without_line() {
        let mut e = ConfigError::new(Path::new("c.yaml"), 3, "listen.tls", "is required");
        assert_eq!(e.to_string(), "c.yaml:3: listen.tls: is required");
        e.more
            .push(ConfigError::new(Path::new("c.yaml"), 9, "cache.ttl", "bad"));
        assert_eq!(
            e.to_string(),
            "c.yaml:3: listen.tls: is required\nc.yaml:9: cache.ttl: bad"
        );
        let e = ConfigError::new(
            Path::new("c.yaml"),
            0,
            "",
            "cannot read the config file: no such file",
        );
        assert_eq!(
            e.to_string(),
            "c.yaml: cannot read the config file: no such file"
        );
    }
}
