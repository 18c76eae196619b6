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
//! Invalidation race: a lookup that read the store before an admin change could insert
//! the old record after the change's invalidation. Every entry records the invalidation
//! generation at which its lookup started, and an entry older than the last
//! invalidation of its hash is never served.
//!
//! This module never sees a raw token, only [`KeyHash`]es.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use tokio::sync::Semaphore;

use crate::config::CacheConfig;
use crate::key::{KeyHash, KeyRecord};
use crate::metrics::Metrics;
use crate::store::{KeyStore, StoreError};

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
    /// When the store last confirmed this record.
    checked: Instant,
    /// Invalidation generation when the lookup that produced it started.
    generation: u64,
}

pub struct KeyResolver {
    store: Arc<dyn KeyStore>,
    metrics: Arc<Metrics>,
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
            metrics,
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
        if let Some(c) = self.positive.get(hash).await
            && self.is_current(hash, &c)
        {
            let age = c.checked.elapsed();
            if age < self.ttl {
                self.count("hit");
                return Ok(Some(c.record.clone()));
            }
            if age < self.max_staleness {
                self.count("hit");
                self.spawn_recheck(*hash);
                return Ok(Some(c.record.clone()));
            }
            return match self.load(*hash).await {
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
        self.load(*hash).await
    }

    /// The cached key for `hash`, without any store lookup (used when the client
    /// address is over its failed-authentication budget: known-good keys still work).
    pub async fn cached(&self, hash: &KeyHash) -> Option<Arc<KeyRecord>> {
        let c = self.positive.get(hash).await?;
        (self.is_current(hash, &c) && c.checked.elapsed() < self.max_staleness)
            .then(|| c.record.clone())
    }

    /// Drops every cached entry of this key (all its hashes) after an admin change, so
    /// that the very next request on this replica sees the change.
    pub async fn invalidate_key(&self, key: &KeyRecord) {
        for h in key.hashes() {
            self.invalidate_hash(&h).await;
        }
    }

    pub async fn invalidate_hash(&self, hash: &KeyHash) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.invalidated
            .entry(*hash)
            .and_upsert_with(|old| old.map_or(g, |e| (*e.value()).max(g)));
        self.positive.invalidate(hash).await;
        self.negative.invalidate(hash);
        self.metrics.invalidations.inc();
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
            let _ = this.load(hash).await;
        });
    }

    /// Looks `hash` up in the store, at most one lookup per hash at a time, and updates
    /// both caches. Callers that queued behind a lookup use its fresh result.
    async fn load(self: &Arc<Self>, hash: KeyHash) -> Result<Option<Arc<KeyRecord>>, Unavailable> {
        let this = self.clone();
        let result = self
            .positive
            .entry(hash)
            .and_try_compute_with(|current| async move {
                if let Some(e) = current {
                    let c = e.into_value();
                    if this.is_current(&hash, &c) && c.checked.elapsed() < this.ttl {
                        return Ok(Op::Nop);
                    }
                } else if this.negative.contains_key(&hash) {
                    return Ok(Op::Nop);
                }
                let generation = this.generation.load(Ordering::Acquire);
                match this.fetch(&hash).await? {
                    Some(record) => Ok(Op::Put(Arc::new(Cached {
                        record: Arc::new(record),
                        checked: Instant::now(),
                        generation,
                    }))),
                    None => {
                        this.negative.insert(hash, ());
                        Ok(Op::Remove)
                    }
                }
            })
            .await?;
        use moka::ops::compute::CompResult;
        Ok(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) | CompResult::Unchanged(e) => {
                let c = e.into_value();
                self.is_current(&hash, &c).then(|| c.record.clone())
            }
            CompResult::Removed(_) | CompResult::StillNone(_) => None,
        })
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
