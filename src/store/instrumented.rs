//! The store decorator that bounds and measures every store call: [`Instrumented`] wraps
//! any [`KeyStore`] and is what the rest of keygate holds.
//!
//! It owns `store.timeout` (no caller waits on the store longer than that: SPEC §4) and
//! the store metrics of SPEC §6: `keygate_store_operations_total{op,result}`,
//! `keygate_store_latency_seconds{op}` and `keygate_store_up`. Labels are method names
//! and `ok`/`error`, a fixed set.
//!
//! It must never retry (a retried write could apply twice) and never turn an error into
//! a success: a timeout is `Unavailable`, which callers fail closed on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use jiff::Timestamp;

use super::{
    CreateOutcome, KeyStore, Page, QuotaCount, QuotaStore, StoreError, UsageBatch, UsageRow,
    WindowStore,
};
use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, Principal};
use crate::metrics::Metrics;

/// Every `op` label value, so that each series exists (at zero) from the start.
const OPS: &[&str] = &[
    "key_by_hash",
    "key_by_id",
    "list_keys",
    "create_key",
    "update_key",
    "keys_created_by",
    "create_org",
    "update_org",
    "get_org",
    "list_orgs",
    "create_first_principal",
    "create_principal",
    "update_principal",
    "get_principal",
    "principal_by_token",
    "list_principals",
    "append_audit",
    "list_audit",
    "ping",
    "add_usage",
    "usage",
    "prune_usage",
    "touch_keys",
    "lease_windows",
    "refund_window",
    "peek_windows",
    "save_quotas",
    "load_quotas",
];

/// Whether an operation writes: a write that timed out may still be applied by the
/// store after the caller gave up, and the error says so.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// Wraps a store of any of the store traits ([`KeyStore`], [`WindowStore`],
/// [`QuotaStore`]): every call is bounded and measured the same way.
pub struct Instrumented<S: ?Sized = dyn KeyStore> {
    inner: Arc<S>,
    metrics: Arc<Metrics>,
    /// `store.timeout`: the longest any caller waits for one store operation.
    timeout: Duration,
}

impl<S: ?Sized + Send + Sync> Instrumented<S> {
    pub fn new(inner: Arc<S>, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        for op in OPS {
            metrics.store_latency.with_label_values(&[op]);
            for result in ["ok", "error"] {
                metrics.store_operations.with_label_values(&[op, result]);
            }
        }
        Instrumented {
            inner,
            metrics,
            timeout,
        }
    }

    async fn observe<T>(
        &self,
        op: &'static str,
        kind: Kind,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(timeout_message(
                op,
                kind,
                self.timeout,
            ))),
        };
        self.metrics
            .store_latency
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .store_operations
            .with_label_values(&[op, label])
            .inc();
        // A conflict or a damaged record is an answer from a reachable store, not an
        // outage: only `Unavailable` (unreachable, failing IO, timed out) marks it down.
        let up = !matches!(result, Err(StoreError::Unavailable(_)));
        self.metrics.store_up.set(i64::from(up));
        result
    }
}

fn timeout_message(op: &str, kind: Kind, timeout: Duration) -> String {
    let mut msg = format!(
        "{op} timed out after {}",
        humantime::format_duration(timeout)
    );
    if kind == Kind::Write {
        msg.push_str(" (the write may still be applied)");
    }
    msg
}

#[async_trait]
impl<S: KeyStore + ?Sized> KeyStore for Instrumented<S> {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.observe("key_by_hash", Kind::Read, self.inner.key_by_hash(hash))
            .await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.observe("key_by_id", Kind::Read, self.inner.key_by_id(id))
            .await
    }

    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        self.observe(
            "list_keys",
            Kind::Read,
            self.inner.list_keys(org, after, limit),
        )
        .await
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        self.observe(
            "create_key",
            Kind::Write,
            self.inner.create_key(key, idempotency_key),
        )
        .await
    }

    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError> {
        self.observe(
            "update_key",
            Kind::Write,
            self.inner.update_key(key, expected),
        )
        .await
    }

    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.observe(
            "keys_created_by",
            Kind::Read,
            self.inner.keys_created_by(principal_id),
        )
        .await
    }

    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        self.observe("create_org", Kind::Write, self.inner.create_org(org))
            .await
    }

    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError> {
        self.observe(
            "update_org",
            Kind::Write,
            self.inner.update_org(org, expected),
        )
        .await
    }

    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        self.observe("get_org", Kind::Read, self.inner.get_org(id))
            .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.observe("list_orgs", Kind::Read, self.inner.list_orgs())
            .await
    }

    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError> {
        self.observe(
            "create_first_principal",
            Kind::Write,
            self.inner.create_first_principal(principal),
        )
        .await
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        self.observe(
            "create_principal",
            Kind::Write,
            self.inner.create_principal(principal),
        )
        .await
    }

    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError> {
        self.observe(
            "update_principal",
            Kind::Write,
            self.inner.update_principal(principal, expected),
        )
        .await
    }

    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        self.observe("get_principal", Kind::Read, self.inner.get_principal(id))
            .await
    }

    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        self.observe(
            "principal_by_token",
            Kind::Read,
            self.inner.principal_by_token(hash),
        )
        .await
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        self.observe("list_principals", Kind::Read, self.inner.list_principals())
            .await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.observe("append_audit", Kind::Write, self.inner.append_audit(event))
            .await
    }

    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.observe(
            "list_audit",
            Kind::Read,
            self.inner.list_audit(org, after, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.observe("ping", Kind::Read, self.inner.ping()).await
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.observe("add_usage", Kind::Write, self.inner.add_usage(batch))
            .await
    }

    async fn usage(
        &self,
        key_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.observe("usage", Kind::Read, self.inner.usage(key_id, from, to))
            .await
    }

    async fn prune_usage(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.observe("prune_usage", Kind::Write, self.inner.prune_usage(before))
            .await
    }

    async fn touch_keys(&self, seen: &[(String, Timestamp)]) -> Result<(), StoreError> {
        self.observe("touch_keys", Kind::Write, self.inner.touch_keys(seen))
            .await
    }
}

#[async_trait]
impl<S: WindowStore + ?Sized> WindowStore for Instrumented<S> {
    async fn lease_windows(
        &self,
        windows: &[(String, u64, i64, u64)],
    ) -> Result<(bool, Vec<(u64, u64)>), StoreError> {
        self.observe(
            "lease_windows",
            Kind::Write,
            self.inner.lease_windows(windows),
        )
        .await
    }

    async fn refund_window(&self, name: &str, tokens: u64) -> Result<u64, StoreError> {
        self.observe(
            "refund_window",
            Kind::Write,
            self.inner.refund_window(name, tokens),
        )
        .await
    }

    async fn peek_windows(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        self.observe("peek_windows", Kind::Read, self.inner.peek_windows(names))
            .await
    }
}

#[async_trait]
impl<S: QuotaStore + ?Sized> QuotaStore for Instrumented<S> {
    async fn save_quotas(&self, counts: Vec<QuotaCount>) -> Result<(), StoreError> {
        self.observe("save_quotas", Kind::Write, self.inner.save_quotas(counts))
            .await
    }

    async fn load_quotas(&self, since: Timestamp) -> Result<Vec<QuotaCount>, StoreError> {
        self.observe("load_quotas", Kind::Write, self.inner.load_quotas(since))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `ping` and `key_by_hash` after `delay`; every write is a conflict.
    struct Fake {
        delay: Duration,
    }

    fn conflict<T>() -> Result<T, StoreError> {
        Err(StoreError::Conflict("fake".to_string()))
    }

    #[async_trait]
    impl KeyStore for Fake {
        async fn key_by_hash(&self, _: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
            tokio::time::sleep(self.delay).await;
            Ok(None)
        }
        async fn key_by_id(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
            Ok(None)
        }
        async fn list_keys(
            &self,
            _: &str,
            _: Option<&str>,
            _: usize,
        ) -> Result<Page<KeyRecord>, StoreError> {
            conflict()
        }
        async fn create_key(
            &self,
            _: &KeyRecord,
            _: Option<&str>,
        ) -> Result<CreateOutcome, StoreError> {
            conflict()
        }
        async fn update_key(&self, _: &KeyRecord, _: u64) -> Result<(), StoreError> {
            conflict()
        }
        async fn keys_created_by(&self, _: &str) -> Result<Vec<KeyRecord>, StoreError> {
            conflict()
        }
        async fn create_org(&self, _: &Org) -> Result<(), StoreError> {
            tokio::time::sleep(self.delay).await;
            conflict()
        }
        async fn update_org(&self, _: &Org, _: u64) -> Result<(), StoreError> {
            conflict()
        }
        async fn get_org(&self, _: &str) -> Result<Option<Org>, StoreError> {
            conflict()
        }
        async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
            conflict()
        }
        async fn create_first_principal(&self, _: &Principal) -> Result<bool, StoreError> {
            conflict()
        }
        async fn create_principal(&self, _: &Principal) -> Result<(), StoreError> {
            conflict()
        }
        async fn update_principal(&self, _: &Principal, _: u64) -> Result<(), StoreError> {
            conflict()
        }
        async fn get_principal(&self, _: &str) -> Result<Option<Principal>, StoreError> {
            conflict()
        }
        async fn principal_by_token(&self, _: &KeyHash) -> Result<Option<Principal>, StoreError> {
            conflict()
        }
        async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
            conflict()
        }
        async fn append_audit(&self, _: &AuditEvent) -> Result<(), StoreError> {
            conflict()
        }
        async fn list_audit(
            &self,
            _: &str,
            _: Option<&str>,
            _: usize,
        ) -> Result<Page<AuditEvent>, StoreError> {
            conflict()
        }
        async fn ping(&self) -> Result<(), StoreError> {
            tokio::time::sleep(self.delay).await;
            Ok(())
        }
    }

    fn instrumented(delay: Duration) -> (Arc<Metrics>, Instrumented<Fake>) {
        let metrics = Arc::new(Metrics::new());
        let store = Instrumented::new(
            Arc::new(Fake { delay }),
            Arc::clone(&metrics),
            Duration::from_millis(50),
        );
        (metrics, store)
    }

    fn count(m: &Metrics, op: &str, result: &str) -> u64 {
        m.store_operations.with_label_values(&[op, result]).get()
    }

    #[tokio::test]
    async fn a_slow_store_times_out_as_unavailable_and_marks_it_down() {
        let (m, s) = instrumented(Duration::from_secs(5));
        m.store_up.set(1);
        let started = Instant::now();
        let err = s.ping().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            err.to_string().contains("ping timed out after 50ms"),
            "{err}"
        );
        assert_eq!(m.store_up.get(), 0);
        assert_eq!(count(&m, "ping", "error"), 1);
        assert_eq!(count(&m, "ping", "ok"), 0);

        let now = jiff::Timestamp::now();
        let org = Org {
            id: "acme".to_string(),
            name: "Acme".to_string(),
            key_policy: Default::default(),
            max_key_lifetime_days: None,
            rate_limit: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let err = s.create_org(&org).await.unwrap_err();
        assert!(err.to_string().contains("may still be applied"), "{err}");
    }

    #[tokio::test]
    async fn answers_mark_the_store_up_and_are_counted() {
        let (m, s) = instrumented(Duration::ZERO);
        s.ping().await.unwrap();
        assert_eq!(m.store_up.get(), 1);
        assert_eq!(s.key_by_hash(&KeyHash::of("x")).await.unwrap(), None);
        assert_eq!(count(&m, "key_by_hash", "ok"), 1);

        // A conflict is an answer, not an outage.
        let err = s.get_org("acme").await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        assert_eq!(m.store_up.get(), 1);
        assert_eq!(count(&m, "get_org", "error"), 1);

        let text = m.render();
        assert!(text.contains(r#"keygate_store_operations_total{op="ping",result="ok"} 1"#));
        assert!(text.contains(r#"keygate_store_latency_seconds_count{op="ping"} 1"#));
        // Every op has its series from the start.
        assert!(
            text.contains(r#"keygate_store_operations_total{op="list_audit",result="error"} 0"#)
        );
    }
}
