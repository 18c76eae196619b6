//! Rate limits and quotas (SPEC §3 "Rate limits"): which limits apply to a request,
//! whether it is admitted, and the `RateLimit-*` headers that tell the client where it
//! stands.
//!
//! - `window`: the five windows (UTC-aligned second, minute, hour; UTC calendar day
//!   and month) and the [`Clock`] they are read from (a fake one in tests).
//! - `plan`: resolution of each window (key, else org, else global; route limits in
//!   addition) and the pure decision from window counts.
//! - [`Limiter`]: atomic check-and-count. `local` is the exact in-process one;
//!   `redis` is shared by the replicas on the Redis store.
//! - `orgs`: org records, cached for half a second.
//! - [`RateLimits`]: what the pipeline calls, with the request's [`Arrival`] (the
//!   clock is read once per request, when it arrives).
//!
//! The pipeline calls [`RateLimits::acquire`] last, after every check that can refuse
//! the request, so refused requests (401, 403, 429) never consume quota, and a request
//! refused by one window is counted in none.
//!
//! Headers: every response to a request whose key authenticated carries `RateLimit-*`
//! when any limit applies to the key: from the admission decision (including the 429,
//! where `Remaining` is 0 and `Reset` equals `Retry-After`), or, for a 403 refused
//! before the limiter, from a look at the counters that counts nothing. A 401 carries
//! none: the client is not authenticated. Where keygate sends `RateLimit-*`, it replaces
//! any the upstream sent, so the client never sees two answers; where no keygate limit
//! applies, the upstream's pass through.
//!
//! This module never blocks on IO while holding a counter lock, and never logs a key's
//! secret (it sees key ids only).

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use jiff::Timestamp;

use crate::key::{KeyView, RateLimit};
use crate::metrics::Metrics;
use crate::policy::Route;
use crate::refusal::Refusal;

pub mod local;
pub mod orgs;
pub mod plan;
pub mod redis;
pub mod window;

pub use local::{LocalLimiter, QuotaFile};
pub use orgs::OrgCache;
pub use plan::{Count, Decision, Plan, Quota};
pub use redis::RedisLimiter;
pub use window::{Clock, FakeClock, Span, SystemClock, Window};

/// Counts requests in windows. `acquire` checks every window of the plan and counts
/// the request in all of them only if every one has room, atomically with respect to
/// every other `acquire` of the same key (on every replica that shares the limiter).
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    async fn acquire(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Decision;

    /// Where the key stands, counting nothing.
    async fn peek(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Quota>;

    /// [`Limiter::acquire`] for a limiter that needs no IO (the in-process one), with
    /// no future to allocate; `None`: call `acquire`.
    fn acquire_at_once(
        &self,
        _key_id: &str,
        _plan: &Plan<'_>,
        _now: Timestamp,
    ) -> Option<Decision> {
        None
    }
}

/// `Retry-After` of the 503 when a key's org cannot be read.
const ORG_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// When a request arrived, read once per request and passed down: the org's freshness
/// is judged at `instant`, its windows are those of `time`.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub instant: std::time::Instant,
    pub time: Timestamp,
}

impl Arrival {
    pub fn now() -> Self {
        Arrival {
            instant: std::time::Instant::now(),
            time: Timestamp::now(),
        }
    }
}

/// The data plane's view of rate limits: global config, org defaults, the limiter.
pub struct RateLimits {
    limiter: Arc<dyn Limiter>,
    /// `rate_limit` of the config: the last fallback of each window.
    global: RateLimit,
    /// Shared by every data plane a config reload builds, like the limiter.
    orgs: Arc<OrgCache>,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    pub fn new(
        limiter: Arc<dyn Limiter>,
        global: RateLimit,
        orgs: Arc<OrgCache>,
        metrics: Arc<Metrics>,
    ) -> Self {
        RateLimits {
            limiter,
            global,
            orgs,
            metrics,
        }
    }

    async fn plan<'r>(
        &self,
        key: &KeyView,
        route: Option<&'r Route>,
        at: &Arrival,
    ) -> Result<Plan<'r>, Refusal> {
        // Boxed: the cache's lookup future is large and rarely needed.
        let org =
            match self.orgs.remembered(&key.org, at.instant) {
                Some(org) => org,
                None => Box::pin(self.orgs.get(&key.org)).await.map_err(|_| {
                    Refusal::AuthUnavailable {
                        retry_after: ORG_RETRY,
                    }
                })?,
            };
        let org_limit = org.as_ref().as_ref().and_then(|o| o.rate_limit.as_ref());
        Ok(Plan::resolve(
            key.rate_limit(),
            org_limit,
            &self.global,
            route.and_then(|r| r.rate_limit.as_ref().map(|l| (r.name.as_str(), l))),
        ))
    }

    /// Admits the request and counts it in every window, or refuses it (429) and counts
    /// nothing. `quota` gets the headers to send either way. Call it after every other
    /// check. A key whose org cannot be read (store down, org never read) gets 503.
    /// Without a route (the verify API's scope check) only key, org and global limits
    /// apply. `at`: when the request arrived.
    pub async fn acquire(
        &self,
        key: &KeyView,
        route: Option<&Route>,
        at: &Arrival,
        quota: &mut Option<Quota>,
    ) -> Result<(), Refusal> {
        let plan = self.plan(key, route, at).await?;
        if plan.is_unlimited() {
            return Ok(());
        }
        let now = at.time;
        let decision = match self.limiter.acquire_at_once(&key.id, &plan, now) {
            Some(d) => d,
            None => self.limiter.acquire(&key.id, &plan, now).await,
        };
        *quota = decision.quota();
        if let Decision::Refused { window, .. } = &decision {
            self.metrics
                .rate_limited
                .with_label_values(&[
                    route.map_or(crate::metrics::NO_ROUTE, |r| r.name.as_str()),
                    window.as_str(),
                ])
                .inc();
        }
        decision.refusal().map_or(Ok(()), Err)
    }

    /// Where the key stands on this route, counting nothing; `None` when no limit
    /// applies or the org cannot be read.
    pub async fn peek(&self, key: &KeyView, route: Option<&Route>, at: &Arrival) -> Option<Quota> {
        let plan = self.plan(key, route, at).await.ok()?;
        if plan.is_unlimited() {
            return None;
        }
        self.limiter.peek(&key.id, &plan, at.time).await
    }
}

const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, replacing any
/// the upstream sent.
pub fn set_headers(headers: &mut HeaderMap, quota: &Quota) {
    headers.insert(RATELIMIT_LIMIT, crate::header_text::number(quota.limit));
    headers.insert(
        RATELIMIT_REMAINING,
        crate::header_text::number(quota.remaining),
    );
    headers.insert(
        RATELIMIT_RESET,
        crate::header_text::number(quota.reset.as_secs()),
    );
}

/// Adds the `RateLimit-*` headers to a response, if its request's key authenticated
/// (`key` is the key the request named; a 401 means it did not authenticate): `quota`
/// from the limiter if it was reached; otherwise, for a 403, a look at the counters.
/// Other responses without a decision (a 400 after authorization, a 503) get none,
/// since no limit was looked at.
pub async fn annotate<B>(
    limits: &RateLimits,
    resp: &mut http::Response<B>,
    key: Option<&KeyView>,
    route: Option<&Route>,
    quota: Option<Quota>,
    at: &Arrival,
) -> Option<Quota> {
    let quota = match (quota, key, route) {
        (Some(q), Some(_), _) => Some(q),
        // Boxed: only a 403 looks, and the look's future is large.
        (None, Some(key), Some(route)) if resp.status() == http::StatusCode::FORBIDDEN => {
            Box::pin(limits.peek(key, Some(route), at)).await
        }
        _ => None,
    };
    if let Some(q) = &quota {
        set_headers(resp.headers_mut(), q);
    }
    quota
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::key::{KeyHash, KeyPolicy, Org, Shared};
    use crate::store::{EmbeddedStore, KeyStore};

    fn org(limit: Option<RateLimit>) -> Org {
        Org {
            id: "acme".into(),
            name: "Acme".into(),
            key_policy: KeyPolicy::Org,
            max_key_lifetime_days: None,
            rate_limit: limit,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            version: 1,
        }
    }

    fn key(limit: Option<RateLimit>) -> KeyView {
        crate::key::KeyRecord {
            rate_limit: limit,
            ..crate::key::KeyRecord::sample(KeyHash([7; 32]))
        }
        .into_view(&KeyHash([7; 32]), &Shared::default())
    }

    fn route(limit: Option<RateLimit>) -> Route {
        Route {
            name: "list-feeds".into(),
            upstream: "feeds".into(),
            scope: "read".into(),
            resource: None,
            query_key: false,
            environments: None,
            rate_limit: limit,
        }
    }

    fn per_minute(n: u64) -> RateLimit {
        RateLimit {
            per_minute: Some(n),
            ..RateLimit::default()
        }
    }

    #[tokio::test]
    async fn the_org_limit_is_each_keys_default_and_org_changes_apply_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KeyStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap());
        store.create_org(&org(Some(per_minute(2)))).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(FakeClock::at("2024-05-01T10:00:00Z".parse().unwrap()));
        let limits = RateLimits::new(
            Arc::new(LocalLimiter::new()),
            per_minute(100),
            Arc::new(OrgCache::new(store.clone(), Duration::from_secs(60))),
            metrics.clone(),
        );
        let at = || Arrival {
            instant: std::time::Instant::now(),
            time: clock.now(),
        };
        let (k, r) = (key(None), route(None));
        let mut q = None;
        limits.acquire(&k, Some(&r), &at(), &mut q).await.unwrap();
        assert_eq!(q.unwrap().limit, 2);
        limits.acquire(&k, Some(&r), &at(), &mut q).await.unwrap();
        assert_eq!(q.unwrap().remaining, 0);
        let refused = limits
            .acquire(&k, Some(&r), &at(), &mut q)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        assert_eq!(refused.retry_after(), Some(Duration::from_secs(60)));
        assert_eq!(
            metrics
                .rate_limited
                .with_label_values(&["list-feeds", "minute"])
                .get(),
            1
        );
        // The key's own value wins over the org's.
        let own = key(Some(per_minute(5)));
        limits.acquire(&own, Some(&r), &at(), &mut q).await.unwrap();
        assert_eq!((q.unwrap().limit, q.unwrap().remaining), (5, 2));

        // Lifting the org limit: the global one applies once the cached org expires.
        store.update_org(&org(None), 1).await.unwrap();
        tokio::time::sleep(orgs::FRESH_FOR + Duration::from_millis(50)).await;
        limits.acquire(&k, Some(&r), &at(), &mut q).await.unwrap();
        assert_eq!((q.unwrap().limit, q.unwrap().remaining), (100, 96));
        assert_eq!(
            limits.peek(&k, Some(&r), &at()).await.unwrap().remaining,
            96
        );
    }

    #[tokio::test]
    async fn no_limit_anywhere_means_no_counting_and_no_headers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KeyStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap());
        let limits = RateLimits::new(
            Arc::new(LocalLimiter::new()),
            RateLimit::default(),
            Arc::new(OrgCache::new(store, Duration::from_secs(60))),
            Arc::new(Metrics::new()),
        );
        let mut q = None;
        // No org record and no limits anywhere: admitted, no headers.
        limits
            .acquire(&key(None), Some(&route(None)), &Arrival::now(), &mut q)
            .await
            .unwrap();
        assert_eq!(q, None);
        assert_eq!(
            limits
                .peek(&key(None), Some(&route(None)), &Arrival::now())
                .await,
            None
        );
    }

    #[test]
    fn headers_replace_the_upstreams() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", http::HeaderValue::from_static("999"));
        set_headers(
            &mut h,
            &Quota {
                limit: 10,
                remaining: 3,
                reset: Duration::from_secs(42),
            },
        );
        assert_eq!(h.get_all("ratelimit-limit").iter().count(), 1);
        assert_eq!(h["ratelimit-limit"], "10");
        assert_eq!(h["ratelimit-remaining"], "3");
        assert_eq!(h["ratelimit-reset"], "42");
    }
}
