//! The limiter shared by replicas on the Redis store (SPEC §3: no window admits more
//! than its limit across all replicas together).
//!
//! Every window of a request (the key's, and the route's if it has limits) is a
//! fixed-window counter in Redis, checked and counted in one Lua script
//! ([`RedisStore::take_windows`]): all or nothing, so a request refused by one window
//! counts in none, and the total admitted in a window is exactly its limit when demand
//! exceeds it. Why fixed windows in Lua rather than GCRA or leased budgets is in
//! ARCHITECTURE.md, "Rate limits".
//!
//! While Redis cannot answer (down, or slower than the store timeout), each replica
//! decides with its own exact [`LocalLimiter`], as SPEC §3 asks; those local counts
//! are not merged back into Redis when it returns.
//!
//! It never logs a key's secret (it sees key ids only) and never waits on Redis longer
//! than the store timeout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::Limiter;
use super::local::LocalLimiter;
use super::plan::{Count, Decision, Limits, Plan, Quota};
use super::window::{Span, Window};
use crate::store::RedisStore;

/// Counters outlive their window's end by this much, so replicas whose clocks differ
/// by less never see a counter expire under a window they still count in.
const EXPIRY_SLACK_SECS: i64 = 60;

pub struct RedisLimiter {
    store: Arc<RedisStore>,
    local: LocalLimiter,
    timeout: Duration,
}

/// One counter the plan asks for.
struct Counter {
    name: String,
    window: Window,
    limit: u64,
    span: Span,
}

impl RedisLimiter {
    /// `timeout` bounds each decision's wait on Redis (`store.timeout`).
    pub fn new(store: Arc<RedisStore>, timeout: Duration) -> Self {
        RedisLimiter {
            store,
            local: LocalLimiter::new(),
            timeout,
        }
    }

    fn counters(key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Vec<Counter> {
        let mut out = Vec::with_capacity(10);
        let mut add = |owner: String, limits: &Limits| {
            for (i, window) in Window::ALL.iter().enumerate() {
                if let Some(limit) = limits[i] {
                    let span = window.span(now);
                    out.push(Counter {
                        name: format!("{owner}:{}:{}", window.as_str(), span.start),
                        window: *window,
                        limit,
                        span,
                    });
                }
            }
        };
        add(key_id.to_string(), &plan.key);
        if let Some((route, limits)) = &plan.route {
            add(format!("{key_id}:r:{route}"), limits);
        }
        out
    }
}

fn counts(counters: &[Counter], used: &[u64]) -> Vec<Count> {
    counters
        .iter()
        .zip(used)
        .map(|(c, used)| Count {
            window: c.window,
            limit: c.limit,
            used: *used,
            span: c.span,
        })
        .collect()
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Decision {
        if plan.is_unlimited() {
            return Decision::Unlimited;
        }
        let counters = Self::counters(key_id, plan, now);
        let windows: Vec<(String, u64, i64)> = counters
            .iter()
            .map(|c| (c.name.clone(), c.limit, c.span.end + EXPIRY_SLACK_SECS))
            .collect();
        match tokio::time::timeout(self.timeout, self.store.take_windows(&windows)).await {
            // The script admitted iff every window had room, the rule `from_counts`
            // applies to the same counts, so the two always agree.
            Ok(Ok((_, used))) => Decision::from_counts(&counts(&counters, &used), now),
            _ => self.local.acquire_now(key_id, plan, now),
        }
    }

    async fn peek(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Quota> {
        if plan.is_unlimited() {
            return None;
        }
        let counters = Self::counters(key_id, plan, now);
        let names: Vec<String> = counters.iter().map(|c| c.name.clone()).collect();
        match tokio::time::timeout(self.timeout, self.store.peek_windows(&names)).await {
            Ok(Ok(used)) if used.len() == counters.len() => {
                Decision::peek(&counts(&counters, &used), now)
            }
            _ => self.local.peek_now(key_id, plan, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RateLimit;
    use crate::store::test_redis;

    fn limiter(url: &str) -> RedisLimiter {
        let store = RedisStore::open(url, "kgtest", Duration::from_secs(1)).unwrap();
        RedisLimiter::new(Arc::new(store), Duration::from_secs(1))
    }

    fn admitted(d: &Decision) -> bool {
        matches!(d, Decision::Admitted(_))
    }

    #[tokio::test]
    async fn two_replicas_together_admit_exactly_the_limit_and_refusals_count_nowhere() {
        let server = test_redis::RedisServer::start();
        let a = Arc::new(limiter(&server.url(0)));
        let b = Arc::new(limiter(&server.url(0)));
        let key = RateLimit {
            per_minute: Some(30),
            per_day: Some(1_000),
            ..RateLimit::default()
        };
        let now = Timestamp::now();
        let mut tasks = Vec::new();
        for i in 0..80 {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let plan = Plan::resolve(Some(&key), None, &RateLimit::default(), None);
                admitted(&l.acquire("key_1", &plan, now).await)
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += usize::from(t.await.unwrap());
        }
        assert_eq!(n, 30);
        // The day window counted only the admitted ones.
        let plan = Plan::resolve(Some(&key), None, &RateLimit::default(), None);
        let q = a.peek("key_1", &plan, now).await.unwrap();
        assert_eq!(q.remaining, 0);
        let day = RateLimit {
            per_day: Some(1_000),
            ..RateLimit::default()
        };
        let plan = Plan::resolve(Some(&day), None, &RateLimit::default(), None);
        assert_eq!(b.peek("key_1", &plan, now).await.unwrap().remaining, 970);
    }

    #[tokio::test]
    async fn while_redis_is_down_each_replica_enforces_on_its_own() {
        let mut server = test_redis::RedisServer::start();
        let url = server.url(0);
        server.stop();
        let l = limiter(&url);
        let key = RateLimit {
            per_minute: Some(3),
            ..RateLimit::default()
        };
        let plan = Plan::resolve(Some(&key), None, &RateLimit::default(), None);
        let now = Timestamp::now();
        let mut n = 0;
        for _ in 0..5 {
            n += usize::from(admitted(&l.acquire("key_1", &plan, now).await));
        }
        assert_eq!(n, 3);
    }
}
