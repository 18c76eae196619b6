//! Where keys, orgs, principals and audit records live: the [`KeyStore`] trait and its
//! backends, plus the rate limiters' counters ([`WindowStore`] on Redis, [`QuotaStore`]
//! in the embedded file). `embedded` (redb, one durable file, one process) is the default; `redis`
//! (shared by replicas) implements the same trait, and one behavioural test set
//! (`conformance`) runs against both.
//!
//! A store knows only the domain types of `crate::key`. It never sees a raw token:
//! lookups are by [`KeyHash`]. Every write is atomic and durable before it returns, so
//! a key acknowledged to an admin survives a crash.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, Principal};

pub mod bus;
pub mod embedded;
pub mod fault;
pub mod instrumented;
pub mod redis;
pub mod usage;

#[cfg(test)]
mod conformance;
#[cfg(test)]
#[path = "../../tests/support_redis/mod.rs"]
pub(crate) mod test_redis;

pub use self::redis::{RedisBus, RedisStore};
pub use bus::{BusEvent, Invalidation, InvalidationBus, LocalBus};
pub use embedded::EmbeddedStore;
pub use instrumented::Instrumented;
pub use usage::{UsageBatch, UsageCounts, UsageRow};

// `QuotaStore`, `WindowStore`: declared below with `KeyStore`.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time: callers fail closed
    /// (503), never open.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// A write conflicts with what is stored (duplicate id, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A compare-and-swap found another version stored than the one the change was
    /// derived from: nothing was written. The caller reloads and decides again.
    #[error("{what} changed since it was read (version {expected} expected, {found} stored)")]
    VersionConflict {
        what: String,
        expected: u64,
        found: u64,
    },
    /// Stored data could not be decoded: a bug or a damaged file.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
}

/// Outcome of [`KeyStore::create_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The idempotency key was used before, for this key id.
    IdempotencyReplay {
        existing_id: String,
    },
}

/// A rate-limit quota counter of the embedded store's limiter, kept across restarts
/// (day and month windows): `owner` is a key id, or `<key id>:r:<route>` for a route's
/// limit; `window` is `day` or `month`; `start` (Unix seconds) names the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCount {
    pub owner: String,
    pub window: String,
    pub start: i64,
    pub count: u64,
}

/// One page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `after` to get the next page; `None` at the end.
    pub next: Option<String>,
}

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The key whose current or previous secret hashes to `hash` (deleted keys included;
    /// the caller decides what a deleted or revoked key means), with
    /// `creator_suspended` derived in the same atomic read from its org's `key_policy`
    /// and its creator's state.
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;

    /// A key by id, deleted keys included.
    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// The org's keys that are not deleted, newest first, `limit` at most, starting after
    /// the key id `after`.
    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError>;

    /// Stores a new key and its hash index. With an idempotency key (scoped to the org)
    /// seen before, stores nothing and returns the earlier key's id.
    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError>;

    /// Compare-and-swap: replaces the stored key (same id) only if its version is still
    /// `expected`, storing `key` with version `expected + 1` (`VersionConflict`
    /// otherwise, `Conflict` if there is no such key). Keeps the hash index in step
    /// (hashes the new record no longer has are removed, new ones added) and keeps the
    /// stored `last_used_at` if later, in one transaction; on a shared store, announces
    /// the change on the invalidation channel in that same step.
    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError>;

    /// All keys created by a principal (for `key_policy: creator`).
    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError>;

    /// Creates an org; `Conflict` if the id exists.
    async fn create_org(&self, org: &Org) -> Result<(), StoreError>;
    /// Compare-and-swap of an existing org, as [`KeyStore::update_key`]; announces a
    /// `key_policy` change on the invalidation channel in the same step.
    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError>;
    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError>;
    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError>;

    /// Stores `principal` only if no principal exists at all; true if it was stored.
    /// Atomic: of several gateways starting at once, exactly one wins.
    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError>;
    /// Creates a principal and its token-hash index; `Conflict` if the id or the token
    /// is taken.
    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError>;
    /// Compare-and-swap of an existing principal, as [`KeyStore::update_key`], keeping
    /// the token index in step (a rotated token stops resolving in the same step);
    /// announces a change of `disabled` or `deleted_at` on the invalidation channel.
    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError>;
    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError>;
    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError>;
    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError>;

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Audit events of one org, newest first.
    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError>;

    /// Cheap reachability check (for `/readyz` and `keygate_store_up`).
    async fn ping(&self) -> Result<(), StoreError>;

    // Usage and last_used_at (SPEC §1, §4), written in batches by `usage::UsageRecorder`.
    // The defaults let a backend compile before it implements them; the recorder then
    // keeps retrying, and the usage endpoint answers 503.

    /// Adds each row's counts to what is stored for its key and hour, keeping each
    /// hour's top [`usage::RESOURCES_PER_HOUR`] resources (the rest under `other`:
    /// [`UsageCounts::cap_resources`]). Atomic, and idempotent per batch id: a batch
    /// seen before (for at least a day) is not applied again.
    async fn add_usage(&self, _batch: &UsageBatch) -> Result<(), StoreError> {
        Err(not_supported())
    }

    /// A key's stored hours with `from <= hour < to`, oldest first (deleted keys too).
    async fn usage(
        &self,
        _key_id: &str,
        _from: Timestamp,
        _to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        Err(not_supported())
    }

    /// Deletes the usage of hours before `before`, and batch ids older than a day;
    /// returns the number of hours deleted.
    async fn prune_usage(&self, _before: Timestamp) -> Result<u64, StoreError> {
        Err(not_supported())
    }

    /// Moves each key's `last_used_at` forward to the given time, never back, and
    /// changes nothing else in the record (not its version), so it cannot undo a
    /// concurrent admin edit. Unknown ids are skipped. `update_key` in turn keeps the
    /// later `last_used_at` of the stored and the given record.
    async fn touch_keys(&self, _seen: &[(String, Timestamp)]) -> Result<(), StoreError> {
        Err(not_supported())
    }
}

/// Rate-limit window counters shared by every replica (the Redis store), for
/// `limits::RedisLimiter`. Reached through [`Instrumented`] like every store call.
#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// Leases tokens from every counter of `windows` (name, limit, expire at in Unix
    /// seconds, tokens wanted ≥ 1) if each has room, or from none, in one atomic step.
    /// Returns whether it granted, and per counter the tokens granted (0 when refused)
    /// and its value after.
    async fn lease_windows(
        &self,
        windows: &[(String, u64, i64, u64)],
    ) -> Result<(bool, Vec<(u64, u64)>), StoreError>;

    /// Gives back `tokens` leased from counter `name` and not used; returns how many
    /// were given back (fewer if the counter is lower, none once it expired).
    async fn refund_window(&self, name: &str, tokens: u64) -> Result<u64, StoreError>;

    /// The current values of counters (0 where absent), counting nothing.
    async fn peek_windows(&self, names: &[String]) -> Result<Vec<u64>, StoreError>;
}

/// Day and month quota counters kept across restarts (the embedded store), for
/// `limits::QuotaFile`.
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// Stores counters, replacing each owner's and window's earlier value, in one
    /// durable write.
    async fn save_quotas(&self, counts: Vec<QuotaCount>) -> Result<(), StoreError>;

    /// The stored counters of windows that started at `since` or later; older ones
    /// (their window is over) are deleted.
    async fn load_quotas(&self, since: Timestamp) -> Result<Vec<QuotaCount>, StoreError>;
}

fn not_supported() -> StoreError {
    StoreError::Unavailable("not supported by this backend".to_string())
}
