//! The CLI's one error type and its exit codes: 1 when the admin API refused the
//! request (or answered something unusable), 2 for a usage error (as clap does), 3 when
//! the admin API could not be reached.
//!
//! Messages are printed on stderr as they are; they must never hold the admin token
//! (nothing here ever receives it) and every piece of server text is passed through
//! [`super::output::clean`] first, so a name or message cannot drive the terminal.

use std::fmt;
use std::process::ExitCode;

use super::output::clean;

/// Exit code of a server refusal or an unusable answer.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code of a usage error, the same as clap's.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the admin API cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug)]
pub enum CliError {
    /// Bad or missing options, found after clap had parsed them.
    Usage(String),
    /// The admin API answered with an error status.
    Refused(Box<Refusal>),
    /// No answer: connection refused, DNS failure, TLS failure or timeout.
    Unreachable { url: String, detail: String },
    /// An answer this CLI cannot use (not JSON, wrong shape, a redirect).
    BadResponse(String),
    /// Local I/O, e.g. writing the output.
    Io(String),
    /// The user answered no to a confirmation.
    Cancelled,
}

/// What the admin API said when it refused: `{"error":{"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
    pub field: Option<String>,
    /// Set on `idempotency_key_reused`: the key created the first time.
    pub key_id: Option<String>,
    /// A line of advice from the CLI, printed after the server's message.
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Refused(_)
            | CliError::BadResponse(_)
            | CliError::Io(_)
            | CliError::Cancelled => EXIT_REFUSED,
        })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "error: {m}"),
            CliError::Refused(r) => r.fmt(f),
            CliError::Unreachable { url, detail } => write!(
                f,
                "error: cannot reach the keygate admin API at {url}: {detail}\n\
                 (set KEYGATE_ADMIN_URL or --admin-url to the admin address of a running keygate)"
            ),
            CliError::BadResponse(m) => write!(f, "error: {m}"),
            CliError::Io(m) => write!(f, "error: {m}"),
            CliError::Cancelled => write!(f, "cancelled; nothing was changed"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: HTTP {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " {}", clean(code))?;
        }
        write!(f, ": {}", clean(&self.message))?;
        if let Some(field) = &self.field {
            write!(f, "\n  field: {}", clean(field))?;
        }
        if let Some(key_id) = &self.key_id {
            write!(f, "\n  existing key: {}", clean(key_id))?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let refusal = Refusal {
            status: 404,
            code: Some("not_found".into()),
            message: "no key".into(),
            field: None,
            key_id: None,
            hint: None,
        };
        let rows = [
            (CliError::usage("x"), EXIT_USAGE),
            (CliError::Refused(Box::new(refusal)), EXIT_REFUSED),
            (
                CliError::Unreachable {
                    url: "http://127.0.0.1:1".into(),
                    detail: "refused".into(),
                },
                EXIT_UNREACHABLE,
            ),
            (CliError::BadResponse("x".into()), EXIT_REFUSED),
            (CliError::Io("x".into()), EXIT_REFUSED),
        ];
        for (err, code) in rows {
            assert_eq!(err.exit_code(), ExitCode::from(code), "{err:?}");
        }
    }

    #[test]
    fn a_refusal_names_code_field_and_cleans_server_text() {
        let r = Refusal {
            status: 422,
            code: Some("invalid_field".into()),
            message: "unknown scope `ad\u{1b}[31mmin`".into(),
            field: Some("scopes[0]".into()),
            key_id: None,
            hint: None,
        };
        let text = CliError::Refused(Box::new(r)).to_string();
        assert!(text.starts_with("error: HTTP 422 invalid_field: unknown scope"));
        assert!(text.contains("field: scopes[0]"));
        assert!(!text.contains('\u{1b}'));
    }
}
