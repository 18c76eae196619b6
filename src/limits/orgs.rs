//! Org records for the data plane, cached briefly: an org's `rate_limit` is a default
//! for each of its keys, so the limiter reads the org on every request.
//!
//! An entry is used for [`FRESH_FOR`] and then read again from the store, so an org
//! change takes effect within a second on every replica, without an invalidation
//! message. Concurrent misses of one org make one store read. When the store cannot
//! answer, the last record read is used for up to `cache.stale_if_error` (like the keys
//! themselves); an org never read gets `Unavailable`, which the caller turns into 503.

use std::sync::Arc;
use std::time::Duration;

use crate::key::Org;
use crate::store::KeyStore;

/// How long an org record is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
const MAX_ORGS: u64 = 100_000;

/// The org could not be read and no earlier record is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub struct OrgCache {
    store: Arc<dyn KeyStore>,
    /// Records younger than [`FRESH_FOR`]; `None` caches "no such org".
    fresh: moka::future::Cache<String, Arc<Option<Org>>, crate::FastHash>,
    /// The last record read of each org, for store outages.
    last_good: moka::sync::Cache<String, Arc<Option<Org>>, crate::FastHash>,
}

impl OrgCache {
    pub fn new(store: Arc<dyn KeyStore>, stale_if_error: Duration) -> Self {
        OrgCache {
            store,
            fresh: moka::future::Cache::builder()
                .max_capacity(MAX_ORGS)
                .time_to_live(FRESH_FOR)
                .build_with_hasher(crate::FastHash::default()),
            last_good: moka::sync::Cache::builder()
                .max_capacity(MAX_ORGS)
                .time_to_live(stale_if_error.max(FRESH_FOR))
                .build_with_hasher(crate::FastHash::default()),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Option<Org>>, Unavailable> {
        let load = async {
            let org = Arc::new(self.store.get_org(id).await?);
            self.last_good.insert(id.to_string(), org.clone());
            Ok::<_, crate::store::StoreError>(org)
        };
        match self.fresh.try_get_with_by_ref(id, load).await {
            Ok(org) => Ok(org),
            Err(e) => match self.last_good.get(id) {
                Some(org) => Ok(org),
                None => {
                    tracing::debug!(org = id, error = %e, "org unreadable and never read: 503");
                    Err(Unavailable)
                }
            },
        }
    }
}
