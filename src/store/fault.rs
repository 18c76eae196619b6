//! Fault injection for the tests that prove writes stay written when the store
//! misbehaves: [`LateWrites`] makes every key, principal and org change land in the
//! store only after a delay, while its caller gives up at `store.timeout` (a write that
//! commits after the admin was told it timed out). Off unless the environment variable
//! [`LATE_WRITES_ENV`] is set (milliseconds) when `keygate serve` starts; it logs a
//! warning when on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{CreateOutcome, KeyStore, Page, StoreError, UsageBatch, UsageRow};
use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, Principal};

/// Milliseconds by which every update of a key, principal or org is held back.
pub const LATE_WRITES_ENV: &str = "KEYGATE_FAULT_LATE_WRITES_MS";

/// `inner`, wrapped in [`LateWrites`] when [`LATE_WRITES_ENV`] asks for it.
pub fn from_env(inner: Arc<dyn KeyStore>) -> Arc<dyn KeyStore> {
    let delay = std::env::var(LATE_WRITES_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match delay {
        Some(ms) => {
            tracing::warn!(
                delay_ms = ms,
                "fault injection: key, principal and org updates land late"
            );
            Arc::new(LateWrites {
                inner,
                delay: Duration::from_millis(ms),
            })
        }
        None => inner,
    }
}

/// Sends each update after `delay` from a task of its own, so that a caller that stops
/// waiting (a timeout) does not stop the write: it still lands.
pub struct LateWrites {
    inner: Arc<dyn KeyStore>,
    delay: Duration,
}

impl LateWrites {
    async fn late<F>(&self, write: F) -> Result<(), StoreError>
    where
        F: FnOnce(
                Arc<dyn KeyStore>,
            ) -> futures_util::future::BoxFuture<'static, Result<(), StoreError>>
            + Send
            + 'static,
    {
        let inner = self.inner.clone();
        let delay = self.delay;
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            write(inner).await
        });
        task.await
            .map_err(|e| StoreError::Unavailable(format!("late write task failed: {e}")))?
    }
}

#[async_trait]
impl KeyStore for LateWrites {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key_by_hash(hash).await
    }
    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key_by_id(id).await
    }
    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        self.inner.list_keys(org, after, limit).await
    }
    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create_key(key, idempotency_key).await
    }
    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError> {
        let key = key.clone();
        self.late(move |s| Box::pin(async move { s.update_key(&key, expected).await }))
            .await
    }
    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.keys_created_by(principal_id).await
    }
    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        self.inner.create_org(org).await
    }
    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError> {
        let org = org.clone();
        self.late(move |s| Box::pin(async move { s.update_org(&org, expected).await }))
            .await
    }
    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        self.inner.get_org(id).await
    }
    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.inner.list_orgs().await
    }
    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError> {
        self.inner.create_first_principal(principal).await
    }
    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        self.inner.create_principal(principal).await
    }
    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError> {
        let principal = principal.clone();
        self.late(move |s| Box::pin(async move { s.update_principal(&principal, expected).await }))
            .await
    }
    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        self.inner.get_principal(id).await
    }
    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        self.inner.principal_by_token(hash).await
    }
    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        self.inner.list_principals().await
    }
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.append_audit(event).await
    }
    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.inner.list_audit(org, after, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.inner.add_usage(batch).await
    }
    async fn usage(
        &self,
        key_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.inner.usage(key_id, from, to).await
    }
    async fn prune_usage(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.inner.prune_usage(before).await
    }
    async fn touch_keys(&self, seen: &[(String, Timestamp)]) -> Result<(), StoreError> {
        self.inner.touch_keys(seen).await
    }
}
