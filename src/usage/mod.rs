//! Per-key usage and `last_used_at` (SPEC §1, §4): counted in memory on the request
//! path, written to the store in batches.
//!
//! - [`UsageRecorder::record`] adds one request to its key's counters of the current
//!   UTC hour (sharded locks, no IO) and, if the key authenticated, moves its
//!   `last_used_at` forward.
//! - [`UsageRecorder::flush`] (every [`FLUSH_EVERY`] from [`UsageRecorder::run`], and
//!   once more at shutdown) writes what was counted as batches of at most
//!   [`MAX_BATCH_ROWS`] rows. A batch the store could not take is kept and sent again
//!   first, under the same id, so a write that timed out but landed is not counted
//!   twice. So `last_used_at` is at most one flush interval (plus a store write) behind.
//! - `report`: the admin view of stored usage (totals, series, top routes and
//!   resources; JSON and CSV).
//!
//! It never writes to the store on the request path, and never holds a token, a hash
//! or a raw path: counters are by key id, route name and rendered resource.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use jiff::{SignedDuration, Timestamp};

use crate::key::new_id;
use crate::limits::Clock;
use crate::store::usage::{OTHER, RETENTION_DAYS, hour_of};
use crate::store::{KeyStore, StoreError, UsageBatch, UsageCounts, UsageRow};

pub mod report;

/// How often counters are written to the store. Also bounds how far `last_used_at`
/// lags behind (SPEC: within 10 seconds).
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Rows per store write, so no single write grows with the number of active keys.
pub const MAX_BATCH_ROWS: usize = 1_000;
/// Batches kept while the store is unreachable (an hour of flushes of up to
/// [`MAX_BATCH_ROWS`] rows each); the oldest are dropped beyond that, with an error.
const MAX_UNSENT: usize = 720;
/// Distinct resources counted in memory per key and hour before the rest go to
/// `other` (the store keeps the top 100 of them).
const MEMORY_RESOURCES: usize = 1_000;
/// Longest resource name counted by name; longer ones count under `other`.
const MAX_RESOURCE_LEN: usize = 256;
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
const SHARDS: usize = 32;

/// What happened to one request that named a known key.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub route: &'a str,
    /// The route's resource for this request, if it names one.
    pub resource: Option<&'a str>,
    pub status: StatusCode,
    /// keygate's refusal code when keygate answered itself; `None` for the upstream's
    /// response.
    pub refusal: Option<&'static str>,
}

impl Outcome<'_> {
    /// A request whose key was found authenticated unless it was refused with 401
    /// (revoked, expired, suspended, a secret past its grace).
    pub fn authenticated(&self) -> bool {
        self.status != StatusCode::UNAUTHORIZED
    }
}

/// One key's counts of one hour while in memory: [`UsageCounts`] with its route and
/// refusal maps as short vectors. A key usually has one route and no refusal in an
/// hour, and a `BTreeMap`'s first insert allocates a node of eleven slots (~370
/// bytes): a miss-heavy load holds one tally per key used in a flush period.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    successes: u64,
    client_errors: u64,
    upstream_errors: u64,
    rate_limited: u64,
    routes: Vec<(Box<str>, u64)>,
    denied: Vec<(&'static str, u64)>,
    /// Up to [`MEMORY_RESOURCES`] names: a map, allocated only for routes that name a
    /// resource.
    resources: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    /// The counts as the store keeps them.
    fn into_counts(self) -> UsageCounts {
        UsageCounts {
            requests: self.requests,
            successes: self.successes,
            client_errors: self.client_errors,
            upstream_errors: self.upstream_errors,
            rate_limited: self.rate_limited,
            denied: self
                .denied
                .into_iter()
                .map(|(c, n)| (c.to_string(), n))
                .collect(),
            routes: self
                .routes
                .into_iter()
                .map(|(r, n)| (r.into_string(), n))
                .collect(),
            resources: self.resources,
        }
    }
}

/// Adds one to the count of `name` in a short list, making room for one more only.
fn bump_listed<N: std::borrow::Borrow<str>>(
    list: &mut Vec<(N, u64)>,
    name: &str,
    make: impl FnOnce() -> N,
) {
    match list.iter_mut().find(|(n, _)| n.borrow() == name) {
        Some((_, c)) => *c += 1,
        None => {
            list.reserve_exact(1);
            list.push((make(), 1));
        }
    }
}

/// Adds one request to `counts` (see [`UsageCounts`] for what each counter means).
fn count(counts: &mut Tally, o: &Outcome<'_>) {
    counts.requests += 1;
    bump_listed(&mut counts.routes, o.route, || o.route.into());
    if let Some(r) = o.resource {
        let known = counts.resources.contains_key(r);
        let name = if r.len() > MAX_RESOURCE_LEN
            || (!known && counts.resources.len() >= MEMORY_RESOURCES)
        {
            OTHER
        } else {
            r
        };
        bump(&mut counts.resources, name);
    }
    let upstream_failure = matches!(o.refusal, Some("upstream_unavailable" | "upstream_timeout"));
    match o.status.as_u16() {
        0..=399 => counts.successes += 1,
        400..=499 => counts.client_errors += 1,
        _ if o.refusal.is_none() || upstream_failure => counts.upstream_errors += 1,
        _ => {}
    }
    if let Some(code) = o.refusal.filter(|_| !upstream_failure) {
        bump_listed(&mut counts.denied, code, || code);
        if matches!(code, "rate_limited" | "quota_exceeded") {
            counts.rate_limited += 1;
        }
    }
}

fn bump(map: &mut std::collections::BTreeMap<String, u64>, name: &str) {
    match map.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            map.insert(name.to_string(), 1);
        }
    }
}

/// One key's counts of one hour, taken for a flush: (key id, hour in Unix seconds,
/// counts).
type Taken = (String, i64, Tally);

/// What one key did since the last flush.
#[derive(Default)]
struct Pending {
    /// (hour start in Unix seconds, counts); usually one hour, two across an hour end.
    hours: Vec<(i64, Tally)>,
    last_used: Option<Timestamp>,
}

pub struct UsageRecorder {
    shards: Box<[Mutex<HashMap<String, Pending, crate::FastHash>>]>,
    hasher: crate::FastHash,
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    /// Batches not yet accepted by the store, oldest first. The lock also keeps two
    /// flushes from running at once.
    unsent: tokio::sync::Mutex<VecDeque<UsageBatch>>,
}

impl UsageRecorder {
    pub fn new(store: Arc<dyn KeyStore>, clock: Arc<dyn Clock>) -> Self {
        UsageRecorder {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: crate::FastHash::default(),
            store,
            clock,
            unsent: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    fn shard(
        &self,
        key_id: &str,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Pending, crate::FastHash>> {
        let i = (self.hasher.hash_one(key_id) as usize) % self.shards.len();
        // Counters are plain integers: a panic elsewhere cannot leave them unusable.
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one request of the key `key_id`, made at `now` (the data plane passes
    /// the request's arrival: the clock is read once per request); no IO.
    pub fn record(&self, key_id: &str, outcome: &Outcome<'_>, now: Timestamp) {
        let hour = hour_of(now).as_second();
        let mut shard = self.shard(key_id);
        // The key's entry, made (and its id copied) only on its first request. Room
        // for one hour: `Vec`'s first growth would make room for four, and a
        // miss-heavy load makes one entry per key per flush.
        let p = match shard.get_mut(key_id) {
            Some(p) => p,
            None => shard.entry(key_id.to_string()).or_insert_with(|| Pending {
                hours: Vec::with_capacity(1),
                last_used: None,
            }),
        };
        let counts = match p.hours.iter().position(|(h, _)| *h == hour) {
            Some(i) => &mut p.hours[i].1,
            None => {
                p.hours.push((hour, Tally::default()));
                let last = p.hours.len() - 1;
                &mut p.hours[last].1
            }
        };
        count(counts, outcome);
        if outcome.authenticated() {
            p.last_used = p.last_used.max(Some(now));
        }
    }

    /// Everything counted so far, leaving the counters empty: (key id, hour, counts)
    /// and each key's latest use.
    fn take(&self) -> (Vec<Taken>, Vec<(String, Timestamp)>) {
        let mut rows = Vec::new();
        let mut touched = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(
                &mut *shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            for (key_id, p) in taken {
                for (hour, counts) in p.hours {
                    rows.push((key_id.clone(), hour, counts));
                }
                if let Some(t) = p.last_used {
                    touched.push((key_id, t));
                }
            }
        }
        (rows, touched)
    }

    /// Writes what was counted. Never fails: what the store cannot take now is kept
    /// (bounded) and written by a later flush.
    pub async fn flush(&self) {
        let mut unsent = self.unsent.lock().await;
        let (rows, touched) = self.take();
        // Batches made from the front in one pass (splitting the rest off each time
        // copied it again: quadratic, gigabytes with 200,000 keys in one period), and
        // only as they are sent: a batch's rows in the store's form are several times
        // the size of the tallies.
        let mut rows = rows.into_iter().peekable();
        let mut next_batch = || {
            rows.peek()?;
            let batch: Vec<UsageRow> = rows
                .by_ref()
                .take(MAX_BATCH_ROWS)
                .filter_map(|(key_id, hour, tally)| {
                    Some(UsageRow {
                        key_id,
                        hour: Timestamp::from_second(hour).ok()?,
                        counts: tally.into_counts(),
                    })
                })
                .collect();
            Some(UsageBatch {
                id: new_id("usb"),
                rows: batch,
            })
        };
        loop {
            if unsent.is_empty() {
                match next_batch() {
                    Some(batch) => unsent.push_back(batch),
                    None => break,
                }
            }
            let Some(batch) = unsent.front() else { break };
            match self.store.add_usage(batch).await {
                Ok(()) => {
                    unsent.pop_front();
                }
                Err(StoreError::Unavailable(e)) => {
                    // What was not sent waits for the next flush, as batches.
                    while let Some(batch) = next_batch() {
                        unsent.push_back(batch);
                    }
                    tracing::warn!(error = %e, unsent = unsent.len(), "usage not written yet; will retry");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.rows.len(), "usage batch refused by the store; dropped");
                    unsent.pop_front();
                }
            }
        }
        while unsent.len() > MAX_UNSENT {
            if let Some(dropped) = unsent.pop_front() {
                tracing::error!(
                    rows = dropped.rows.len(),
                    "usage kept too long while the store is unreachable; oldest batch dropped"
                );
            }
        }
        drop(unsent);

        let mut done = 0;
        while done < touched.len() {
            let chunk = &touched[done..touched.len().min(done + MAX_BATCH_ROWS)];
            if let Err(e) = self.store.touch_keys(chunk).await {
                // Once the store fails, the rest waits for the next flush too: one
                // warning, not one per chunk against a store known to be down.
                let left = &touched[done..];
                tracing::warn!(error = %e, keys = left.len(), "last_used_at not written yet; will retry");
                // Put them back: the next flush writes the latest of each.
                for (key_id, t) in left {
                    let mut shard = self.shard(key_id);
                    let p = shard.entry(key_id.clone()).or_default();
                    p.last_used = p.last_used.max(Some(*t));
                }
                break;
            }
            done += chunk.len();
            // The flush shares its thread with data-plane connections: let them in
            // between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Flushes every [`FLUSH_EVERY`] and prunes usage older than [`RETENTION_DAYS`]
    /// every hour, until the task is dropped. The final flush at shutdown is the
    /// caller's (after in-flight requests are done).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned: Option<Instant> = None;
        loop {
            tick.tick().await;
            self.flush().await;
            if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                pruned = Some(Instant::now());
                let before = self
                    .clock
                    .now()
                    .checked_sub(SignedDuration::from_hours(24 * RETENTION_DAYS))
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                match self.store.prune_usage(before).await {
                    Ok(n) => tracing::debug!(hours = n, "old usage pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning old usage failed; will retry"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::FakeClock;
    use crate::store::EmbeddedStore;

    fn outcome(status: u16, refusal: Option<&'static str>) -> Outcome<'static> {
        Outcome {
            route: "r",
            resource: None,
            status: StatusCode::from_u16(status).unwrap(),
            refusal,
        }
    }

    #[test]
    fn every_request_lands_in_one_class() {
        /// status, refusal, [successes, client_errors, upstream_errors, rate_limited], denied
        type Row = (u16, Option<&'static str>, [u64; 4], Option<&'static str>);
        let rows: &[Row] = &[
            (200, None, [1, 0, 0, 0], None),
            (304, None, [1, 0, 0, 0], None),
            (404, None, [0, 1, 0, 0], None),
            (500, None, [0, 0, 1, 0], None),
            (
                403,
                Some("insufficient_scope"),
                [0, 1, 0, 0],
                Some("insufficient_scope"),
            ),
            (
                401,
                Some("revoked_api_key"),
                [0, 1, 0, 0],
                Some("revoked_api_key"),
            ),
            (
                429,
                Some("rate_limited"),
                [0, 1, 0, 1],
                Some("rate_limited"),
            ),
            (
                429,
                Some("quota_exceeded"),
                [0, 1, 0, 1],
                Some("quota_exceeded"),
            ),
            (502, Some("upstream_unavailable"), [0, 0, 1, 0], None),
            (504, Some("upstream_timeout"), [0, 0, 1, 0], None),
            (
                503,
                Some("auth_unavailable"),
                [0, 0, 0, 0],
                Some("auth_unavailable"),
            ),
        ];
        for (status, refusal, want, denied) in rows {
            let mut t = Tally::default();
            count(&mut t, &outcome(*status, *refusal));
            let c = t.into_counts();
            assert_eq!(c.requests, 1);
            assert_eq!(
                [
                    c.successes,
                    c.client_errors,
                    c.upstream_errors,
                    c.rate_limited
                ],
                *want,
                "{status} {refusal:?}"
            );
            let got: Vec<&str> = c.denied.keys().map(String::as_str).collect();
            assert_eq!(got, denied.iter().copied().collect::<Vec<_>>(), "{status}");
            assert_eq!(c.routes["r"], 1);
        }
        assert!(!outcome(401, Some("expired_api_key")).authenticated());
        assert!(outcome(403, Some("ip_not_allowed")).authenticated());
    }

    #[test]
    fn resources_in_memory_are_bounded() {
        let mut c = Tally::default();
        let long = format!("feed:{}", "x".repeat(300));
        for i in 0..(MEMORY_RESOURCES + 10) {
            let r = format!("feed:{i}");
            let o = Outcome {
                resource: Some(&r),
                ..outcome(200, None)
            };
            count(&mut c, &o);
        }
        let o = Outcome {
            resource: Some(&long),
            ..outcome(200, None)
        };
        count(&mut c, &o);
        assert_eq!(c.resources.len(), MEMORY_RESOURCES + 1);
        assert_eq!(c.resources[OTHER], 11);
    }

    #[tokio::test]
    async fn flushed_usage_and_last_used_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap());
        let clock = Arc::new(FakeClock::at("2024-05-01T10:59:59Z".parse().unwrap()));
        let rec = UsageRecorder::new(store.clone(), clock.clone());
        let ok = Outcome {
            resource: Some("flow:a"),
            ..outcome(200, None)
        };
        rec.record("key_a", &ok, clock.now());
        rec.record("key_a", &outcome(401, Some("revoked_api_key")), clock.now());
        clock.advance(Duration::from_secs(2));
        rec.record("key_a", &ok, clock.now());
        rec.flush().await;
        rec.flush().await;
        let rows = store
            .usage(
                "key_a",
                "2024-05-01T00:00:00Z".parse().unwrap(),
                "2024-05-02T00:00:00Z".parse().unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].counts.requests, 2);
        assert_eq!(rows[0].counts.denied["revoked_api_key"], 1);
        assert_eq!(
            rows[1].hour,
            "2024-05-01T11:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(rows[1].counts.resources["flow:a"], 1);
    }

    #[tokio::test]
    async fn usage_counted_during_an_outage_is_written_once_after_it_in_order() {
        use std::sync::atomic::Ordering;
        let store = Arc::new(crate::admin::tests::MemStore::default());
        let clock = Arc::new(FakeClock::at("2024-05-01T10:00:00Z".parse().unwrap()));
        let rec = UsageRecorder::new(store.clone(), clock.clone());
        let keys = 2 * MAX_BATCH_ROWS + 7;
        for i in 0..keys {
            rec.record(&format!("key_{i}"), &outcome(200, None), clock.now());
        }
        store.down.store(true, Ordering::SeqCst);
        rec.flush().await;
        let kept: Vec<String> = rec
            .unsent
            .lock()
            .await
            .iter()
            .map(|b| b.id.clone())
            .collect();
        assert_eq!(kept.len(), 3, "every row kept, as batches");
        assert!(store.usage_batches().is_empty());
        rec.record("key_late", &outcome(404, None), clock.now());
        store.down.store(false, Ordering::SeqCst);
        rec.flush().await;
        let written = store.usage_batches();
        let ids: Vec<&str> = written.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(
            ids[..3],
            kept.iter().map(String::as_str).collect::<Vec<_>>()[..],
            "the kept batches first, under their ids"
        );
        let mut rows: Vec<(&str, u64)> = written
            .iter()
            .flat_map(|b| &b.rows)
            .map(|r| (r.key_id.as_str(), r.counts.requests))
            .collect();
        assert_eq!(rows.len(), keys + 1, "as many rows as keys");
        rows.sort();
        rows.dedup();
        assert_eq!(rows.len(), keys + 1, "each key's row written once");
        assert!(rows.iter().all(|(_, n)| *n == 1));
        let late = &written[3].rows[0];
        assert_eq!(
            (late.key_id.as_str(), late.counts.client_errors),
            ("key_late", 1)
        );
        assert_eq!(late.counts.routes["r"], 1);
        assert!(rec.unsent.lock().await.is_empty());
    }

    #[tokio::test]
    async fn a_flush_of_more_keys_than_a_batch_writes_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap());
        let clock = Arc::new(FakeClock::at("2024-05-01T10:00:00Z".parse().unwrap()));
        let rec = UsageRecorder::new(store.clone(), clock.clone());
        let keys = 2 * MAX_BATCH_ROWS + 7;
        for i in 0..keys {
            rec.record(&format!("key_{i}"), &outcome(200, None), clock.now());
        }
        rec.flush().await;
        assert!(rec.unsent.lock().await.is_empty());
        for i in [0, MAX_BATCH_ROWS, keys - 1] {
            let rows = store
                .usage(
                    &format!("key_{i}"),
                    "2024-05-01T00:00:00Z".parse().unwrap(),
                    "2024-05-02T00:00:00Z".parse().unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "key_{i}: {rows:?}");
            assert_eq!(rows[0].counts.requests, 1);
        }
    }
}
