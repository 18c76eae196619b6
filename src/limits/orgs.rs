//! Org records for the data plane, cached briefly: an org's `rate_limit` is a default
//! for each of its keys, so the limiter reads the org on every request.
//!
//! An entry is used for [`FRESH_FOR`] and then read again from the store, so an org
//! change takes effect within a second on every replica, without an invalidation
//! message. Concurrent misses of one org make one store read. When the store cannot
//! answer, the last record read is used for up to `cache.stale_if_error` (like the keys
//! themselves); an org never read gets `Unavailable`, which the caller turns into 503.
//!
//! Each thread keeps what it was given in a small memo of its own, used until the same
//! moment (`FRESH_FOR` after the store read began): a request then finds its org with
//! one hash-map lookup instead of moka's shared bookkeeping.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use crate::key::Org;
use crate::memo::Memo;
use crate::store::KeyStore;

/// How long an org record is used before it is read again.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
const MAX_ORGS: u64 = 100_000;
/// Orgs a thread's memo holds at most; it is emptied when full.
const FRONT_MAX: usize = 1024;

/// An org record (or its absence) and when the store read that produced it began.
#[derive(Clone)]
struct Fetched {
    org: Arc<Option<Org>>,
    at: Instant,
}

impl Fetched {
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < FRESH_FOR
    }
}

/// The org could not be read and no earlier record is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

pub struct OrgCache {
    store: Arc<dyn KeyStore>,
    /// Records younger than [`FRESH_FOR`]; `None` caches "no such org".
    fresh: moka::future::Cache<String, Fetched, crate::FastHash>,
    /// Per thread, what `fresh` gave, each used while [`Fetched::fresh`].
    front: ThreadLocal<RefCell<Memo<String, Fetched>>>,
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
            front: ThreadLocal::new(),
        }
    }

    /// The org from this thread's memo, if fresh there at `now`: no future, no moka.
    pub fn remembered(&self, id: &str, now: Instant) -> Option<Arc<Option<Org>>> {
        let front = self.front.get()?.borrow();
        let f = front.get(id)?;
        f.fresh(now).then(|| f.org.clone())
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Option<Org>>, Unavailable> {
        let now = Instant::now();
        if let Some(org) = self.remembered(id, now) {
            return Ok(org);
        }
        let load = async {
            let at = Instant::now();
            let org = Arc::new(self.store.get_org(id).await?);
            self.last_good.insert(id.to_string(), org.clone());
            Ok::<_, crate::store::StoreError>(Fetched { org, at })
        };
        match self.fresh.try_get_with_by_ref(id, load).await {
            Ok(f) => {
                if f.fresh(now) {
                    self.front
                        .get_or(|| RefCell::new(Memo::new(FRONT_MAX)))
                        .borrow_mut()
                        .insert(id.to_string(), f.clone());
                }
                Ok(f.org)
            }
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
