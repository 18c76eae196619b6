//! The exact in-process limiter: window counters per key in memory, sharded by key id.
//!
//! All counters of one key live in one shard, behind one lock, so the check of every
//! window and the increment of every window happen together: of any number of
//! concurrent requests, no window ever admits more than its limit, and a request
//! refused by one window is counted in none.
//!
//! Counters are per process: on the embedded store that is the whole gateway; on Redis
//! this is the fallback each replica enforces on its own while Redis is unreachable.
//! On the embedded store the day and month quotas outlive a restart: [`QuotaFile`]
//! writes the counters that changed to the store every [`QUOTA_SAVE_EVERY`] and at
//! shutdown, and reads them back at start (a crash loses at most the last interval's
//! counts). Second, minute and hour windows start afresh after a restart.
//!
//! Memory: one entry per key that has a limit and was used in the current month; a
//! shard drops, every few thousand operations, the entries whose every window has
//! ended (which changes nothing: such an entry counts as zero everywhere).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::Limiter;
use super::plan::{Count, Decision, Limits, Plan, Quota};
use super::window::{Span, Window};
use crate::store::{QuotaCount, QuotaStore, StoreError};

/// How often [`QuotaFile`] writes the quota counters that changed.
pub const QUOTA_SAVE_EVERY: Duration = Duration::from_secs(5);
/// Indexes of the day and month windows in [`Window::ALL`]: the ones kept across restarts.
const QUOTA_WINDOWS: [usize; 2] = [3, 4];

const SHARDS: usize = 64;
/// Operations on a shard between sweeps of its ended entries.
const SWEEP_EVERY: u32 = 4096;

pub struct LocalLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: crate::FastHash,
    /// Note which keys' quota counters changed, for [`QuotaFile`].
    track_quotas: bool,
}

#[derive(Default)]
struct Shard {
    keys: HashMap<String, Counters, crate::FastHash>,
    ops: u32,
    /// Keys whose day or month counters changed since they were last saved.
    changed: HashSet<String, crate::FastHash>,
}

/// A key's counters: its own five windows, and five per limited route it called.
#[derive(Default)]
struct Counters {
    key: Slots,
    routes: Vec<(Box<str>, Slots)>,
}

type Slots = [Slot; 5];

/// The count of one window instance.
#[derive(Default, Clone, Copy)]
struct Slot {
    /// Start of the instance counted; an older start means the count is stale.
    start: i64,
    count: u64,
}

impl Slot {
    fn used(&self, span: &Span) -> u64 {
        // A slot ahead of `span` (the clock stepped back) keeps its count: that never
        // admits more than the limit.
        if self.start >= span.start {
            self.count
        } else {
            0
        }
    }

    fn add(&mut self, span: &Span) {
        if self.start >= span.start {
            self.count = self.count.saturating_add(1);
        } else {
            *self = Slot {
                start: span.start,
                count: 1,
            };
        }
    }

    fn live(&self, span: &Span) -> bool {
        self.count > 0 && self.start >= span.start
    }
}

impl Counters {
    fn live(&self, spans: &[Span; 5]) -> bool {
        let live = |slots: &Slots| slots.iter().zip(spans).any(|(s, sp)| s.live(sp));
        live(&self.key) || self.routes.iter().any(|(_, s)| live(s))
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    pub fn new() -> Self {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: crate::FastHash::default(),
            track_quotas: false,
        }
    }

    /// A limiter whose day and month counters a [`QuotaFile`] keeps across restarts.
    pub fn with_saved_quotas() -> Self {
        LocalLimiter {
            track_quotas: true,
            ..Self::new()
        }
    }

    /// The day and month counters of the keys that changed since the last call.
    fn changed_quotas(&self, now: Timestamp) -> Vec<QuotaCount> {
        let spans = Window::ALL.map(|w| w.span(now));
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let changed = std::mem::take(&mut shard.changed);
            for key_id in changed {
                let Some(counters) = shard.keys.get(&key_id) else {
                    continue;
                };
                let mut add = |owner: String, slots: &Slots| {
                    for i in QUOTA_WINDOWS {
                        if slots[i].live(&spans[i]) {
                            out.push(QuotaCount {
                                owner: owner.clone(),
                                window: Window::ALL[i].as_str().to_string(),
                                start: slots[i].start,
                                count: slots[i].count,
                            });
                        }
                    }
                };
                add(key_id.clone(), &counters.key);
                for (route, slots) in &counters.routes {
                    add(format!("{key_id}:r:{route}"), slots);
                }
            }
        }
        out
    }

    /// Marks keys as changed again (their counters could not be saved).
    fn mark_changed(&self, owners: impl IntoIterator<Item = String>) {
        for owner in owners {
            let key_id = owner.split(":r:").next().unwrap_or_default().to_string();
            self.shard(&key_id).changed.insert(key_id);
        }
    }

    /// Puts saved counters back, where their window is still the current one.
    fn restore(&self, counts: &[QuotaCount], now: Timestamp) -> usize {
        let spans = Window::ALL.map(|w| w.span(now));
        let mut restored = 0;
        for c in counts {
            let Some(i) = QUOTA_WINDOWS
                .into_iter()
                .find(|&i| Window::ALL[i].as_str() == c.window)
            else {
                continue;
            };
            if c.start != spans[i].start {
                continue;
            }
            let (key_id, route) = match c.owner.split_once(":r:") {
                Some((k, r)) => (k, Some(r)),
                None => (c.owner.as_str(), None),
            };
            let mut shard = self.shard(key_id);
            let counters = shard.keys.entry(key_id.to_string()).or_default();
            let slots = match route {
                None => &mut counters.key,
                Some(r) => route_slots(&mut counters.routes, r),
            };
            let slot = &mut slots[i];
            if slot.start < c.start || slot.count < c.count {
                *slot = Slot {
                    start: c.start,
                    count: c.count,
                };
            }
            restored += 1;
        }
        restored
    }

    fn shard(&self, key_id: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key_id) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave counters half-updated in a way
        // that matters (each is one integer), so a poisoned lock is used as is.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks every window and, if all have room, counts the request in all of them,
    /// under one lock.
    pub fn acquire_now(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Decision {
        if plan.is_unlimited() {
            return Decision::Unlimited;
        }
        let spans = Window::ALL.map(|w| w.span(now));
        let mut shard = self.shard(key_id);
        shard.ops = shard.ops.wrapping_add(1);
        if shard.ops.is_multiple_of(SWEEP_EVERY) {
            shard.keys.retain(|_, c| c.live(&spans));
        }
        if !shard.keys.contains_key(key_id) {
            shard.keys.insert(key_id.to_string(), Counters::default());
        }
        let Some(counters) = shard.keys.get_mut(key_id) else {
            return Decision::Unlimited;
        };
        let Counters { key, routes } = counters;
        let route = plan
            .route
            .as_ref()
            .map(|(name, limits)| (route_slots(routes, name), limits));

        let mut counts = Counts::new();
        collect(&mut counts, key, &plan.key, &spans);
        if let Some((slots, limits)) = &route {
            collect(&mut counts, slots, limits, &spans);
        }
        let decision = Decision::from_counts(&counts, now);
        let quota_windows = |l: &Limits| QUOTA_WINDOWS.iter().any(|&i| l[i].is_some());
        let track = self.track_quotas
            && matches!(decision, Decision::Admitted(_))
            && (quota_windows(&plan.key) || route.as_ref().is_some_and(|(_, l)| quota_windows(l)));
        if matches!(decision, Decision::Admitted(_)) {
            for (slot, span) in key.iter_mut().zip(&spans) {
                slot.add(span);
            }
            if let Some((slots, _)) = route {
                for (slot, span) in slots.iter_mut().zip(&spans) {
                    slot.add(span);
                }
            }
        }
        if track && !shard.changed.contains(key_id) {
            shard.changed.insert(key_id.to_string());
        }
        decision
    }

    /// Where the key stands, counting nothing.
    pub fn peek_now(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Quota> {
        if plan.is_unlimited() {
            return None;
        }
        let spans = Window::ALL.map(|w| w.span(now));
        let shard = self.shard(key_id);
        let counters = shard.keys.get(key_id);
        let empty = Slots::default();
        let mut counts = Counts::new();
        collect(
            &mut counts,
            counters.map_or(&empty, |c| &c.key),
            &plan.key,
            &spans,
        );
        if let Some((name, limits)) = &plan.route {
            let slots = counters
                .and_then(|c| c.routes.iter().find(|(n, _)| **n == **name))
                .map_or(&empty, |(_, s)| s);
            collect(&mut counts, slots, limits, &spans);
        }
        Decision::peek(&counts, now)
    }
}

/// The counters of a key on route `name`, added (at zero) if the key has none yet.
fn route_slots<'a>(routes: &'a mut Vec<(Box<str>, Slots)>, name: &str) -> &'a mut Slots {
    let i = match routes.iter().position(|(n, _)| **n == *name) {
        Some(i) => i,
        None => {
            routes.push((name.into(), Slots::default()));
            routes.len() - 1
        }
    };
    &mut routes[i].1
}

/// The limited windows of a key and route (five each at most): on the stack.
type Counts = smallvec::SmallVec<[Count; 10]>;

fn collect(out: &mut Counts, slots: &Slots, limits: &Limits, spans: &[Span; 5]) {
    for (i, window) in Window::ALL.iter().enumerate() {
        if let Some(limit) = limits[i] {
            out.push(Count {
                window: *window,
                limit,
                used: slots[i].used(&spans[i]),
                span: spans[i],
            });
        }
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Decision {
        self.acquire_now(key_id, plan, now)
    }

    async fn peek(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Quota> {
        self.peek_now(key_id, plan, now)
    }

    fn acquire_at_once(&self, key_id: &str, plan: &Plan<'_>, now: Timestamp) -> Option<Decision> {
        Some(self.acquire_now(key_id, plan, now))
    }
}

/// Keeps a [`LocalLimiter`]'s day and month counters in the embedded store, so a
/// restart does not hand every key a fresh daily or monthly quota.
pub struct QuotaFile {
    limiter: Arc<LocalLimiter>,
    store: Arc<dyn QuotaStore>,
}

impl QuotaFile {
    /// `limiter` should come from [`LocalLimiter::with_saved_quotas`].
    pub fn new(limiter: Arc<LocalLimiter>, store: Arc<dyn QuotaStore>) -> Self {
        QuotaFile { limiter, store }
    }

    /// Reads the saved counters of the current day and month into the limiter; returns
    /// how many were put back.
    pub async fn restore(&self, now: Timestamp) -> Result<usize, StoreError> {
        let month_start = Window::Month.span(now).start;
        let since = Timestamp::from_second(month_start).unwrap_or(now);
        let counts = self.store.load_quotas(since).await?;
        Ok(self.limiter.restore(&counts, now))
    }

    /// Writes the counters that changed since the last save. On failure they stay
    /// marked, for the next save.
    pub async fn save(&self, now: Timestamp) -> Result<(), StoreError> {
        let counts = self.limiter.changed_quotas(now);
        if counts.is_empty() {
            return Ok(());
        }
        let owners: Vec<String> = counts.iter().map(|c| c.owner.clone()).collect();
        let result = self.store.save_quotas(counts).await;
        if result.is_err() {
            self.limiter.mark_changed(owners);
        }
        result
    }

    /// Saves every [`QUOTA_SAVE_EVERY`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(QUOTA_SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.save(Timestamp::now()).await {
                tracing::warn!(error = %e, "could not save the quota counters; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::key::RateLimit;
    use crate::limits::window::{Clock, FakeClock};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(key: RateLimit) -> Plan<'static> {
        Plan::resolve(Some(&key), None, &RateLimit::default(), None)
    }

    fn per_minute(n: u64) -> RateLimit {
        RateLimit {
            per_minute: Some(n),
            ..RateLimit::default()
        }
    }

    fn admitted(d: &Decision) -> bool {
        matches!(d, Decision::Admitted(_))
    }

    #[test]
    fn a_minute_admits_its_limit_then_refuses_until_the_next_minute() {
        let clock = FakeClock::at(ts("2024-05-01T10:00:30Z"));
        let l = LocalLimiter::new();
        let p = plan(per_minute(3));
        for remaining in [2, 1, 0] {
            let d = l.acquire_now("key_a", &p, clock.now());
            assert_eq!(d.quota().unwrap().remaining, remaining);
            assert_eq!(d.quota().unwrap().reset, Duration::from_secs(30));
        }
        clock.set(ts("2024-05-01T10:00:59.999Z"));
        let d = l.acquire_now("key_a", &p, clock.now());
        assert_eq!(
            d,
            Decision::Refused {
                window: Window::Minute,
                quota: Quota {
                    limit: 3,
                    remaining: 0,
                    reset: Duration::from_secs(1)
                }
            }
        );
        clock.advance(Duration::from_millis(1));
        assert!(admitted(&l.acquire_now("key_a", &p, clock.now())));
        // Another key has its own counters.
        assert!(admitted(&l.acquire_now("key_b", &p, clock.now())));
    }

    #[test]
    fn a_refusal_by_one_window_counts_in_none() {
        let clock = FakeClock::at(ts("2024-05-01T10:00:00Z"));
        let l = LocalLimiter::new();
        let p = plan(RateLimit {
            per_second: Some(1),
            per_minute: Some(5),
            ..RateLimit::default()
        });
        assert!(admitted(&l.acquire_now("k", &p, clock.now())));
        // Nine refusals by the second window leave the minute window at 1 of 5.
        for _ in 0..9 {
            let d = l.acquire_now("k", &p, clock.now());
            assert!(matches!(
                d,
                Decision::Refused {
                    window: Window::Second,
                    ..
                }
            ));
        }
        for second in 1..=4 {
            clock.advance(Duration::from_secs(1));
            let d = l.acquire_now("k", &p, clock.now());
            assert!(admitted(&d), "second {second}");
        }
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            l.acquire_now("k", &p, clock.now()),
            Decision::Refused {
                window: Window::Minute,
                ..
            }
        ));
    }

    #[test]
    fn a_day_quota_resets_at_utc_midnight_and_a_month_quota_at_the_month_end() {
        let clock = FakeClock::at(ts("2024-02-28T23:59:59.500Z"));
        let l = LocalLimiter::new();
        let p = plan(RateLimit {
            per_day: Some(1),
            per_month: Some(3),
            ..RateLimit::default()
        });
        assert!(admitted(&l.acquire_now("k", &p, clock.now())));
        let d = l.acquire_now("k", &p, clock.now());
        assert_eq!(
            d.refusal().map(|r| r.code()),
            Some("quota_exceeded"),
            "{d:?}"
        );
        assert_eq!(d.quota().unwrap().reset, Duration::from_secs(1));
        // The leap day is a new day, in the same month.
        clock.set(ts("2024-02-29T00:00:00Z"));
        assert!(admitted(&l.acquire_now("k", &p, clock.now())));
        clock.set(ts("2024-02-29T23:59:59.999Z"));
        assert!(!admitted(&l.acquire_now("k", &p, clock.now())));
        clock.set(ts("2024-03-01T00:00:00Z"));
        let d = l.acquire_now("k", &p, clock.now());
        // A new day and a new month.
        assert!(admitted(&d));
        assert_eq!(d.quota().unwrap().remaining, 0);
        assert_eq!(d.quota().unwrap().limit, 1);
        // Month exhaustion: 3 per month, one per day.
        let clock = FakeClock::at(ts("2024-04-27T12:00:00Z"));
        let l = LocalLimiter::new();
        for day in 0..3 {
            assert!(admitted(&l.acquire_now("k", &p, clock.now())), "day {day}");
            clock.advance(Duration::from_secs(86_400));
        }
        let d = l.acquire_now("k", &p, clock.now());
        assert_eq!(
            d,
            Decision::Refused {
                window: Window::Month,
                quota: Quota {
                    limit: 3,
                    remaining: 0,
                    reset: Duration::from_secs(12 * 3600)
                }
            }
        );
        clock.set(ts("2024-05-01T00:00:00Z"));
        assert!(admitted(&l.acquire_now("k", &p, clock.now())));
    }

    #[test]
    fn route_limits_are_per_key_on_the_route_and_in_addition() {
        let now = ts("2024-05-01T10:00:00Z");
        let l = LocalLimiter::new();
        let global = per_minute(3);
        let route = RateLimit {
            per_minute: Some(1),
            ..RateLimit::default()
        };
        let on_route = Plan::resolve(None, None, &global, Some(("slow", &route)));
        let elsewhere = Plan::resolve(None, None, &global, None);
        assert!(admitted(&l.acquire_now("a", &on_route, now)));
        assert!(!admitted(&l.acquire_now("a", &on_route, now)));
        // Another key has its own budget on the route.
        assert!(admitted(&l.acquire_now("b", &on_route, now)));
        // The route's request counted in the key's own minute too: 2 more, then full.
        assert!(admitted(&l.acquire_now("a", &elsewhere, now)));
        assert!(admitted(&l.acquire_now("a", &elsewhere, now)));
        assert!(!admitted(&l.acquire_now("a", &elsewhere, now)));
    }

    #[test]
    fn peek_counts_nothing_and_unlimited_keys_are_not_tracked() {
        let now = ts("2024-05-01T10:00:00Z");
        let l = LocalLimiter::new();
        let p = plan(per_minute(2));
        assert_eq!(l.peek_now("k", &p, now).unwrap().remaining, 2);
        assert_eq!(l.peek_now("k", &p, now).unwrap().remaining, 2);
        l.acquire_now("k", &p, now);
        assert_eq!(l.peek_now("k", &p, now).unwrap().remaining, 1);
        let none = plan(RateLimit::default());
        assert_eq!(l.acquire_now("u", &none, now), Decision::Unlimited);
        assert_eq!(l.peek_now("u", &none, now), None);
        let tracked: usize = l.shards.iter().map(|s| s.lock().unwrap().keys.len()).sum();
        assert_eq!(tracked, 1);
    }

    #[test]
    fn ended_entries_are_swept() {
        let l = LocalLimiter::new();
        let p = plan(per_minute(10));
        for i in 0..200 {
            l.acquire_now(&format!("key_{i}"), &p, ts("2024-05-01T10:00:00Z"));
        }
        // Next month every counter has ended: the next operation on a shard due for a
        // sweep leaves only the key it counts.
        for shard in l.shards.iter() {
            shard.lock().unwrap().ops = SWEEP_EVERY - 1;
        }
        l.acquire_now("busy", &p, ts("2024-06-01T00:00:00Z"));
        let i = (l.hasher.hash_one("busy") as usize) % SHARDS;
        let keys: Vec<String> = l.shards[i].lock().unwrap().keys.keys().cloned().collect();
        assert_eq!(keys, vec!["busy".to_string()]);
    }

    #[test]
    fn concurrent_requests_never_admit_more_than_the_limit() {
        let now = ts("2024-05-01T10:00:00Z");
        let l = Arc::new(LocalLimiter::new());
        let p = plan(RateLimit {
            per_second: Some(1000),
            per_minute: Some(777),
            ..RateLimit::default()
        });
        let admitted_total = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                let p = p.clone();
                let n = admitted_total.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if admitted(&l.acquire_now("hot", &p, now)) {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted_total.load(Ordering::Relaxed), 777);
    }
}
