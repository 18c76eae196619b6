//! [`Flights`]: one async lock per key hash, held over a store lookup, so that of many
//! requests needing the same key checked, one asks the store and the others read what it
//! found. A lock exists only while someone holds or awaits it: a million cached keys
//! cost nothing here.
//!
//! The key cache ([`quick_cache`]) has a placeholder of its own for an absent key, but
//! none for a key it holds: a recheck of a cached key must leave the old entry readable
//! (it is served while the recheck runs) and still be single-flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

use crate::key::KeyHash;

type Slot = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub(crate) struct Flights {
    slots: Mutex<HashMap<KeyHash, Slot, crate::FastHash>>,
}

/// The lock of one hash, held until dropped.
pub(crate) struct Flight<'a> {
    flights: &'a Flights,
    hash: KeyHash,
    slot: Option<Slot>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    /// Waits for the lock of `hash`. Cancel-safe: a waiter dropped before it gets the
    /// lock leaves nothing behind.
    pub(crate) async fn lock(&self, hash: &KeyHash) -> Flight<'_> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*hash)
            .or_default()
            .clone();
        let mut flight = Flight {
            flights: self,
            hash: *hash,
            slot: Some(slot.clone()),
            guard: None,
        };
        flight.guard = Some(slot.lock_owned().await);
        flight
    }

    /// Hashes with a lock held or awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.guard = None;
        self.slot = None;
        let mut slots = self
            .flights
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: no one else holds or awaits this hash's lock. (A slot
        // is cloned out of the map only under this same mutex.)
        if slots
            .get(&self.hash)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn hash(b: u8) -> KeyHash {
        KeyHash([b; 32])
    }

    #[tokio::test(start_paused = true)]
    async fn one_holder_per_hash_and_nothing_left_after() {
        let flights = Arc::new(Flights::default());
        let first = flights.lock(&hash(1)).await;
        // Another hash is not held up.
        drop(flights.lock(&hash(2)).await);
        // The same hash waits for the first holder.
        let f = flights.clone();
        let waiter = tokio::spawn(async move {
            let _second = f.lock(&hash(1)).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !waiter.is_finished(),
            "a second holder got the same hash's lock"
        );
        assert_eq!(flights.len(), 1);
        drop(first);
        waiter.await.unwrap();
        assert_eq!(flights.len(), 0, "a released lock stayed in the map");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_nothing_behind() {
        let flights = Flights::default();
        let held = flights.lock(&hash(3)).await;
        let timed_out =
            tokio::time::timeout(Duration::from_millis(5), flights.lock(&hash(3))).await;
        assert!(timed_out.is_err());
        drop(held);
        assert_eq!(flights.len(), 0);
    }
}
