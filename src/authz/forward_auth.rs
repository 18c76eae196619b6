//! Forward-auth over HTTP (SPEC §9): nginx `auth_request`, Traefik `ForwardAuth`, Caddy
//! `forward_auth`. The asking proxy describes the original request in headers:
//!
//! - method: `X-Original-Method` or `X-Forwarded-Method`;
//! - path and query: `X-Original-URI` or `X-Forwarded-Uri`;
//! - host: `X-Forwarded-Host`; scheme: `X-Forwarded-Proto` (not part of the decision);
//! - client address: the right-most entry of `X-Forwarded-For` (what the asking proxy
//!   itself saw; entries further left came from the client and are ignored);
//! - the credential: the client's own `Authorization` header (or `api_key` in the
//!   described query, on `query_key` routes).
//!
//! A missing or malformed description is a 400: keygate never guesses what was asked.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;

use super::{Asked, Authz, answer};
use crate::policy::ip;
use crate::proxy::pipeline::{self, Mode, Question, Trace};
use crate::refusal::Refusal;

/// The headers that carry the original request's URI: it is checked against
/// `max_uri_bytes` (in `pipeline::decide`), so it does not count against `max_header_bytes` a second time.
const DESCRIPTION_URI: &[&str] = &["x-original-uri", "x-forwarded-uri"];

/// The original request as the asking proxy describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Described {
    pub method: Method,
    pub target: PathAndQuery,
    pub host: Option<String>,
    /// `None` when the proxy sent no `X-Forwarded-For`.
    pub client: Option<IpAddr>,
}

/// Answers one `/v1/authz` request from `peer` (already checked against `allow_from`).
pub async fn handle(authz: &Authz, peer: SocketAddr, req: Request<Incoming>) -> Response<Bytes> {
    let dp = authz.data_plane();
    let (parts, _body) = req.into_parts();
    let described = pipeline::check_limits(&dp, &parts, DESCRIPTION_URI)
        .and_then(|()| describe(&parts.headers));
    let trace = Trace::start(
        Mode::Http,
        described.as_ref().map_or(&parts.method, |d| &d.method),
        &parts.headers,
    );
    let question = match &described {
        Ok(d) => Ok(Question {
            method: &d.method,
            host: d.host.as_deref(),
            path: d.target.path(),
            query: d.target.query(),
            headers: &parts.headers,
            client: d.client,
            failure_ip: d.client,
            orgs: None,
        }),
        Err(r) => Err(r.clone()),
    };
    answer(&dp, question.map(Asked::Route), trace, peer.ip())
        .await
        .response
}

/// Reads the description of the original request.
pub fn describe(h: &HeaderMap) -> Result<Described, Refusal> {
    let method = one_of(h, &["x-original-method", "x-forwarded-method"])?.ok_or(
        Refusal::BadRequest(
            "the original request's method is missing: send X-Original-Method or X-Forwarded-Method",
        ),
    )?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Refusal::BadRequest("malformed X-Original-Method or X-Forwarded-Method"))?;
    let target = one_of(h, DESCRIPTION_URI)?.ok_or(Refusal::BadRequest(
        "the original request's path is missing: send X-Original-URI or X-Forwarded-Uri",
    ))?;
    let target = match PathAndQuery::from_str(target) {
        Ok(t) if target.starts_with('/') => t,
        _ => {
            return Err(Refusal::BadRequest(
                "malformed X-Original-URI or X-Forwarded-Uri: expected a path and query starting with /",
            ));
        }
    };
    let host = one_of(h, &["x-forwarded-host"])?.map(str::to_string);
    let client = last_forwarded_for(h)?.map(ip::canonical);
    Ok(Described {
        method,
        target,
        host,
        client,
    })
}

/// The one value of the first of `names` that is present; several values (or two of
/// the names with different values) are a 400.
fn one_of<'h>(h: &'h HeaderMap, names: &[&'static str]) -> Result<Option<&'h str>, Refusal> {
    let mut found: Option<&str> = None;
    for name in names {
        for v in h.get_all(*name) {
            let v = v
                .to_str()
                .map_err(|_| {
                    Refusal::BadRequest("a header describing the original request is not ASCII")
                })?
                .trim();
            match found {
                Some(f) if f != v => {
                    return Err(Refusal::BadRequest(
                        "the original request is described twice, differently",
                    ));
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

/// The right-most `X-Forwarded-For` entry: the address the asking proxy saw.
fn last_forwarded_for(h: &HeaderMap) -> Result<Option<IpAddr>, Refusal> {
    let Some(last) = h.get_all(&ip::X_FORWARDED_FOR).iter().next_back() else {
        return Ok(None);
    };
    let entry = last
        .to_str()
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .unwrap_or("");
    parse_addr(entry)
        .map(Some)
        .ok_or(Refusal::BadRequest("malformed X-Forwarded-For header"))
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443`,
/// `192.0.2.1:443`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn descriptions() {
        // (headers, Ok((method, target, host, client)) or Err(message fragment))
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            Result<(&'a str, &'a str, Option<&'a str>, Option<&'a str>), &'a str>,
        );
        let rows: &[Row] = &[
            (
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/v1/feeds?a=1"),
                ],
                Ok(("GET", "/v1/feeds?a=1", None, None)),
            ),
            (
                &[
                    ("x-forwarded-method", "POST"),
                    ("x-forwarded-uri", "/v1/x"),
                    ("x-forwarded-host", "api.example.com"),
                    ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
                ],
                Ok(("POST", "/v1/x", Some("api.example.com"), Some("10.0.0.7"))),
            ),
            // nginx and Traefik both send the same method: fine.
            (
                &[
                    ("x-original-method", "GET"),
                    ("x-forwarded-method", "GET"),
                    ("x-original-uri", "/"),
                    ("x-forwarded-for", "[2001:db8::1]:443"),
                ],
                Ok(("GET", "/", None, Some("2001:db8::1"))),
            ),
            (&[("x-original-uri", "/v1/feeds")], Err("method is missing")),
            (&[("x-original-method", "GET")], Err("path is missing")),
            (
                &[("x-original-method", "GET"), ("x-original-uri", "v1/feeds")],
                Err("malformed X-Original-URI"),
            ),
            (
                &[
                    ("x-original-method", "GET"),
                    ("x-forwarded-method", "POST"),
                    ("x-original-uri", "/"),
                ],
                Err("described twice"),
            ),
            (
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/"),
                    ("x-forwarded-for", "1.2.3.4, nope"),
                ],
                Err("X-Forwarded-For"),
            ),
            (
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/"),
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-host", "b"),
                ],
                Err("described twice"),
            ),
        ];
        for (pairs, want) in rows {
            let got = describe(&headers(pairs));
            match (want, got) {
                (Ok((m, t, host, client)), Ok(d)) => {
                    assert_eq!(d.method.as_str(), *m, "{pairs:?}");
                    assert_eq!(d.target.as_str(), *t, "{pairs:?}");
                    assert_eq!(d.host.as_deref(), *host, "{pairs:?}");
                    assert_eq!(d.client, client.map(|c| c.parse().unwrap()), "{pairs:?}");
                }
                (Err(fragment), Err(r)) => {
                    assert_eq!(r.code(), "bad_request", "{pairs:?}");
                    assert!(r.to_string().contains(fragment), "{pairs:?}: {r}");
                }
                (want, got) => panic!("{pairs:?}: want {want:?}, got {got:?}"),
            }
        }
    }
}
