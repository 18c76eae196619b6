//! The one path by which the admin API changes a stored key, principal or org (SPEC §1
//! "Writes are never undone"):
//!
//! load → decide (a pure transition of the loaded record) → compare-and-swap on the
//! loaded version → invalidate → (the handler) audit.
//!
//! - A change is stored only over the version it was derived from, on any replica
//!   (`KeyStore::update_key`, `update_principal`, `update_org`). When another change got
//!   there first, the record is loaded again and the transition decides again: it
//!   applies to the newer record, or refuses (409/404) because it no longer applies.
//!   With `If-Match`, the reloaded version no longer matches: 412, nothing changed.
//! - After a write, or a write whose outcome is unknown (a timeout after sending), the
//!   resolver's entries are invalidated here and on every replica, announcing the
//!   version the write produces; on Redis the write script publishes the same change
//!   itself, so a replica hears of every write that lands even if this one never does.
//!
//! No handler writes a key, principal or org any other way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AdminContext;
use super::error::AdminError;
use crate::key::{KeyRecord, Org, Principal};
use crate::store::{Invalidation, KeyStore, StoreError};

/// Loads and decides again at most this often when other changes keep winning.
const ATTEMPTS: usize = 16;

/// After a write with an unknown outcome, the invalidation is repeated this much
/// later (a late-landing write on a store that does not publish by itself).
const LATE_INVALIDATION: Duration = Duration::from_secs(1);

/// A record the write path can compare and swap.
#[async_trait]
pub trait Versioned: Clone + Send + Sync + 'static {
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
    /// Stores `self` (version `expected + 1`) if the stored version is `expected`.
    async fn compare_and_swap(&self, store: &dyn KeyStore, expected: u64)
    -> Result<(), StoreError>;
    /// What the change from `before` to `after` invalidates in key caches.
    fn invalidations(before: &Self, after: &Self) -> Vec<Invalidation>;
}

#[async_trait]
impl Versioned for KeyRecord {
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    async fn compare_and_swap(
        &self,
        store: &dyn KeyStore,
        expected: u64,
    ) -> Result<(), StoreError> {
        store.update_key(self, expected).await
    }
    /// Every hash of the record before and after, with the version written.
    fn invalidations(before: &Self, after: &Self) -> Vec<Invalidation> {
        let mut hashes: Vec<_> = before.hashes().chain(after.hashes()).collect();
        hashes.sort();
        hashes.dedup();
        hashes
            .into_iter()
            .map(|hash| Invalidation::Key {
                hash,
                version: Some(after.version),
            })
            .collect()
    }
}

#[async_trait]
impl Versioned for Principal {
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    async fn compare_and_swap(
        &self,
        store: &dyn KeyStore,
        expected: u64,
    ) -> Result<(), StoreError> {
        store.update_principal(self, expected).await
    }
    /// Keys read the creator's disabled/deleted state (`key_policy: creator`); admin
    /// tokens are not cached, so a rotated or disabled token needs nothing here.
    fn invalidations(before: &Self, after: &Self) -> Vec<Invalidation> {
        if before.is_away() == after.is_away() {
            Vec::new()
        } else {
            vec![Invalidation::Principal(after.id.clone())]
        }
    }
}

#[async_trait]
impl Versioned for Org {
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    async fn compare_and_swap(
        &self,
        store: &dyn KeyStore,
        expected: u64,
    ) -> Result<(), StoreError> {
        store.update_org(self, expected).await
    }
    /// Only `key_policy` is read through keys; rate limits are read by `limits`
    /// through its own short-lived org cache, and names by nobody on the data plane.
    fn invalidations(before: &Self, after: &Self) -> Vec<Invalidation> {
        if before.key_policy == after.key_policy {
            Vec::new()
        } else {
            vec![Invalidation::Org(after.id.clone())]
        }
    }
}

/// What [`apply`] did.
#[derive(Debug)]
pub enum Applied<R> {
    /// The transition changed nothing: the record as stored.
    Unchanged(R),
    /// Stored: the record it was derived from and the record as written.
    Changed { before: R, after: R },
}

impl<R> Applied<R> {
    /// The record as it now is.
    pub fn current(&self) -> &R {
        match self {
            Applied::Unchanged(r) | Applied::Changed { after: r, .. } => r,
        }
    }
}

/// Loads the record, checks `If-Match`, applies `transition` (`None`: nothing to
/// change), and stores the result over the loaded version, reloading and deciding again
/// when another change won. Invalidates after a write, and after a write whose outcome
/// is unknown (then answers 503).
pub async fn apply<R, L, LF, T>(
    ctx: &Arc<AdminContext>,
    if_match: Option<&IfMatch>,
    load: L,
    mut transition: T,
) -> Result<Applied<R>, AdminError>
where
    R: Versioned,
    L: Fn() -> LF,
    LF: Future<Output = Result<R, AdminError>>,
    T: FnMut(&R) -> Result<Option<R>, AdminError>,
{
    for _ in 0..ATTEMPTS {
        let before = load().await?;
        if let Some(m) = if_match {
            m.check(before.version())?;
        }
        let Some(mut after) = transition(&before)? else {
            return Ok(Applied::Unchanged(before));
        };
        let expected = before.version();
        after.set_version(expected + 1);
        match after.compare_and_swap(ctx.store.as_ref(), expected).await {
            Ok(()) => {
                invalidate(ctx, &R::invalidations(&before, &after)).await;
                return Ok(Applied::Changed { before, after });
            }
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e @ StoreError::Unavailable(_)) => {
                // The write may have landed (or may still): act as if it had.
                let changes = R::invalidations(&before, &after);
                invalidate(ctx, &changes).await;
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LATE_INVALIDATION).await;
                    invalidate(&ctx, &changes).await;
                });
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Conflict {
        code: "conflict",
        message: "the record kept changing under this call; try again".into(),
    })
}

async fn invalidate(ctx: &AdminContext, changes: &[Invalidation]) {
    if !changes.is_empty() {
        ctx.resolver.invalidate(changes).await;
    }
}

/// `If-Match` (RFC 9110 §13.1.1, strong comparison): `*` or ETags as this API sends
/// them (`"<version>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    /// The versions named; weak tags (`W/"…"`) never match and are left out.
    Versions(Vec<u64>),
}

impl IfMatch {
    /// The request's `If-Match`, if any (400 when malformed).
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<IfMatch>, AdminError> {
        let mut values = headers.get_all(IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return Ok(None);
        }
        let bad = || {
            AdminError::BadRequest(
                "If-Match must be \"*\" or a list of ETags as sent in the ETag header, \
                 e.g. If-Match: \"3\""
                    .into(),
            )
        };
        let mut versions = Vec::new();
        for value in values {
            let text = value.to_str().map_err(|_| bad())?;
            for tag in text.split(',').map(str::trim) {
                if tag == "*" {
                    return Ok(Some(IfMatch::Any));
                }
                let (weak, quoted) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| !t.contains('"'))
                    .ok_or_else(bad)?;
                if !weak && let Ok(v) = inner.parse::<u64>() {
                    versions.push(v);
                }
            }
        }
        Ok(Some(IfMatch::Versions(versions)))
    }

    /// 412 unless `version` is one of those asked for.
    pub fn check(&self, version: u64) -> Result<(), AdminError> {
        match self {
            IfMatch::Any => Ok(()),
            IfMatch::Versions(v) if v.contains(&version) => Ok(()),
            IfMatch::Versions(_) => Err(AdminError::PreconditionFailed(format!(
                "If-Match does not match: the stored version is {}; nothing was changed \
                 (read it again and retry with its ETag)",
                etag_text(version)
            ))),
        }
    }
}

fn etag_text(version: u64) -> String {
    format!("\"{version}\"")
}

/// A response with the record's version as its `ETag`.
pub fn with_etag(version: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag_text(version)) {
        response.headers_mut().insert(ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Option<IfMatch>, AdminError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        IfMatch::from_headers(&h)
    }

    #[test]
    fn if_match_parses_and_compares_strongly() {
        use IfMatch::*;
        let rows: Vec<(Vec<&str>, Option<IfMatch>)> = vec![
            (vec![], None),
            (vec!["*"], Some(Any)),
            (vec!["\"3\""], Some(Versions(vec![3]))),
            (vec!["\"3\", \"5\""], Some(Versions(vec![3, 5]))),
            (vec!["\"3\"", "\"7\""], Some(Versions(vec![3, 7]))),
            (vec!["W/\"3\""], Some(Versions(vec![]))),
            (vec!["\"abc\""], Some(Versions(vec![]))),
        ];
        for (values, want) in rows {
            assert_eq!(parse(&values).unwrap(), want, "{values:?}");
        }
        for bad in ["3", "\"3", "\"3\"x", "W/3", "\"a\"b\""] {
            let e = parse(&[bad]).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}");
        }
        assert!(Any.check(9).is_ok());
        assert!(Versions(vec![3, 5]).check(5).is_ok());
        let e = Versions(vec![3]).check(4).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (412, "precondition_failed")
        );
        assert!(e.to_string().contains("\"4\""));
    }

    #[test]
    fn the_etag_is_the_quoted_version() {
        let r = with_etag(7, "x");
        assert_eq!(r.headers()[ETAG], "\"7\"");
    }
}
