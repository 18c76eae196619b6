//! The verify API (SPEC §9): `POST /v1/verify` on the admin port, for services that
//! check a key in their own code. The admin port reaches it through [`Verifier`], so
//! `admin` never imports the data plane.
//!
//! Two forms: `{"key", "method", "path", "host", "ip"}` runs the route checks of the
//! data plane; `{"key", "scopes": [...]}` checks the key holds those scopes (and the
//! `ip`, when given, passes its allow-list). `"count": false` consumes no limit and
//! records no use. A well-formed call is always answered 200 with `valid` and `code`.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{AUTHORIZATION, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

use super::{Answer, Asked, Authz, answer};
use crate::key::{Environment, KeyView};
use crate::policy::ip;
use crate::proxy::pipeline::{Mode, Question, Trace};

/// Longest list of scopes one call may ask about.
const MAX_SCOPES: usize = 64;

/// The body of `POST /v1/verify`. No `Debug`: it holds a key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub key: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub ip: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub count: bool,
}

fn yes() -> bool {
    true
}

/// What was asked, checked: `Err((field, message))` for a 422.
enum Form {
    Route {
        method: Method,
        target: PathAndQuery,
    },
    Scopes(Vec<String>),
}

impl VerifyRequest {
    fn form(&self) -> Result<(Form, Option<IpAddr>), (&'static str, String)> {
        if self.key.is_empty() {
            return Err(("key", "is empty".into()));
        }
        let client = match &self.ip {
            None => None,
            Some(s) => Some(ip::canonical(s.parse::<IpAddr>().map_err(|_| {
                (
                    "ip",
                    "is not an IP address (e.g. 203.0.113.7 or 2001:db8::7)".to_string(),
                )
            })?)),
        };
        let form = match (&self.path, &self.scopes) {
            (Some(_), Some(_)) => {
                return Err((
                    "scopes",
                    "give either path (the route checks) or scopes, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    "path",
                    "is required unless scopes is given: send {\"key\", \"method\", \"path\"} or {\"key\", \"scopes\"}".into(),
                ));
            }
            (Some(path), None) => {
                let method = match &self.method {
                    None => Method::GET,
                    Some(m) => Method::from_bytes(m.as_bytes())
                        .map_err(|_| ("method", "is not an HTTP method".to_string()))?,
                };
                let target = match PathAndQuery::from_str(path) {
                    Ok(t) if path.starts_with('/') => t,
                    _ => {
                        return Err(("path", "must be a path (and query) starting with /".into()));
                    }
                };
                Form::Route { method, target }
            }
            (None, Some(scopes)) => {
                if self.method.is_some() || self.host.is_some() {
                    return Err((
                        "scopes",
                        "method and host belong to the route form (path), not to scopes".into(),
                    ));
                }
                if scopes.is_empty() || scopes.len() > MAX_SCOPES {
                    return Err((
                        "scopes",
                        format!("must list between 1 and {MAX_SCOPES} scopes"),
                    ));
                }
                Form::Scopes(scopes.clone())
            }
        };
        Ok((form, client))
    }
}

/// The answer of `POST /v1/verify`.
#[derive(Debug, Serialize)]
pub struct VerifyAnswer {
    pub valid: bool,
    pub code: Option<&'static str>,
    pub key: Option<VerifiedKey>,
    pub rate_limit: Option<RateLimitView>,
    pub retry_after: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct VerifiedKey {
    pub id: String,
    pub org: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub environment: Environment,
    pub expires_at: Option<jiff::Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct RateLimitView {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window that decided resets.
    pub reset: u64,
}

/// A malformed verify call: the field and what is wrong with it (422).
#[derive(Debug)]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

/// The verify API as the admin port sees it.
#[async_trait]
pub trait Verifier: Send + Sync {
    /// Decides on `req` for a caller that may see the keys of `orgs` (`None`: all).
    async fn verify(
        &self,
        req: VerifyRequest,
        orgs: Option<&[String]>,
    ) -> Result<VerifyAnswer, InvalidField>;
}

#[async_trait]
impl Verifier for Authz {
    async fn verify(
        &self,
        req: VerifyRequest,
        orgs: Option<&[String]>,
    ) -> Result<VerifyAnswer, InvalidField> {
        let (form, client) = req
            .form()
            .map_err(|(field, message)| InvalidField { field, message })?;
        let dp = self.data_plane();
        let unspecified = IpAddr::from([0, 0, 0, 0]);
        let a = match form {
            Form::Route { method, target } => {
                // The key travels as the credential of the described request.
                let mut headers = HeaderMap::with_capacity(1);
                let bearer =
                    HeaderValue::from_str(&format!("Bearer {}", req.key)).map_err(|_| {
                        InvalidField {
                            field: "key",
                            message: "holds characters no API key has".into(),
                        }
                    })?;
                headers.insert(AUTHORIZATION, bearer);
                let mut trace = Trace::start(Mode::Verify, &method, &HeaderMap::new());
                if !req.count {
                    trace = trace.without_counting();
                }
                let asked = Asked::Route(Question {
                    method: &method,
                    host: req.host.as_deref(),
                    path: target.path(),
                    query: target.query(),
                    headers: &headers,
                    client,
                    failure_ip: None,
                    orgs,
                });
                answer(&dp, Ok(asked), trace, client.unwrap_or(unspecified)).await
            }
            Form::Scopes(scopes) => {
                let mut trace = Trace::start(Mode::Verify, &Method::POST, &HeaderMap::new());
                if !req.count {
                    trace = trace.without_counting();
                }
                let asked = Asked::Scopes {
                    token: &req.key,
                    scopes: &scopes,
                    client,
                    orgs,
                };
                answer(&dp, Ok(asked), trace, client.unwrap_or(unspecified)).await
            }
        };
        Ok(view(&a))
    }
}

fn view(a: &Answer) -> VerifyAnswer {
    let valid = a.allowed;
    VerifyAnswer {
        valid,
        code: (!valid).then_some(a.outcome),
        key: a.key.as_deref().map(key_view),
        rate_limit: a.quota.map(|q| RateLimitView {
            limit: q.limit,
            remaining: q.remaining,
            reset: q.reset.as_secs(),
        }),
        retry_after: a.retry_after.map(|d: Duration| d.as_secs().max(1)),
    }
}

fn key_view(k: &KeyView) -> VerifiedKey {
    VerifiedKey {
        id: k.id.to_string(),
        org: k.org.to_string(),
        name: k.name.to_string(),
        scopes: k.scopes.to_vec(),
        environment: k.environment,
        expires_at: k.expires_at(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> VerifyRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn forms() {
        let ok = [
            r#"{"key":"k","path":"/v1/feeds"}"#,
            r#"{"key":"k","method":"POST","path":"/v1/feeds?x=1","host":"api","ip":"10.0.0.1"}"#,
            r#"{"key":"k","scopes":["read"],"ip":"::1","count":false}"#,
        ];
        for j in ok {
            assert!(req(j).form().is_ok(), "{j}");
        }
        let bad = [
            (r#"{"key":"","path":"/"}"#, "key"),
            (r#"{"key":"k"}"#, "path"),
            (r#"{"key":"k","path":"/","scopes":["read"]}"#, "scopes"),
            (r#"{"key":"k","path":"feeds"}"#, "path"),
            (r#"{"key":"k","method":"G ET","path":"/"}"#, "method"),
            (r#"{"key":"k","scopes":[]}"#, "scopes"),
            (r#"{"key":"k","scopes":["read"],"method":"GET"}"#, "scopes"),
            (r#"{"key":"k","path":"/","ip":"10.0.0.300"}"#, "ip"),
        ];
        for (j, field) in bad {
            match req(j).form() {
                Err((f, _)) => assert_eq!(f, field, "{j}"),
                Ok(_) => panic!("{j} was accepted"),
            }
        }
        assert!(
            serde_json::from_str::<VerifyRequest>(r#"{"key":"k","path":"/","extra":1}"#).is_err()
        );
    }
}
