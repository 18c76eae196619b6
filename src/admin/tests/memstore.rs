//! TEST ONLY: an in-memory `KeyStore` for the admin API tests and the usage
//! recorder's, with an outage switch (`down`). Not for any other use: no durability,
//! one big lock, linear scans.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, Principal};
use crate::store::{CreateOutcome, KeyStore, Page, StoreError, UsageBatch};

#[derive(Default)]
struct State {
    keys: BTreeMap<String, KeyRecord>,
    idempotency: HashMap<(String, String), String>,
    orgs: BTreeMap<String, Org>,
    principals: BTreeMap<String, Principal>,
    audit: Vec<AuditEvent>,
    usage: Vec<UsageBatch>,
}

#[derive(Default)]
pub struct MemStore {
    state: Mutex<State>,
    /// While true, every call fails as `Unavailable` (a store outage).
    pub down: AtomicBool,
}

impl MemStore {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test store is down".into()));
        }
        Ok(self.state.lock().unwrap())
    }
}

fn page<T: Clone>(
    mut items: Vec<T>,
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    limit: usize,
) -> Page<T> {
    items.sort_by(|a, b| id(b).cmp(id(a)));
    let items: Vec<T> = items
        .into_iter()
        .filter(|i| after.is_none_or(|a| id(i) < a))
        .collect();
    let more = items.len() > limit;
    let items: Vec<T> = items.into_iter().take(limit).collect();
    let next = if more {
        items.last().map(|i| id(i).to_string())
    } else {
        None
    };
    Page { items, next }
}

/// Compare-and-swap of one record.
fn swap<T: Clone>(
    stored: &mut T,
    new: &T,
    id: &str,
    expected: u64,
    version: fn(&mut T) -> &mut u64,
) -> Result<(), StoreError> {
    let found = *version(stored);
    if found != expected {
        return Err(StoreError::VersionConflict {
            what: id.to_string(),
            expected,
            found,
        });
    }
    *stored = new.clone();
    *version(stored) = expected + 1;
    Ok(())
}

impl MemStore {
    /// The usage batches written, in order.
    pub fn usage_batches(&self) -> Vec<UsageBatch> {
        self.state.lock().unwrap().usage.clone()
    }
}

#[async_trait]
impl KeyStore for MemStore {
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.state()?.usage.push(batch.clone());
        Ok(())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .state()?
            .keys
            .values()
            .find(|k| k.hashes().any(|h| h == *hash))
            .cloned())
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.state()?.keys.get(id).cloned())
    }

    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        let items: Vec<KeyRecord> = self
            .state()?
            .keys
            .values()
            .filter(|k| k.org == org && k.deleted_at.is_none())
            .cloned()
            .collect();
        Ok(page(items, |k| k.id.as_str(), after, limit))
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut s = self.state()?;
        if let Some(i) = idempotency_key {
            let slot = (key.org.clone(), i.to_string());
            if let Some(existing) = s.idempotency.get(&slot) {
                return Ok(CreateOutcome::IdempotencyReplay {
                    existing_id: existing.clone(),
                });
            }
            s.idempotency.insert(slot, key.id.clone());
        }
        if s.keys.contains_key(&key.id) {
            return Err(StoreError::Conflict(format!("key {} exists", key.id)));
        }
        s.keys.insert(key.id.clone(), key.clone());
        Ok(CreateOutcome::Created)
    }

    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError> {
        let mut s = self.state()?;
        match s.keys.get_mut(&key.id) {
            Some(k) => swap(k, key, &key.id, expected, |k| &mut k.version),
            None => Err(StoreError::Conflict(format!("no key {}", key.id))),
        }
    }

    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .state()?
            .keys
            .values()
            .filter(|k| k.created_by == principal_id)
            .cloned()
            .collect())
    }

    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        let mut s = self.state()?;
        if s.orgs.contains_key(&org.id) {
            return Err(StoreError::Conflict(format!("org {} exists", org.id)));
        }
        s.orgs.insert(org.id.clone(), org.clone());
        Ok(())
    }

    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError> {
        let mut s = self.state()?;
        match s.orgs.get_mut(&org.id) {
            Some(o) => swap(o, org, &org.id, expected, |o| &mut o.version),
            None => Err(StoreError::Conflict(format!("no org {}", org.id))),
        }
    }

    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        Ok(self.state()?.orgs.get(id).cloned())
    }

    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        Ok(self.state()?.orgs.values().cloned().collect())
    }

    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError> {
        let mut s = self.state()?;
        if !s.principals.is_empty() {
            return Ok(false);
        }
        s.principals.insert(principal.id.clone(), principal.clone());
        Ok(true)
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        let mut s = self.state()?;
        if s.principals.contains_key(&principal.id) {
            return Err(StoreError::Conflict(format!("{} exists", principal.id)));
        }
        s.principals.insert(principal.id.clone(), principal.clone());
        Ok(())
    }

    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError> {
        let mut s = self.state()?;
        match s.principals.get_mut(&principal.id) {
            Some(p) => swap(p, principal, &principal.id, expected, |p| &mut p.version),
            None => Err(StoreError::Conflict(format!("no {}", principal.id))),
        }
    }

    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self.state()?.principals.get(id).cloned())
    }

    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        Ok(self
            .state()?
            .principals
            .values()
            .find(|p| p.token_hash == *hash)
            .cloned())
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        Ok(self.state()?.principals.values().cloned().collect())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.state()?.audit.push(event.clone());
        Ok(())
    }

    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let items: Vec<AuditEvent> = self
            .state()?
            .audit
            .iter()
            .filter(|e| e.org.as_deref() == Some(org))
            .cloned()
            .collect();
        Ok(page(items, |e| e.id.as_str(), after, limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.state().map(|_| ())
    }
}
