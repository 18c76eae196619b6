//! The [`KeyResolver`]: key hash → stored key, through an in-process cache.
//!
//! - Positive entries are served while younger than `cache.ttl`; between `ttl` and
//!   `max_staleness` they are served while one background recheck runs; past
//!   `max_staleness` they are rechecked before use, and served stale only if the store
//!   is unreachable and the entry is younger than `stale_if_error`.
//! - Negative entries (unknown hashes) live `negative_ttl` in a cache of their own, so a
//!   flood of random tokens cannot evict good keys.
//! - Lookups of one hash are serialised by a per-hash lock ([`Flights`]): of many
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
//! invalidation of its hash, of its creator principal or of its org is never served.
//! An invalidation also carries the record version the change produced: for
//! [`VERSION_WAIT`] after it, a lookup that still reads an older version (a write whose
//! outcome the writer did not learn, still on its way) serves that one request but is
//! not trusted from cache.
//!
//! Creator suspension (`key_policy: creator`) is derived by the store lookup from the
//! creator's and the org's current state; a principal or org change invalidates every
//! cached key of that creator or org by its id, so nothing iterates over keys.
//!
//! The cache holds a [`KeyView`] of each record, not the record: only what the data
//! plane reads, so that a million cached keys stay small. For the same reason the
//! positive cache is a [`quick_cache`] (entries inline in a slab, about 16 bytes of its
//! own per entry), not moka (about 320); it has no time-to-live, so an entry stays until
//! capacity evicts it or an invalidation drops it, and is never served past
//! `stale_if_error` whatever its age.
//!
//! Hits are served first from a small per-thread memo ([`Front`]) of entries the cache
//! served since the last invalidation: a hit then costs one hash-map lookup on the
//! worker's own thread instead of the cache's shared shard lock. The memo only ever
//! holds an entry that passed every check below under the current invalidation
//! generation, is emptied by the next invalidation of anything, and serves an entry
//! only while it is trusted and younger than `ttl`; everything else goes through the
//! cache as before.
//!
//! This module never sees a raw token, only [`KeyHash`]es.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle};
use thread_local::ThreadLocal;
use tokio::sync::Semaphore;

use super::flights::Flights;
use crate::config::CacheConfig;
use crate::key::{KeyHash, KeyRecord, KeyView, Shared};
use crate::memo::Memo;
use crate::metrics::Metrics;
use crate::store::{BusEvent, Invalidation, InvalidationBus, KeyStore, StoreError};

/// Lookups of one hash tried in a row when invalidations keep racing them.
const LOAD_ATTEMPTS: usize = 3;

/// How long an announced record version is waited for: a write lands within
/// `store.timeout` of being sent or not at all.
pub const VERSION_WAIT: Duration = Duration::from_secs(10);

/// Store lookups allowed in flight at once, across all hashes.
pub const MAX_CONCURRENT_LOOKUPS: usize = 256;

/// The store could not answer and the key is not usable from cache: 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key store unavailable")]
pub struct Unavailable;

/// Key cache entries reserved at start at most (about 100 MB of address space, a few
/// MB of it written at once); past this the cache's tables grow as it fills.
const RESERVED_ENTRIES: usize = 1_000_000;

/// Entries a thread's [`Front`] holds at most; it is emptied when full.
const FRONT_MAX: usize = 4096;

/// One thread's memo of positive entries the cache served, all verified current at
/// `generation` (an invalidation of anything makes the whole memo stale).
struct Front {
    generation: u64,
    entries: Memo<KeyHash, Cached>,
}

impl Front {
    fn new() -> Self {
        Front {
            generation: 0,
            entries: Memo::new(FRONT_MAX),
        }
    }

    /// The memo as of `generation`: emptied if an invalidation happened since it was
    /// filled.
    fn at(&mut self, generation: u64) -> &mut Memo<KeyHash, Cached> {
        if self.generation != generation {
            self.entries.clear();
            self.generation = generation;
        }
        &mut self.entries
    }
}

/// A positive cache entry, stored inline in the cache (cloning it clones one `Arc`).
#[derive(Debug, Clone)]
struct Cached {
    /// What the data plane keeps of the record (not the record: see [`KeyView`]).
    key: Arc<KeyView>,
    /// When the store lookup that confirmed this record started, in nanoseconds after
    /// the resolver's `base` (8 bytes where an `Instant` takes 16: a million entries).
    checked: u64,
    /// Invalidation generation when the lookup that produced it started.
    generation: u64,
    /// Older than an announced version of its key: never served without a store check.
    provisional: bool,
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
    positive: Cache<KeyHash, Cached, UnitWeighter, crate::FastHash>,
    /// Held over each store lookup, per hash.
    flights: Flights,
    /// Per thread, what `positive` served since the last invalidation.
    front: ThreadLocal<RefCell<Front>>,
    /// `keygate_auth_cache_total{result="hit"}`, resolved once.
    hits: IntCounter,
    /// Hashes the store does not know, for `negative_ttl`.
    negative: moka::sync::Cache<KeyHash, (), crate::FastHash>,
    /// Generation of the latest invalidation of each recently invalidated hash.
    invalidated: moka::sync::Cache<KeyHash, u64, crate::FastHash>,
    /// The same per principal id (keys it created) and per org id (its keys).
    invalidated_principals: moka::sync::Cache<String, u64, crate::FastHash>,
    invalidated_orgs: moka::sync::Cache<String, u64, crate::FastHash>,
    /// Highest record version announced for a hash, for [`VERSION_WAIT`].
    awaited: moka::sync::Cache<KeyHash, u64, crate::FastHash>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// One copy of the org ids, creator ids and scope lists the cached keys repeat.
    shared: Shared,
    lookups: Semaphore,
    ttl: Duration,
    max_staleness: Duration,
    stale_if_error: Duration,
    /// How long a lookup may wait for a free lookup slot.
    lookup_wait: Duration,
}

/// Invalidation generations, kept as long as an entry they could concern may be served.
fn marks<K>(cache: &CacheConfig) -> moka::sync::Cache<K, u64, crate::FastHash>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(1_000_000)
        .time_to_live(cache.stale_if_error + Duration::from_secs(1))
        .build_with_hasher(crate::FastHash::default())
}

impl KeyResolver {
    pub fn new(
        store: Arc<dyn KeyStore>,
        bus: Arc<dyn InvalidationBus>,
        cache: &CacheConfig,
        lookup_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let capacity = usize::try_from(cache.max_entries).unwrap_or(usize::MAX);
        let positive = Cache::with(
            capacity,
            cache.max_entries,
            UnitWeighter,
            crate::FastHash::default(),
            DefaultLifecycle::default(),
        );
        // Room for every entry at once, so the cache's tables never double (and copy)
        // while it fills: memory not yet written to is address space, not RSS. Up to
        // a bound, so that a huge `max_entries` cannot ask for gigabytes at start.
        positive.reserve(capacity.min(RESERVED_ENTRIES));
        let negative = moka::sync::Cache::builder()
            .max_capacity((cache.max_entries / 4).max(10_000))
            .time_to_live(cache.negative_ttl)
            .build_with_hasher(crate::FastHash::default());
        let invalidated = marks(cache);
        let awaited = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(VERSION_WAIT)
            .build_with_hasher(crate::FastHash::default());
        let hits = metrics.auth_cache.with_label_values(&["hit"]);
        KeyResolver {
            store,
            bus,
            metrics,
            front: ThreadLocal::new(),
            hits,
            connected: AtomicBool::new(false),
            recheck_before: AtomicU64::new(0),
            base: Instant::now(),
            positive,
            flights: Flights::default(),
            negative,
            invalidated,
            invalidated_principals: marks(cache),
            invalidated_orgs: marks(cache),
            awaited,
            generation: AtomicU64::new(0),
            shared: Shared::default(),
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
    ) -> Result<Option<Arc<KeyView>>, Unavailable> {
        self.resolve_at(hash, Instant::now()).await
    }

    /// [`resolve`](Self::resolve) for a request that arrived at `arrived` (the data
    /// plane reads the clock once per request): entries are judged as of then, and a
    /// store check that started after it answers this request.
    pub async fn resolve_at(
        self: &Arc<Self>,
        hash: &KeyHash,
        arrived: Instant,
    ) -> Result<Option<Arc<KeyView>>, Unavailable> {
        // Read before any check below: what is remembered was checked at it.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(record) = self.front_hit(hash, generation, arrived) {
            self.hits.inc();
            return Ok(Some(record));
        }
        // Boxed: a lookup's future is large, and a memo hit needs none.
        Box::pin(self.resolve_slow(hash, arrived, generation)).await
    }

    /// Past the memo: the cache, then the store.
    async fn resolve_slow(
        self: &Arc<Self>,
        hash: &KeyHash,
        arrived: Instant,
        generation: u64,
    ) -> Result<Option<Arc<KeyView>>, Unavailable> {
        if let Some(c) = self.positive.get(hash)
            && self.is_current(hash, &c)
        {
            let age = self.age(&c, arrived);
            if self.trusted(&c) {
                if age < self.ttl {
                    self.hits.inc();
                    self.remember(hash, &c, generation);
                    return Ok(Some(c.key.clone()));
                }
                if age < self.max_staleness {
                    self.count("hit");
                    self.spawn_recheck(*hash);
                    return Ok(Some(c.key.clone()));
                }
            }
            self.count("miss");
            return match self.load(*hash, arrived).await {
                Ok(r) => Ok(r),
                Err(Unavailable) if age < self.stale_if_error => {
                    self.count("stale");
                    Ok(Some(c.key.clone()))
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

    /// The key view of this thread's memo for `hash`, if the memo is of the current
    /// `generation` and the entry is trusted and younger than `ttl`.
    fn front_hit(&self, hash: &KeyHash, generation: u64, now: Instant) -> Option<Arc<KeyView>> {
        let mut front = self.front.get()?.borrow_mut();
        let c = front.at(generation).get(hash)?;
        self.fresh(c, now).then(|| c.key.clone())
    }

    /// Remembers in this thread's memo an entry found current at `generation`.
    fn remember(&self, hash: &KeyHash, c: &Cached, generation: u64) {
        let mut front = self
            .front
            .get_or(|| RefCell::new(Front::new()))
            .borrow_mut();
        front.at(generation).insert(*hash, c.clone());
    }

    /// The cached key for `hash`, without any store lookup (used when the client
    /// address is over its failed-authentication budget: known-good keys still work).
    pub async fn cached(&self, hash: &KeyHash) -> Option<Arc<KeyView>> {
        let c = self.positive.get(hash)?;
        (self.is_current(hash, &c)
            && self.trusted(&c)
            && self.age(&c, Instant::now()) < self.max_staleness)
            .then(|| c.key.clone())
    }

    /// Drops every cached entry of this key (all its hashes) after an admin change, here
    /// at once and on every other replica through the bus. `key` is the record as
    /// written (or as it would be, when the write's outcome is unknown): its version is
    /// announced with its hashes.
    pub async fn invalidate_key(&self, key: &KeyRecord) {
        let changes: Vec<Invalidation> = key
            .hashes()
            .map(|hash| Invalidation::Key {
                hash,
                version: Some(key.version),
            })
            .collect();
        self.invalidate(&changes).await;
    }

    /// After a principal was disabled, enabled or deleted: every key it created.
    pub async fn invalidate_principal(&self, id: &str) {
        self.invalidate(&[Invalidation::Principal(id.to_string())])
            .await;
    }

    /// After an org's `key_policy` changed: every key of the org.
    pub async fn invalidate_org(&self, id: &str) {
        self.invalidate(&[Invalidation::Org(id.to_string())]).await;
    }

    /// Applies `changes` here at once, then tells every other replica.
    pub async fn invalidate(&self, changes: &[Invalidation]) {
        self.invalidate_local(changes).await;
        if let Err(e) = self.bus.publish(changes).await {
            // A shared store published the change in the write itself; a replica that
            // missed that too sees its bus as lost (missed heartbeat) and rechecks.
            tracing::warn!(error = %e, "could not publish an invalidation");
        }
    }

    /// Drops the local entries concerned by `changes`.
    pub async fn invalidate_local(&self, changes: &[Invalidation]) {
        for change in changes {
            let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            match change {
                Invalidation::Key { hash, version } => {
                    if let Some(v) = version {
                        self.awaited
                            .entry(*hash)
                            .and_upsert_with(|old| old.map_or(*v, |e| (*e.value()).max(*v)));
                    }
                    self.invalidated
                        .entry(*hash)
                        .and_upsert_with(|old| old.map_or(g, |e| (*e.value()).max(g)));
                    self.positive.remove(hash);
                    self.negative.invalidate(hash);
                }
                Invalidation::Principal(id) => {
                    self.invalidated_principals.insert(id.clone(), g);
                }
                Invalidation::Org(id) => {
                    self.invalidated_orgs.insert(id.clone(), g);
                }
            }
            self.metrics.invalidations.inc();
        }
    }

    /// Drops the local entries of one hash.
    pub async fn invalidate_hash(&self, hash: &KeyHash) {
        self.invalidate_local(&[Invalidation::Key {
            hash: *hash,
            version: None,
        }])
        .await;
    }

    /// Applies the bus's events until it closes: other replicas' invalidations, and the
    /// connected/lost state that decides whether cached entries may be trusted.
    pub async fn listen(self: Arc<Self>) {
        let mut events = self.bus.subscribe();
        while let Some(event) = events.recv().await {
            match event {
                BusEvent::Invalidate(changes) => self.invalidate_local(&changes).await,
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

    /// Whether the entry may be served at `now` without a store check: trusted and
    /// younger than `ttl`.
    fn fresh(&self, c: &Cached, now: Instant) -> bool {
        self.trusted(c) && self.age(c, now) < self.ttl
    }

    /// How long before `now` the entry's lookup started.
    fn age(&self, c: &Cached, now: Instant) -> Duration {
        Duration::from_nanos(self.nanos(now).saturating_sub(c.checked))
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether an entry may be served without a store check (bus connected, and the
    /// entry checked since it connected).
    fn trusted(&self, c: &Cached) -> bool {
        !c.provisional
            && self.connected.load(Ordering::Acquire)
            && c.checked >= self.recheck_before.load(Ordering::Acquire)
    }

    /// Whether no invalidation of `hash`, of the key's creator or of its org happened
    /// after `c`'s lookup started.
    fn is_current(&self, hash: &KeyHash, c: &Cached) -> bool {
        if c.generation == self.generation.load(Ordering::Acquire) {
            return true;
        }
        let before = |g: Option<u64>| g.is_none_or(|g| g <= c.generation);
        before(self.invalidated.get(hash))
            && before(self.invalidated_principals.get(&*c.key.created_by))
            && before(self.invalidated_orgs.get(&*c.key.org))
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
        &self,
        hash: KeyHash,
        arrived: Instant,
    ) -> Result<Option<Arc<KeyView>>, Unavailable> {
        // A lookup that raced an invalidation of this hash produced an entry that may
        // predate the change: look again rather than serve it (or call the key unknown).
        for _ in 0..LOAD_ATTEMPTS {
            let _flight = self.flights.lock(&hash).await;
            // What the lookup this one queued behind (if any) found.
            if let Some(c) = self.positive.peek(&hash) {
                let answers = c.checked >= self.nanos(arrived) || self.fresh(&c, Instant::now());
                if self.is_current(&hash, &c) && answers {
                    return Ok(Some(c.key));
                }
            } else if self.negative.contains_key(&hash) {
                return Ok(None);
            }
            let generation = self.generation.load(Ordering::Acquire);
            let checked = self.nanos(Instant::now());
            let Some(record) = self.fetch(&hash).await? else {
                self.negative.insert(hash, ());
                self.positive.remove(&hash);
                return Ok(None);
            };
            let provisional = self.awaited.get(&hash).is_some_and(|v| record.version < v);
            let c = Cached {
                key: Arc::new(record.into_view(&hash, &self.shared)),
                checked,
                generation,
                provisional,
            };
            self.positive.insert(hash, c.clone());
            if self.is_current(&hash, &c) {
                return Ok(Some(c.key));
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

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::key::{KeyPolicy, KeyStatus, Org, OrgScope, Principal, Role};
    use crate::store::{EmbeddedStore, Instrumented, LocalBus};

    fn cache() -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            max_entries: 1000,
            max_staleness: Duration::from_secs(60),
            stale_if_error: Duration::from_secs(300),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn KeyStore>,
        resolver: Arc<KeyResolver>,
        metrics: Arc<Metrics>,
        key: KeyRecord,
        creator: Principal,
        org: Org,
    }

    /// A key of a `key_policy: creator` org, created by an active manager, cached.
    async fn fixture() -> Fixture {
        fixture_with(&cache()).await
    }

    async fn fixture_with(cache: &CacheConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        // Instrumented, to count the store lookups the resolver makes.
        let store: Arc<dyn KeyStore> = Arc::new(Instrumented::new(
            Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap()),
            metrics.clone(),
            Duration::from_secs(5),
        ));
        let resolver = Arc::new(KeyResolver::new(
            store.clone(),
            Arc::new(LocalBus),
            cache,
            Duration::from_millis(250),
            metrics.clone(),
        ));
        tokio::spawn(resolver.clone().listen());
        let now = Timestamp::now();
        let org = Org {
            id: "acme".into(),
            name: "Acme".into(),
            key_policy: KeyPolicy::Creator,
            max_key_lifetime_days: None,
            rate_limit: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.create_org(&org).await.unwrap();
        let creator = Principal {
            id: "prn_1".into(),
            name: "m".into(),
            role: Role::Manager,
            orgs: OrgScope::List(vec!["acme".into()]),
            api_access: true,
            disabled: false,
            created_at: now,
            deleted_at: None,
            token_hash: KeyHash::of("admin"),
            version: 1,
        };
        store.create_principal(&creator).await.unwrap();
        let key = KeyRecord {
            created_by: creator.id.clone(),
            ..KeyRecord::sample(KeyHash::of("secret"))
        };
        store.create_key(&key, None).await.unwrap();
        // The bus reports Connected first; until then nothing is trusted.
        for _ in 0..100 {
            if resolver.connected.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let f = Fixture {
            _dir: dir,
            store,
            resolver,
            metrics,
            key,
            creator,
            org,
        };
        assert!(f.status().await != KeyStatus::Suspended);
        f
    }

    impl Fixture {
        async fn resolve(&self) -> Arc<KeyView> {
            self.resolver
                .resolve(&self.key.secret_hash)
                .await
                .unwrap()
                .unwrap()
        }

        /// The status of the key as the resolver serves it now.
        async fn status(&self) -> KeyStatus {
            self.resolve().await.status_at(Timestamp::now())
        }

        fn count(&self, result: &str) -> u64 {
            self.metrics.auth_cache.with_label_values(&[result]).get()
        }

        /// Key lookups the store has answered.
        fn lookups(&self) -> u64 {
            self.metrics
                .store_operations
                .with_label_values(&["key_by_hash", "ok"])
                .get()
        }

        /// Entries in this thread's memo.
        fn remembered(&self) -> usize {
            self.resolver
                .front
                .get()
                .map_or(0, |f| f.borrow().entries.len())
        }

        /// Writes a revoked version of the key to the store, announcing nothing.
        async fn revoke_silently(&self) {
            let mut revoked = self.key.clone();
            revoked.revoked_at = Some(Timestamp::now());
            self.store.update_key(&revoked, 1).await.unwrap();
        }
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_unknown_hash_reach_the_store_once() {
        let f = fixture().await;
        let before = f.lookups();
        let unknown = KeyHash::of("nobody has this key");
        let all = (0..16).map(|_| {
            let r = f.resolver.clone();
            tokio::spawn(async move { r.resolve(&unknown).await })
        });
        for answer in futures_util::future::join_all(all).await {
            assert!(matches!(answer.unwrap(), Ok(None)));
        }
        assert_eq!(f.lookups(), before + 1, "one lookup answered all 16");
        assert_eq!(f.count("miss") + f.count("negative"), 16 + 1);
    }

    #[tokio::test]
    async fn the_thread_memo_serves_hits_and_never_outlives_an_invalidation() {
        let f = fixture().await;
        f.resolve().await;
        assert_eq!(f.remembered(), 1, "a moka hit is remembered");
        f.revoke_silently().await;
        let hits = f.count("hit");
        for _ in 0..3 {
            assert!(f.status().await != KeyStatus::Revoked, "served from cache");
        }
        assert_eq!(f.count("hit"), hits + 3, "memo hits count as hits");
        // Any invalidation, even of another key, empties the memo; this key's reads
        // the store.
        f.resolver.invalidate_org("other").await;
        assert!(
            f.status().await != KeyStatus::Revoked,
            "still cached in moka"
        );
        assert_eq!(f.remembered(), 1, "emptied, then this hit remembered");
        f.resolver.invalidate_hash(&f.key.secret_hash).await;
        assert_eq!(f.remembered(), 1, "not emptied until the next lookup");
        assert!(f.status().await == KeyStatus::Revoked, "the store's record");
        assert_eq!(f.remembered(), 0, "a store read is not remembered");
    }

    #[tokio::test]
    async fn the_thread_memo_serves_nothing_older_than_ttl() {
        let f = fixture_with(&CacheConfig {
            ttl: Duration::from_millis(50),
            ..cache()
        })
        .await;
        f.resolve().await;
        f.revoke_silently().await;
        assert!(
            f.status().await != KeyStatus::Revoked,
            "served from the memo"
        );
        // Past ttl the entry is served once more while moka rechecks it in the
        // background; the memo must not keep serving the old one after that.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut seen = false;
        for _ in 0..100 {
            if f.status().await == KeyStatus::Revoked {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "the recheck's record was never served");
    }

    #[tokio::test]
    async fn a_key_invalidation_makes_the_next_lookup_read_the_store() {
        let f = fixture().await;
        let mut revoked = f.key.clone();
        revoked.revoked_at = Some(Timestamp::now());
        f.store.update_key(&revoked, 1).await.unwrap();
        assert!(f.status().await != KeyStatus::Revoked, "served from cache");
        f.resolver
            .invalidate_local(&[Invalidation::Key {
                hash: f.key.secret_hash,
                version: Some(2),
            }])
            .await;
        let seen = f.resolve().await;
        assert!(seen.status_at(Timestamp::now()) == KeyStatus::Revoked);
        assert_eq!(seen.version, 2);
        let hits = f.count("hit");
        f.resolve().await;
        assert_eq!(
            f.count("hit"),
            hits + 1,
            "the new version is trusted from cache"
        );
    }

    #[tokio::test]
    async fn a_record_older_than_an_announced_version_is_never_trusted_from_cache() {
        let f = fixture().await;
        // A write announced as version 2 that has not landed (yet).
        f.resolver
            .invalidate_local(&[Invalidation::Key {
                hash: f.key.secret_hash,
                version: Some(2),
            }])
            .await;
        let misses = f.count("miss");
        for _ in 0..3 {
            assert_eq!(f.resolve().await.version, 1);
        }
        assert_eq!(f.count("miss"), misses + 3, "every lookup asked the store");
        // The write lands: the very next lookup sees it.
        let mut revoked = f.key.clone();
        revoked.revoked_at = Some(Timestamp::now());
        f.store.update_key(&revoked, 1).await.unwrap();
        assert!(f.status().await == KeyStatus::Revoked);
    }

    #[tokio::test]
    async fn principal_and_org_invalidations_reach_the_keys_they_concern() {
        let f = fixture().await;
        let mut disabled = f.creator.clone();
        disabled.disabled = true;
        f.store.update_principal(&disabled, 1).await.unwrap();
        assert!(
            f.status().await != KeyStatus::Suspended,
            "served from cache"
        );
        f.resolver.invalidate_principal(&f.creator.id).await;
        assert!(f.status().await == KeyStatus::Suspended);

        let mut relaxed = f.org.clone();
        relaxed.key_policy = KeyPolicy::Org;
        f.store.update_org(&relaxed, 1).await.unwrap();
        assert!(
            f.status().await == KeyStatus::Suspended,
            "served from cache"
        );
        f.resolver.invalidate_org("other").await;
        assert!(
            f.status().await == KeyStatus::Suspended,
            "another org's change"
        );
        f.resolver.invalidate_org(&f.org.id).await;
        assert!(f.status().await != KeyStatus::Suspended);
    }
}
