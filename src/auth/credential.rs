//! Finding the one credential in a request: `Authorization: Bearer <token>` or, on
//! routes with `query_key: true`, `?api_key=<token>`.
//!
//! Two credentials of any kind are refused rather than picking one, so that keygate
//! and an upstream can never disagree on which key a request used. The token is
//! borrowed from the request and goes no further than hashing.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::refusal::Refusal;

/// Query parameter that carries a key on `query_key` routes.
pub const QUERY_PARAM: &str = "api_key";

/// Where the credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
}

/// The request's one credential.
pub struct Credential<'a> {
    pub token: Cow<'a, str>,
    pub source: Source,
}

/// Finds the credential. `query` is the raw query string, if any.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    query_key_allowed: bool,
) -> Result<Credential<'a>, Refusal> {
    let mut auth = headers.get_all(AUTHORIZATION).iter();
    let header = auth.next();
    if auth.next().is_some() {
        return Err(Refusal::InvalidApiKey(
            "several Authorization headers were sent; send exactly one credential",
        ));
    }
    let mut from_query = None;
    for (name, value) in query_params(query) {
        if name == QUERY_PARAM {
            if from_query.is_some() {
                return Err(Refusal::InvalidApiKey(
                    "several api_key parameters were sent; send exactly one credential",
                ));
            }
            from_query = Some(value);
        }
    }
    match (header, from_query) {
        (Some(_), Some(_)) => Err(Refusal::InvalidApiKey(
            "both an Authorization header and an api_key parameter were sent; send exactly one credential",
        )),
        (Some(h), None) => {
            let v = h.to_str().map_err(|_| {
                Refusal::InvalidApiKey("the Authorization header is not valid ASCII")
            })?;
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Refusal::InvalidApiKey(
                    "the Authorization scheme must be Bearer",
                ));
            }
            let token = rest.trim_matches(' ');
            if token.is_empty() {
                return Err(Refusal::InvalidApiKey(
                    "the Authorization header has no token after Bearer",
                ));
            }
            Ok(Credential {
                token: Cow::Borrowed(token),
                source: Source::Header,
            })
        }
        (None, Some(v)) => {
            if !query_key_allowed {
                return Err(Refusal::InvalidApiKey(
                    "this route does not accept api_key in the query; use the Authorization header",
                ));
            }
            Ok(Credential {
                token: v,
                source: Source::Query,
            })
        }
        (None, None) => Err(Refusal::MissingApiKey),
    }
}

/// Decoded `(name, value)` pairs of a raw query string.
fn query_params(query: Option<&str>) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
}

/// The raw query without any `api_key` parameter (matched after decoding its name),
/// other parameters kept byte for byte. `None` when nothing remains.
pub fn strip_query_credential(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty()
                && form_urlencoded::parse(name.as_bytes())
                    .next()
                    .is_none_or(|(n, _)| n != QUERY_PARAM)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer tok", "bearer tok", "BEARER  tok"] {
            let h = headers(&[v]);
            let c = extract(&h, None, false).ok().unwrap();
            assert_eq!(c.token, "tok");
            assert_eq!(c.source, Source::Header);
        }
    }

    #[test]
    fn refusals() {
        let none = headers(&[]);
        assert_eq!(
            extract(&none, None, true).err(),
            Some(Refusal::MissingApiKey)
        );
        let two = headers(&["Bearer a", "Bearer b"]);
        assert_eq!(
            extract(&two, None, true).err().map(|r| r.code()),
            Some("invalid_api_key")
        );
        let one = headers(&["Bearer a"]);
        assert_eq!(
            extract(&one, Some("api_key=b"), true)
                .err()
                .map(|r| r.code()),
            Some("invalid_api_key")
        );
        assert_eq!(
            extract(&none, Some("api_key=b"), false)
                .err()
                .map(|r| r.code()),
            Some("invalid_api_key")
        );
        assert_eq!(
            extract(&none, Some("api_key=b&api%5Fkey=c"), true)
                .err()
                .map(|r| r.code()),
            Some("invalid_api_key")
        );
        let basic = headers(&["Basic abc"]);
        assert_eq!(
            extract(&basic, None, false).err().map(|r| r.code()),
            Some("invalid_api_key")
        );
    }

    #[test]
    fn query_key_when_allowed() {
        let none = headers(&[]);
        let c = extract(&none, Some("a=1&api_key=tok"), true).ok().unwrap();
        assert_eq!(c.token, "tok");
        assert_eq!(c.source, Source::Query);
    }

    #[test]
    fn strips_encoded_names_too() {
        assert_eq!(
            strip_query_credential("a=1&api_key=x&b=%20"),
            Some("a=1&b=%20".into())
        );
        assert_eq!(strip_query_credential("api%5Fkey=x"), None);
        assert_eq!(strip_query_credential("api_key"), None);
        assert_eq!(strip_query_credential("x=1&&y"), Some("x=1&y".into()));
    }
}

/// Properties of credential extraction: a lone Bearer header yields exactly its token
/// (any scheme case, any spaces); a second credential of any kind is always refused;
/// `api_key` counts however its name is encoded.
#[cfg(test)]
mod properties {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn scheme() -> impl Strategy<Value = String> {
        any::<u8>().prop_map(|bits| {
            "bearer"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> i & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn one_bearer_header_gives_its_token(
            scheme in scheme(),
            spaces in 1usize..4,
            trailing in 0usize..3,
            token in "[!-~]{1,60}",
            query_key in any::<bool>(),
            query in "[a-z]{1,5}=[a-z0-9]{0,5}",
        ) {
            let mut h = HeaderMap::new();
            let v = format!("{scheme}{}{token}{}", " ".repeat(spaces), " ".repeat(trailing));
            h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            let query = (!query.starts_with("api")).then_some(query.as_str());
            let c = extract(&h, query, query_key);
            prop_assert!(c.is_ok(), "{v:?}");
            let c = c.unwrap();
            prop_assert_eq!(c.token.as_ref(), token.as_str());
            prop_assert_eq!(c.source, Source::Header);
        }

        #[test]
        fn a_second_credential_is_always_refused(
            a in "[A-Za-z0-9_]{1,40}",
            b in "[A-Za-z0-9_]{1,40}",
            second_header in any::<bool>(),
            name_spelling in prop_oneof![Just("api_key"), Just("api%5Fkey"), Just("%61pi_key"), Just("api%5fkey")],
            query_key in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            h.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {a}")).unwrap());
            let query = if second_header {
                h.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {b}")).unwrap());
                None
            } else {
                Some(format!("x=1&{name_spelling}={b}"))
            };
            let r = extract(&h, query.as_deref(), query_key);
            prop_assert_eq!(r.err().map(|e| e.code()), Some("invalid_api_key"));
            // Two in the query, without a header.
            let q = format!("{name_spelling}={a}&api_key={b}");
            let empty = HeaderMap::new();
            let r = extract(&empty, Some(&q), true);
            prop_assert_eq!(r.err().map(|e| e.code()), Some("invalid_api_key"));
        }

        /// Whatever the query, the stripped query sent upstream has no api_key in any
        /// encoding, and keeps every other parameter byte for byte.
        #[test]
        fn stripped_query_has_no_credential(
            params in proptest::collection::vec(
                prop_oneof![
                    Just("api_key=t".to_string()),
                    Just("api%5Fkey=t".to_string()),
                    Just("%61pi_key=t".to_string()),
                    "[a-z]{1,4}=[a-z0-9%]{0,4}",
                ],
                0..6,
            )
        ) {
            let q = params.join("&");
            let out = strip_query_credential(&q);
            for (name, _) in form_urlencoded::parse(out.as_deref().unwrap_or("").as_bytes()) {
                prop_assert_ne!(name.as_ref(), QUERY_PARAM);
            }
            let kept: Vec<&str> = params
                .iter()
                .map(String::as_str)
                .filter(|p| !matches!(*p, "api_key=t" | "api%5Fkey=t" | "%61pi_key=t"))
                .collect();
            prop_assert_eq!(out.unwrap_or_default(), kept.join("&"));
        }
    }
}
