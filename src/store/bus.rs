//! The invalidation channel between replicas (SPEC §4 "Consistency").
//!
//! After an admin write, the replica that served it invalidates its own cache and
//! publishes the affected key hashes; every replica's [`KeyResolver`] drops them on
//! receipt. A bus also reports whether it is healthy: `Lost` when the channel broke or
//! its heartbeat was missed for a second, `Connected` once it is subscribed again. While
//! not connected, the resolver checks every entry against the store before use.
//!
//! [`KeyResolver`]: crate::auth::KeyResolver

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::key::KeyHash;
use crate::store::StoreError;

/// One thing that changed, as told to every replica's key cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The key with a secret of this hash changed; `version` is the record version the
    /// change produced (`None`: not known), so that no cache fill installs an older one.
    Key { hash: KeyHash, version: Option<u64> },
    /// A principal was disabled, enabled or deleted: the keys it created may be
    /// suspended or not any more (`key_policy: creator`).
    Principal(String),
    /// An org's `key_policy` changed: the same for all its keys.
    Org(String),
}

/// What a subscriber hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// Another replica (or this one) changed these.
    Invalidate(Vec<Invalidation>),
    /// The channel is (again) subscribed and its heartbeat is seen.
    Connected,
    /// The channel broke or its heartbeat was missed: changes may be unseen.
    Lost,
}

#[async_trait]
pub trait InvalidationBus: Send + Sync + 'static {
    /// Tells every replica that these changed. Best effort: a shared store also
    /// publishes each change in the write itself, and a replica that misses both is in
    /// `Lost` state and rechecks entries anyway.
    async fn publish(&self, changes: &[Invalidation]) -> Result<(), StoreError>;

    /// Starts listening. The receiver gets `Connected` first once subscribed.
    fn subscribe(&self) -> mpsc::Receiver<BusEvent>;
}

/// One process, one cache: nothing to tell anyone (the embedded store).
#[derive(Debug, Default)]
pub struct LocalBus;

#[async_trait]
impl InvalidationBus for LocalBus {
    async fn publish(&self, _changes: &[Invalidation]) -> Result<(), StoreError> {
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusEvent> {
        let (tx, rx) = mpsc::channel(1);
        // Always connected; the sender is dropped, which subscribers read as "no more
        // events" rather than as a loss.
        let _ = tx.try_send(BusEvent::Connected);
        rx
    }
}
