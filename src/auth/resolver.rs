//! The [`KeyResolver`]: key hash → stored key, through an in-process moka cache.
//!
//! - Positive entries are served while younger than `cache.ttl`; between `ttl` and
//!   `max_staleness` they are served while one background recheck runs; past
//!   `max_staleness` they are rechecked before use, and served stale only if the store
//!   is unreachable and the entry is younger than `stale_if_error`.
//! - Negative entries (unknown hashes) live `negative_ttl` in a cache of their own, so a
//!   flood of random tokens cannot evict good keys.
//! - Lookups of one hash are serialised by moka's per-key compute lock: of many
//!   concurrent requests with the same unknown key, one reaches the store.
//! - Concurrent store lookups are capped by a semaphore; past the cap a request gets
//!   503 rather than queueing without bound.
//!
//! Invalidation across replicas: admin writes call [`KeyResolver::invalidate_key`],
//! which drops the entries here and publishes the hashes on the
//! [`InvalidationBus`]; [`KeyResolver::listen`] applies what other replicas publish.
//! While the bus is not connected (or before it first connects), no entry is trusted:
//! each is checked against the store before use, and after reconnecting every entry
//! checked before the reconnect is checked again. Requests queued behind one check
//! accept its result if the check started after they arrived.
//!
//! Invalidation race: a lookup that read the store before an admin change could insert
//! the old record after the change's invalidation. Every entry records the invalidation
//! generation at which its lookup started, and an entry older than the last
//! invalidation of its hash is never served.
//!
//! This module never sees a raw token, only [`KeyHash`]es.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use tokio::sync::Semaphore;

use crate::config::CacheConfig;
use crate::key::{KeyHash, KeyRecord};
use crate::metrics::Metrics;
use crate::store::{BusEvent, InvalidationBus, KeyStore, StoreError};

/// Lookups of one hash tried in a row when invalidations keep racing them.
const LOAD_ATTEMPTS: usize = 3;

/// Store lookups allowed in flight at once, across all hashes.
pub const MAX_CONCURRENT_LOOKUPS: usize = 256;

/// The store could not answer and the key is not usable from cache: 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key store unavailable")]
pub struct Unavailable;

/// A positive cache entry.
#[derive(Debug)]
struct Cached {
    record: Arc<KeyRecord>,
    /// When the store lookup that confirmed this record started.
    checked: Instant,
    /// Invalidation generation when the lookup that produced it started.
    generation: u64,
}

pub struct KeyResolver {
    store: Arc<dyn KeyStore>,
    bus: Arc<dyn InvalidationBus>,
    metrics: Arc<Metrics>,
    /// Whether the invalidation bus is subscribed and its heartbeat seen.
    connected: AtomicBool,
    /// Entries whose check started before this (nanoseconds after `base`) must be
    /// checked again before use: set when the bus (re)connects.
    recheck_before: AtomicU64,
    base: Instant,
    positive: moka::future::Cache<KeyHash, Arc<Cached>>,
    /// Hashes the store does not know, for `negative_ttl`.
    negative: moka::sync::Cache<KeyHash, ()>,
    /// Generation of the latest invalidation of each recently invalidated hash.
    invalidated: moka::sync::Cache<KeyHash, u64>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    lookups: Semaphore,
    ttl: Duration,
    max_staleness: Duration,
    stale_if_error: Duration,
    /// How long a lookup may wait for a free lookup slot.
    lookup_wait: Duration,
}

impl KeyResolver {
    pub fn new(
        store: Arc<dyn KeyStore>,
        bus: Arc<dyn InvalidationBus>,
        cache: &CacheConfig,
        lookup_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let positive = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            // Past stale_if_error an entry can never be served, so it need not be kept.
            .time_to_live(cache.stale_if_error)
            .build();
        let negative = moka::sync::Cache::builder()
            .max_capacity((cache.max_entries / 4).max(10_000))
            .time_to_live(cache.negative_ttl)
            .build();
        let invalidated = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(cache.stale_if_error + Duration::from_secs(1))
            .build();
        KeyResolver {
            store,
            bus,
            metrics,
            connected: AtomicBool::new(false),
            recheck_before: AtomicU64::new(0),
            base: Instant::now(),
            positive,
            negative,
            invalidated,
            generation: AtomicU64::new(0),
            lookups: Semaphore::new(MAX_CONCURRENT_LOOKUPS),
            ttl: cache.ttl,
            max_staleness: cache.max_staleness,
            stale_if_error: cache.stale_if_error,
            lookup_wait,
        }
    }

    /// The key stored under `hash` (`None`: unknown), from cache or store.
    pub async fn resolve(
        self: &Arc<Self>,
        hash: &KeyHash,
    ) -> Result<Option<Arc<KeyRecord>>, Unavailable> {
        let arrived = Instant::now();
        if let Some(c) = self.positive.get(hash).await
            && self.is_current(hash, &c)
        {
            let age = arrived.saturating_duration_since(c.checked);
            if self.trusted(&c) {
                if age < self.ttl {
                    self.count("hit");
                    return Ok(Some(c.record.clone()));
                }
                if age < self.max_staleness {
                    self.count("hit");
                    self.spawn_recheck(*hash);
                    return Ok(Some(c.record.clone()));
                }
            }
            self.count("miss");
            return match self.load(*hash, arrived).await {
                Ok(r) => Ok(r),
                Err(Unavailable) if age < self.stale_if_error => {
                    self.count("stale");
                    Ok(Some(c.record.clone()))
                }
                Err(e) => Err(e),
            };
        }
        if self.negative.contains_key(hash) {
            self.count("negative");
            return Ok(None);
        }
        self.count("miss");
        self.load(*hash, arrived).await
    }

    /// The cached key for `hash`, without any store lookup (used when the client
    /// address is over its failed-authentication budget: known-good keys still work).
    pub async fn cached(&self, hash: &KeyHash) -> Option<Arc<KeyRecord>> {
        let c = self.positive.get(hash).await?;
        (self.is_current(hash, &c) && self.trusted(&c) && c.checked.elapsed() < self.max_staleness)
            .then(|| c.record.clone())
    }

    /// Drops every cached entry of this key (all its hashes) after an admin change, here
    /// at once and on every other replica through the bus.
    pub async fn invalidate_key(&self, key: &KeyRecord) {
        let hashes: Vec<KeyHash> = key.hashes().collect();
        for h in &hashes {
            self.invalidate_hash(h).await;
        }
        if let Err(e) = self.bus.publish(&hashes).await {
            // Other replicas will see their bus as lost (missed heartbeat) and recheck.
            tracing::warn!(error = %e, key_id = %key.id, "could not publish an invalidation");
        }
    }

    /// Drops the local entries of one hash.
    pub async fn invalidate_hash(&self, hash: &KeyHash) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.invalidated
            .entry(*hash)
            .and_upsert_with(|old| old.map_or(g, |e| (*e.value()).max(g)));
        self.positive.invalidate(hash).await;
        self.negative.invalidate(hash);
        self.metrics.invalidations.inc();
    }

    /// Applies the bus's events until it closes: other replicas' invalidations, and the
    /// connected/lost state that decides whether cached entries may be trusted.
    pub async fn listen(self: Arc<Self>) {
        let mut events = self.bus.subscribe();
        while let Some(event) = events.recv().await {
            match event {
                BusEvent::Invalidate(hashes) => {
                    for h in &hashes {
                        self.invalidate_hash(h).await;
                    }
                }
                BusEvent::Connected => {
                    self.recheck_before
                        .store(self.nanos(Instant::now()), Ordering::Release);
                    self.connected.store(true, Ordering::Release);
                    tracing::info!("invalidation channel connected");
                }
                BusEvent::Lost => {
                    self.connected.store(false, Ordering::Release);
                    tracing::warn!(
                        "invalidation channel lost: checking every key against the store until it is back"
                    );
                }
            }
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether an entry may be served without a store check (bus connected, and the
    /// entry checked since it connected).
    fn trusted(&self, c: &Cached) -> bool {
        self.connected.load(Ordering::Acquire)
            && self.nanos(c.checked) >= self.recheck_before.load(Ordering::Acquire)
    }

    /// Whether no invalidation of `hash` happened after `c`'s lookup started.
    fn is_current(&self, hash: &KeyHash, c: &Cached) -> bool {
        if c.generation == self.generation.load(Ordering::Acquire) {
            return true;
        }
        match self.invalidated.get(hash) {
            Some(g) => g <= c.generation,
            None => true,
        }
    }

    fn count(&self, result: &str) {
        self.metrics.auth_cache.with_label_values(&[result]).inc();
    }

    fn spawn_recheck(self: &Arc<Self>, hash: KeyHash) {
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.load(hash, Instant::now()).await;
        });
    }

    /// Looks `hash` up in the store, at most one lookup per hash at a time, and updates
    /// both caches. A caller that queued behind a lookup which started after it arrived
    /// uses that lookup's result.
    async fn load(
        self: &Arc<Self>,
        hash: KeyHash,
        arrived: Instant,
    ) -> Result<Option<Arc<KeyRecord>>, Unavailable> {
        use moka::ops::compute::CompResult;
        // A lookup that raced an invalidation of this hash produced an entry that may
        // predate the change: look again rather than serve it (or call the key unknown).
        for _ in 0..LOAD_ATTEMPTS {
            let this = self.clone();
            let result = self
                .positive
                .entry(hash)
                .and_try_compute_with(|current| async move {
                    if let Some(e) = current {
                        let c = e.into_value();
                        let fresh = c.checked >= arrived
                            || (this.trusted(&c) && c.checked.elapsed() < this.ttl);
                        if this.is_current(&hash, &c) && fresh {
                            return Ok(Op::Nop);
                        }
                    } else if this.negative.contains_key(&hash) {
                        return Ok(Op::Nop);
                    }
                    let generation = this.generation.load(Ordering::Acquire);
                    let checked = Instant::now();
                    match this.fetch(&hash).await? {
                        Some(record) => Ok(Op::Put(Arc::new(Cached {
                            record: Arc::new(record),
                            checked,
                            generation,
                        }))),
                        None => {
                            this.negative.insert(hash, ());
                            Ok(Op::Remove)
                        }
                    }
                })
                .await?;
            match result {
                CompResult::Inserted(e)
                | CompResult::ReplacedWith(e)
                | CompResult::Unchanged(e) => {
                    let c = e.into_value();
                    if self.is_current(&hash, &c) {
                        return Ok(Some(c.record.clone()));
                    }
                }
                CompResult::Removed(_) | CompResult::StillNone(_) => return Ok(None),
            }
        }
        // The key kept changing under the lookup: fail closed, and let the client retry.
        Err(Unavailable)
    }

    async fn fetch(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, Unavailable> {
        let _permit = tokio::time::timeout(self.lookup_wait, self.lookups.acquire())
            .await
            .map_err(|_| Unavailable)?
            .map_err(|_| Unavailable)?;
        match self.store.key_by_hash(hash).await {
            Ok(r) => Ok(r),
            Err(StoreError::Unavailable(_)) => Err(Unavailable),
            Err(e) => {
                tracing::error!(error = %e, "key lookup failed");
                Err(Unavailable)
            }
        }
    }
}
