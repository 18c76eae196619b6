//! The key resolver (to be completed).
use std::sync::Arc;

use crate::config::CacheConfig;
use crate::key::{KeyHash, KeyRecord};
use crate::metrics::Metrics;
use crate::store::KeyStore;

/// The store could not answer and the key is not usable from cache: 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key store unavailable")]
pub struct Unavailable;

pub struct KeyResolver {
    store: Arc<dyn KeyStore>,
    metrics: Arc<Metrics>,
}

impl KeyResolver {
    pub fn new(store: Arc<dyn KeyStore>, _cache: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        KeyResolver { store, metrics }
    }

    /// The key stored under `hash`, from cache or store.
    pub async fn resolve(&self, hash: &KeyHash) -> Result<Option<Arc<KeyRecord>>, Unavailable> {
        self.store
            .key_by_hash(hash)
            .await
            .map(|r| r.map(Arc::new))
            .map_err(|_| Unavailable)
    }

    /// Drops every cached entry of this key (all its hashes) after an admin change, so
    /// that the very next request sees the change.
    pub async fn invalidate_key(&self, key: &KeyRecord) {
        for h in key.hashes() {
            self.invalidate_hash(&h).await;
        }
    }

    pub async fn invalidate_hash(&self, _hash: &KeyHash) {
        self.metrics.invalidations.inc();
    }
}
