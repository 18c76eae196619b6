//! The limiter shared by replicas on the Redis store (SPEC §3: no window admits more
//! than its limit across all replicas together), without a Redis round trip per
//! request at high load.
//!
//! Every window of a request (the key's, and the route's if it has limits) is a
//! fixed-window counter in Redis that counts tokens *granted*. A replica leases tokens
//! from the counters ([`WindowStore::lease_windows`], one Lua script, all windows or
//! none) and admits requests from its lease, locally, until it runs dry:
//!
//! - Never more than the limit: Redis never grants past it, and a token is used once.
//! - Never needlessly less: a lease is sized to about [`LEASE_HORIZON`] of the key's
//!   recent traffic on this replica, at most [`LEASE_SHARE`]⁻¹ of what the window had
//!   left, and a single token (the exact per-request check) for keys slower than
//!   [`MIN_LEASE`] requests per horizon. So as a window nears its limit leases shrink
//!   to one token, and the last tokens go one request at a time to whichever replica
//!   asks. Tokens a replica holds and does not use for [`IDLE_REFUND`] are given back
//!   ([`WindowStore::refund_window`]); a request refused by Redis first looks again at
//!   its own replica's lease, which a concurrent grant may have filled.
//!
//! The reasoning (and why not GCRA or one script call per request) is in
//! ARCHITECTURE.md, "Rate limits".
//!
//! While Redis cannot answer (down, or slower than the store timeout), each replica
//! decides with its own exact [`LocalLimiter`], as SPEC §3 asks; those local counts
//! are not merged back into Redis when it returns.
//!
//! It never logs a key's secret (it sees key ids only), never holds a lock across an
//! await, and never waits on Redis longer than the store timeout.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::Notify;

use super::Limiter;
use super::local::LocalLimiter;
use super::plan::{Count, Decision, Limits, Plan, Quota};
use super::window::{Span, Window};
use crate::store::WindowStore;

/// Counters outlive their window's end by this much, so replicas whose clocks differ
/// by less never see a counter expire under a window they still count in.
const EXPIRY_SLACK_SECS: i64 = 60;
/// A lease holds about this much of the key's recent traffic on this replica.
pub const LEASE_HORIZON: Duration = Duration::from_secs(1);
/// A lease takes at most 1/`LEASE_SHARE` of what its window has left.
pub const LEASE_SHARE: u64 = 8;
/// Keys slower than this many requests per [`LEASE_HORIZON`] lease one token at a time
/// (the exact per-request check): their round trips cost nothing that matters.
pub const MIN_LEASE: u64 = 4;
/// No lease is larger than this.
const MAX_LEASE: u64 = 10_000;
/// Tokens held this long without a request are given back.
pub const IDLE_REFUND: Duration = Duration::from_millis(500);
/// How often held tokens are checked for refunds.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// A lease with nothing held is forgotten after this long without a request.
const FORGET_AFTER: Duration = Duration::from_secs(10);
const SHARDS: usize = 64;

pub struct RedisLimiter {
    store: Arc<dyn WindowStore>,
    local: LocalLimiter,
    timeout: Duration,
    /// Leases by counter name, sharded by key id: all counters of a key under one lock.
    shards: Box<[Mutex<HashMap<String, Lease>>]>,
    /// Per shard: woken when a lease call of one of its keys comes back.
    answered: Box<[Notify]>,
    hasher: RandomState,
}

/// Tokens of one window counter that this replica holds.
struct Lease {
    /// Granted by Redis and not yet used.
    tokens: u64,
    /// To give back at the next sweep (held under a limit that has since changed).
    refund: u64,
    /// The limit they were granted under.
    limit: u64,
    /// The counter's value in Redis at our last grant (tokens used or held by all).
    counted: u64,
    /// The window's end (Unix seconds): nothing is given back after it.
    end: i64,
    /// Size and time of the last grant: how fast it was used sizes the next.
    granted: u64,
    granted_at: Instant,
    /// The last request that took a token.
    touched: Instant,
    /// Requests of this replica waiting on Redis for this counter.
    asking: u32,
}

impl Lease {
    fn empty(c: &Counter, now: Instant) -> Self {
        Lease {
            tokens: 0,
            refund: 0,
            limit: c.limit,
            counted: 0,
            end: c.span.end,
            granted: 0,
            granted_at: now,
            touched: now,
            asking: 0,
        }
    }

    /// Tokens to ask for when this lease has run dry.
    fn want(&self, limit: u64, now: Instant) -> u64 {
        if self.limit != limit {
            return 1;
        }
        let elapsed = now.duration_since(self.granted_at).as_secs_f64().max(0.001);
        let per_horizon = (self.granted as f64 * LEASE_HORIZON.as_secs_f64() / elapsed) as u64;
        if per_horizon < MIN_LEASE {
            return 1;
        }
        per_horizon
            .min(limit.saturating_sub(self.counted) / LEASE_SHARE)
            .clamp(1, MAX_LEASE)
    }
}

/// One counter the plan asks for.
struct Counter {
    name: String,
    window: Window,
    limit: u64,
    span: Span,
}

impl RedisLimiter {
    /// `timeout` bounds each decision's wait on Redis (`store.timeout`). Call
    /// [`RedisLimiter::start`] to have idle tokens given back.
    pub fn new(store: Arc<dyn WindowStore>, timeout: Duration) -> Self {
        RedisLimiter {
            store,
            local: LocalLimiter::new(),
            timeout,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            answered: (0..SHARDS).map(|_| Notify::new()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Starts the task that gives back idle tokens; it ends when the limiter is dropped.
    pub fn start(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.refund_idle(Instant::now(), Timestamp::now().as_second())
                    .await;
            }
        });
    }

    fn shard_index(&self, key_id: &str) -> usize {
        (self.hasher.hash_one(key_id) as usize) % self.shards.len()
    }

    fn shard(&self, key_id: &str) -> MutexGuard<'_, HashMap<String, Lease>> {
        // Leases are plain numbers: valid whatever panicked while holding the lock.
        self.shards[self.shard_index(key_id)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn counters(key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Vec<Counter> {
        let mut out = Vec::with_capacity(10);
        // `route` is `""` for the key's own windows; names are built in one go, with no
        // intermediate owner string.
        let mut add = |route: &str, limits: &Limits| {
            for (i, window) in Window::ALL.iter().enumerate() {
                if let Some(limit) = limits[i] {
                    let span = window.span(now);
                    let (w, start) = (window.as_str(), span.start);
                    out.push(Counter {
                        name: if route.is_empty() {
                            format!("{key_id}:{w}:{start}")
                        } else {
                            format!("{key_id}:r:{route}:{w}:{start}")
                        },
                        window: *window,
                        limit,
                        span,
                    });
                }
            }
        };
        add("", &plan.key);
        if let Some((route, limits)) = &plan.route {
            add(route, limits);
        }
        out
    }

    /// Takes one held token from every counter that has one. Returns, per counter, the
    /// count used before this request as last known (`Some`) where a token was taken,
    /// or the tokens to ask Redis for (`Err`) where none was held.
    fn reserve(&self, key_id: &str, counters: &[Counter], now: Instant) -> Vec<Result<u64, u64>> {
        let mut shard = self.shard(key_id);
        counters
            .iter()
            .map(|c| {
                if !shard.contains_key(&c.name) {
                    shard.insert(c.name.clone(), Lease::empty(c, now));
                }
                let Some(l) = shard.get_mut(&c.name) else {
                    return Err(1);
                };
                if l.limit == c.limit && l.tokens > 0 {
                    let used = l.counted.saturating_sub(l.tokens);
                    l.tokens -= 1;
                    l.touched = now;
                    return Ok(used);
                }
                // One bulk lease at a time: requests that come while another one is
                // asked for take one token each, so concurrency never multiplies a lease.
                let want = if l.asking == 0 {
                    l.want(c.limit, now)
                } else {
                    1
                };
                if l.limit != c.limit {
                    // The limit changed: what was granted under the old one goes back.
                    l.refund += std::mem::take(&mut l.tokens);
                    l.limit = c.limit;
                    l.counted = 0;
                }
                l.asking += 1;
                Err(want)
            })
            .collect()
    }

    /// Adds what Redis granted (`grants`: tokens, counter after, for the counters that
    /// had none) to the leases, keeping one token of each for this request, and sets
    /// those counters' entries of `taken` to the count used before this request.
    fn add_grants(
        &self,
        key_id: &str,
        counters: &[Counter],
        taken: &mut [Result<u64, u64>],
        grants: &[(u64, u64)],
        now: Instant,
    ) {
        let mut shard = self.shard(key_id);
        let lacking = counters
            .iter()
            .zip(taken.iter_mut())
            .filter(|(_, t)| t.is_err());
        for ((c, t), &(granted, after)) in lacking.zip(grants) {
            // The entry exists (`reserve` made it); a sweep never drops one asked for.
            let l = shard
                .entry(c.name.clone())
                .or_insert_with(|| Lease::empty(c, now));
            l.asking = l.asking.saturating_sub(1);
            if l.limit != c.limit {
                l.refund += std::mem::take(&mut l.tokens);
                l.limit = c.limit;
            }
            // Grants of concurrent requests may come back in any order.
            l.counted = l.counted.max(after);
            l.tokens += granted.saturating_sub(1);
            l.granted = granted;
            l.granted_at = now;
            l.touched = now;
            *t = Ok(l.counted.saturating_sub(l.tokens + 1));
        }
        drop(shard);
        self.answered[self.shard_index(key_id)].notify_waiters();
    }

    /// Waits (until `deadline` at most) until no other request of this replica is
    /// waiting on Redis for a counter `taken` had none of: a grant still on its way
    /// may bring tokens this request can use.
    async fn settle(
        &self,
        key_id: &str,
        counters: &[Counter],
        taken: &[Result<u64, u64>],
        deadline: tokio::time::Instant,
    ) {
        let notify = &self.answered[self.shard_index(key_id)];
        loop {
            let answered = notify.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let pending = {
                let shard = self.shard(key_id);
                counters
                    .iter()
                    .zip(taken)
                    .any(|(c, t)| t.is_err() && shard.get(&c.name).is_some_and(|l| l.asking > 0))
            };
            if !pending || tokio::time::timeout_at(deadline, answered).await.is_err() {
                return;
            }
        }
    }

    /// Gives back tokens held without use for [`IDLE_REFUND`] (or under a changed
    /// limit) and forgets leases of ended windows or long idle.
    async fn refund_idle(&self, now: Instant, now_secs: i64) {
        let mut refunds = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|name, l| {
                if l.end <= now_secs {
                    return false;
                }
                let idle = now.duration_since(l.touched);
                let mut back = std::mem::take(&mut l.refund);
                if idle >= IDLE_REFUND {
                    back += std::mem::take(&mut l.tokens);
                }
                if back > 0 {
                    refunds.push((name.clone(), back));
                }
                l.tokens > 0 || l.asking > 0 || idle < FORGET_AFTER
            });
        }
        for (name, tokens) in refunds {
            // A refund that fails leaves the tokens counted: the window admits less,
            // never more.
            let _ =
                tokio::time::timeout(self.timeout, self.store.refund_window(&name, tokens)).await;
        }
    }
}

/// A request's part in its key's leases while it is decided. Dropped (also when the
/// request is cancelled mid-wait), it puts back the tokens it reserved unless it was
/// admitted, ends its wait on Redis for the counters it had no token of, and wakes the
/// requests that [`settle`](RedisLimiter::settle) on them.
struct Hold<'a> {
    limiter: &'a RedisLimiter,
    key_id: &'a str,
    counters: &'a [Counter],
    /// Per counter: `Ok` = a token is in hand; `Err` = waiting on Redis for it.
    taken: Vec<Result<u64, u64>>,
    /// Put the tokens in hand back on drop (not once the request is admitted).
    give_back: bool,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let waited = self.taken.iter().any(Result::is_err);
        if !self.give_back && !waited {
            // Admitted from the lease: nothing to put back, no wait to end.
            return;
        }
        let mut shard = self.limiter.shard(self.key_id);
        for (c, t) in self.counters.iter().zip(&self.taken) {
            let Some(l) = shard.get_mut(&c.name) else {
                continue;
            };
            match t {
                Ok(_) if self.give_back && l.limit == c.limit => l.tokens += 1,
                Ok(_) => {}
                Err(_) => l.asking = l.asking.saturating_sub(1),
            }
        }
        drop(shard);
        // Only a wait on Redis ending can change what `settle` waits for.
        if waited {
            self.limiter.answered[self.limiter.shard_index(self.key_id)].notify_waiters();
        }
    }
}

fn counts(counters: &[Counter], used: impl IntoIterator<Item = u64>) -> Vec<Count> {
    counters
        .iter()
        .zip(used)
        .map(|(c, used)| Count {
            window: c.window,
            limit: c.limit,
            used,
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
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut hold = Hold {
            limiter: self,
            key_id,
            counters: &counters,
            taken: self.reserve(key_id, &counters, started),
            give_back: true,
        };
        if hold.taken.iter().all(Result::is_ok) {
            hold.give_back = false;
            return Decision::from_counts(
                &counts(&counters, hold.taken.iter().flatten().copied()),
                now,
            );
        }
        let windows: Vec<(String, u64, i64, u64)> = counters
            .iter()
            .zip(&hold.taken)
            .filter_map(|(c, t)| {
                t.err().map(|want| {
                    (
                        c.name.clone(),
                        c.limit,
                        c.span.end + EXPIRY_SLACK_SECS,
                        want,
                    )
                })
            })
            .collect();
        match tokio::time::timeout_at(deadline, self.store.lease_windows(&windows)).await {
            Ok(Ok((true, grants))) if grants.len() == windows.len() => {
                self.add_grants(key_id, &counters, &mut hold.taken, &grants, started);
                hold.give_back = false;
                // Every counter had room, so these counts admit.
                let used = hold.taken.iter().map(|t| t.unwrap_or(0));
                Decision::from_counts(&counts(&counters, used), now)
            }
            Ok(Ok((false, grants))) if grants.len() == windows.len() => {
                let taken = hold.taken.clone();
                drop(hold);
                // A concurrent request of this replica may have been granted tokens
                // (its answer can be on its way still): use them rather than refuse
                // while they sit here.
                self.settle(key_id, &counters, &taken, deadline).await;
                let mut again = Hold {
                    limiter: self,
                    key_id,
                    counters: &counters,
                    taken: self.reserve(key_id, &counters, Instant::now()),
                    give_back: true,
                };
                if again.taken.iter().all(Result::is_ok) {
                    again.give_back = false;
                    return Decision::from_counts(
                        &counts(&counters, again.taken.iter().flatten().copied()),
                        now,
                    );
                }
                drop(again);
                // Redis's counts for the counters asked about; what is known for the rest.
                let mut from_redis = grants.iter().map(|(_, after)| *after);
                let used = taken.iter().map(|t| match t {
                    Ok(u) => *u,
                    Err(_) => from_redis.next().unwrap_or(0),
                });
                Decision::from_counts(&counts(&counters, used), now)
            }
            _ => {
                drop(hold);
                self.local.acquire_now(key_id, plan, now)
            }
        }
    }

    async fn peek(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Quota> {
        if plan.is_unlimited() {
            return None;
        }
        let counters = Self::counters(key_id, plan, now);
        let names: Vec<String> = counters.iter().map(|c| c.name.clone()).collect();
        match tokio::time::timeout(self.timeout, self.store.peek_windows(&names)).await {
            // Tokens held by replicas count as used: the remaining shown is never more
            // than what is left.
            Ok(Ok(used)) if used.len() == counters.len() => {
                Decision::peek(&counts(&counters, used), now)
            }
            _ => self.local.peek_now(key_id, plan, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::RateLimit;
    use crate::store::{RedisStore, test_redis};

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

    fn per_minute(n: u64) -> RateLimit {
        RateLimit {
            per_minute: Some(n),
            ..RateLimit::default()
        }
    }

    /// A moment at least 10 s before the current minute ends (waiting for the next
    /// minute if need be). The tests pass it as the request time while the sweep reads
    /// the real clock, and the sweep forgets, without a refund, the leases of a window
    /// that ended: a test whose minute ends under it would see tokens never given back.
    async fn well_inside_a_minute() -> Timestamp {
        let now = Timestamp::now();
        let left = Window::Minute.span(now).end - now.as_second();
        if left < 10 {
            tokio::time::sleep(Duration::from_secs(left.unsigned_abs() + 1)).await;
            return Timestamp::now();
        }
        now
    }

    /// The minute counter of `key` as Redis holds it: tokens used or held.
    async fn counted(l: &RedisLimiter, key: &str, now: Timestamp) -> u64 {
        let name = format!("{key}:minute:{}", Window::Minute.span(now).start);
        l.store.peek_windows(&[name]).await.unwrap()[0]
    }

    #[tokio::test]
    async fn a_busy_key_is_served_from_a_lease_and_idle_tokens_go_back() {
        let server = test_redis::RedisServer::start();
        let a = Arc::new(limiter(&server.url(0)));
        a.start();
        let limit = per_minute(1_000_000);
        let plan = Plan::resolve(Some(&limit), None, &RateLimit::default(), None);
        let now = well_inside_a_minute().await;
        for _ in 0..200 {
            assert!(admitted(&a.acquire("key_1", &plan, now).await));
        }
        // The first request took one token; the next ones leased ahead, so Redis
        // counts more than was used: most requests never went to Redis.
        let held = counted(&a, "key_1", now).await;
        assert!(held > 200, "Redis counts {held}: no lease was taken");
        // Headers count what was used, not what is held.
        let Decision::Admitted(q) = a.acquire("key_1", &plan, now).await else {
            panic!("not admitted");
        };
        assert_eq!(q.remaining, 1_000_000 - 201);
        // Idle: the unused tokens go back, and the counter is exactly what was used.
        // The sweep runs every SWEEP_EVERY after IDLE_REFUND; on a busy machine it can
        // run late, so wait for it (bounded) rather than for a fixed time.
        tokio::time::sleep(IDLE_REFUND).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut last = counted(&a, "key_1", now).await;
        while last != 201 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(SWEEP_EVERY).await;
            last = counted(&a, "key_1", now).await;
        }
        assert_eq!(
            last, 201,
            "Redis still counts unused leased tokens after 10 s idle"
        );
    }

    #[tokio::test]
    async fn leases_of_two_replicas_never_admit_more_and_leave_nothing_unused_under_demand() {
        let server = test_redis::RedisServer::start();
        let a = Arc::new(limiter(&server.url(0)));
        let b = Arc::new(limiter(&server.url(0)));
        a.start();
        b.start();
        let limit = per_minute(500);
        let plan = Plan::resolve(Some(&limit), None, &RateLimit::default(), None);
        let now = well_inside_a_minute().await;
        // Demand well over the limit, on both replicas, in rounds of concurrent requests.
        let mut admitted_total = 0;
        for _round in 0..40 {
            let mut tasks = Vec::new();
            for i in 0..40 {
                let l = if i % 2 == 0 { a.clone() } else { b.clone() };
                let plan = plan.clone();
                tasks.push(tokio::spawn(async move {
                    admitted(&l.acquire("key_2", &plan, now).await)
                }));
            }
            for t in tasks {
                admitted_total += usize::from(t.await.unwrap());
            }
        }
        assert_eq!(admitted_total, 500);
        assert_eq!(counted(&a, "key_2", now).await, 500);
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
