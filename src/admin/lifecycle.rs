//! The key lifecycle of SPEC §1 as pure functions: what a change does to a key record,
//! given the record as stored now, the validated request and the time. No IO: the one
//! write path ([`super::write`]) loads the record, calls [`apply`], and stores the
//! result only over the version it was derived from, calling [`apply`] again on the
//! newer record when another change got there first.
//!
//! Rules: a deleted key is gone (404 for every change); revoked and expired keys are
//! final (409 for edit and regenerate); revoke is permanent and idempotent and ends any
//! regenerate grace; regenerate keeps at most one previous secret. Creator suspension
//! (`key_policy: creator`) is not a stored transition: it is derived from the creator's
//! state when a key is read (`KeyStore::key_by_hash`, `keys::effective_status`).

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::error::AdminError;
use super::orgs::patch_rate_limit;
use crate::key::{KeyHash, KeyRecord, KeyStatus, PreviousSecret};

/// A validated edit (JSON Merge Patch): `None` leaves a field as it is; for nullable
/// fields `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edit {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    pub resources: Option<Option<Vec<String>>>,
    pub endpoints: Option<Option<Vec<String>>>,
    pub ip_allow: Option<Option<Vec<IpNet>>>,
    /// `Some(Value::Null)` removes the key's limits; an object is merged into the
    /// stored ones (RFC 7396), so it applies to the record as stored when it lands.
    pub rate_limit: Option<Value>,
    pub expires_at: Option<Option<Timestamp>>,
}

/// One change to a key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    Edit(Edit),
    /// A new secret; the current one stays valid for `grace_seconds` (0: stops now).
    Regenerate {
        secret_hash: KeyHash,
        display_prefix: String,
        grace_seconds: u64,
    },
    Revoke,
    Delete,
}

/// The key as `change` leaves it at `now` (its version is set by the write path),
/// `None` when there is nothing to store (an edit to the same values, a repeated
/// revoke), or why the change no longer applies.
pub fn apply(
    key: &KeyRecord,
    change: &KeyChange,
    now: Timestamp,
) -> Result<Option<KeyRecord>, AdminError> {
    if key.deleted_at.is_some() {
        return Err(gone(key));
    }
    let mut next = key.clone();
    match change {
        KeyChange::Edit(edit) => {
            require_editable(key, now)?;
            apply_edit(&mut next, edit)?;
        }
        KeyChange::Regenerate {
            secret_hash,
            display_prefix,
            grace_seconds,
        } => {
            require_editable(key, now)?;
            next.previous_secret = (*grace_seconds > 0).then(|| PreviousSecret {
                hash: key.secret_hash,
                // grace ≤ 7 days (validated), so neither step can overflow.
                expires_at: now
                    .checked_add(SignedDuration::from_secs(
                        i64::try_from(*grace_seconds).unwrap_or(0),
                    ))
                    .unwrap_or(now),
            });
            next.secret_hash = *secret_hash;
            next.prefix = display_prefix.clone();
        }
        KeyChange::Revoke => {
            next.revoked_at.get_or_insert(now);
            next.previous_secret = None;
        }
        KeyChange::Delete => {
            next.deleted_at = Some(now);
            next.previous_secret = None;
        }
    }
    if next == *key {
        return Ok(None);
    }
    next.updated_at = now;
    Ok(Some(next))
}

fn apply_edit(key: &mut KeyRecord, edit: &Edit) -> Result<(), AdminError> {
    if let Some(name) = &edit.name {
        key.name = name.clone();
    }
    if let Some(description) = &edit.description {
        key.description = description.clone();
    }
    if let Some(scopes) = &edit.scopes {
        key.scopes = scopes.clone();
    }
    if let Some(resources) = &edit.resources {
        key.resources = resources.clone();
    }
    if let Some(endpoints) = &edit.endpoints {
        key.endpoints = endpoints.clone();
    }
    if let Some(ip_allow) = &edit.ip_allow {
        key.ip_allow = ip_allow.clone();
    }
    match &edit.rate_limit {
        None => {}
        Some(Value::Null) => key.rate_limit = None,
        Some(patch) => key.rate_limit = patch_rate_limit(key.rate_limit.as_ref(), patch)?,
    }
    if let Some(expires_at) = edit.expires_at {
        key.expires_at = expires_at;
    }
    Ok(())
}

/// 404: a deleted key is gone for the admin API (its usage and audit stay readable).
pub fn gone(key: &KeyRecord) -> AdminError {
    AdminError::not_found(format!("no key `{}` in org `{}`", key.id, key.org))
}

/// 409 unless the key may still change: revoked and expired keys are final.
fn require_editable(key: &KeyRecord, now: Timestamp) -> Result<(), AdminError> {
    match key.status_at(now) {
        status @ (KeyStatus::Revoked | KeyStatus::Expired) => Err(AdminError::Conflict {
            code: "key_not_editable",
            message: format!(
                "key `{}` is {}: revoked and expired keys cannot change",
                key.id,
                status.as_str()
            ),
        }),
        KeyStatus::Active | KeyStatus::Suspended => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::key::RateLimit;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-01-10T12:00:00Z";

    fn key() -> KeyRecord {
        KeyRecord {
            prefix: "kg_live_aaaa".into(),
            rate_limit: Some(RateLimit {
                per_minute: Some(10),
                ..RateLimit::default()
            }),
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
            version: 4,
            ..KeyRecord::sample(KeyHash([1; 32]))
        }
    }

    fn revoked() -> KeyRecord {
        KeyRecord {
            revoked_at: Some(t("2026-01-05T00:00:00Z")),
            ..key()
        }
    }
    fn expired() -> KeyRecord {
        KeyRecord {
            expires_at: Some(t("2026-01-09T00:00:00Z")),
            ..key()
        }
    }
    fn deleted() -> KeyRecord {
        KeyRecord {
            deleted_at: Some(t("2026-01-05T00:00:00Z")),
            ..key()
        }
    }
    fn in_grace() -> KeyRecord {
        KeyRecord {
            secret_hash: KeyHash([2; 32]),
            previous_secret: Some(PreviousSecret {
                hash: KeyHash([1; 32]),
                expires_at: t("2026-01-11T00:00:00Z"),
            }),
            ..key()
        }
    }
    fn suspended() -> KeyRecord {
        KeyRecord {
            creator_suspended: true,
            ..key()
        }
    }

    fn rename(name: &str) -> KeyChange {
        KeyChange::Edit(Edit {
            name: Some(name.into()),
            ..Edit::default()
        })
    }

    fn regenerate(grace_seconds: u64) -> KeyChange {
        KeyChange::Regenerate {
            secret_hash: KeyHash([3; 32]),
            display_prefix: "kg_live_bbbb".into(),
            grace_seconds,
        }
    }

    /// What a row expects: an error code, no change, or a check of the new record.
    enum Want {
        Refused(u16, &'static str),
        Unchanged,
        Changed(fn(&KeyRecord) -> bool),
    }

    #[test]
    fn every_change_on_every_kind_of_key() {
        let now = t(NOW);
        let rows: Vec<(&str, KeyRecord, KeyChange, Want)> = vec![
            (
                "edit active",
                key(),
                rename("new"),
                Want::Changed(|k| k.name == "new"),
            ),
            ("edit to the same", key(), rename("k"), Want::Unchanged),
            (
                "edit suspended",
                suspended(),
                rename("new"),
                Want::Changed(|k| k.name == "new"),
            ),
            (
                "edit revoked",
                revoked(),
                rename("new"),
                Want::Refused(409, "key_not_editable"),
            ),
            (
                "edit expired",
                expired(),
                rename("new"),
                Want::Refused(409, "key_not_editable"),
            ),
            (
                "edit deleted",
                deleted(),
                rename("new"),
                Want::Refused(404, "not_found"),
            ),
            (
                "merge a rate limit into the stored one",
                key(),
                KeyChange::Edit(Edit {
                    rate_limit: Some(json!({ "per_hour": 100 })),
                    ..Edit::default()
                }),
                Want::Changed(|k| {
                    k.rate_limit
                        .as_ref()
                        .is_some_and(|r| r.per_minute == Some(10) && r.per_hour == Some(100))
                }),
            ),
            (
                "remove the rate limit",
                key(),
                KeyChange::Edit(Edit {
                    rate_limit: Some(Value::Null),
                    ..Edit::default()
                }),
                Want::Changed(|k| k.rate_limit.is_none()),
            ),
            (
                "regenerate without grace",
                key(),
                regenerate(0),
                Want::Changed(|k| {
                    k.secret_hash == KeyHash([3; 32])
                        && k.previous_secret.is_none()
                        && k.prefix == "kg_live_bbbb"
                }),
            ),
            (
                "regenerate with grace keeps the old secret",
                key(),
                regenerate(60),
                Want::Changed(|k| {
                    k.previous_secret.as_ref().is_some_and(|p| {
                        p.hash == KeyHash([1; 32])
                            && p.expires_at == "2026-01-10T12:01:00Z".parse().unwrap()
                    })
                }),
            ),
            (
                "regenerate in grace keeps one previous secret",
                in_grace(),
                regenerate(60),
                Want::Changed(|k| {
                    k.previous_secret
                        .as_ref()
                        .is_some_and(|p| p.hash == KeyHash([2; 32]))
                }),
            ),
            (
                "regenerate revoked",
                revoked(),
                regenerate(0),
                Want::Refused(409, "key_not_editable"),
            ),
            (
                "regenerate expired",
                expired(),
                regenerate(0),
                Want::Refused(409, "key_not_editable"),
            ),
            (
                "regenerate deleted",
                deleted(),
                regenerate(0),
                Want::Refused(404, "not_found"),
            ),
            (
                "revoke active",
                key(),
                KeyChange::Revoke,
                Want::Changed(|k| k.revoked_at == Some("2026-01-10T12:00:00Z".parse().unwrap())),
            ),
            (
                "revoke ends a grace",
                in_grace(),
                KeyChange::Revoke,
                Want::Changed(|k| k.revoked_at.is_some() && k.previous_secret.is_none()),
            ),
            (
                "revoke again",
                revoked(),
                KeyChange::Revoke,
                Want::Unchanged,
            ),
            (
                "revoke expired",
                expired(),
                KeyChange::Revoke,
                Want::Changed(|k| k.revoked_at.is_some()),
            ),
            (
                "revoke deleted",
                deleted(),
                KeyChange::Revoke,
                Want::Refused(404, "not_found"),
            ),
            (
                "delete active",
                in_grace(),
                KeyChange::Delete,
                Want::Changed(|k| k.deleted_at.is_some() && k.previous_secret.is_none()),
            ),
            (
                "delete revoked",
                revoked(),
                KeyChange::Delete,
                Want::Changed(|k| k.deleted_at.is_some()),
            ),
            (
                "delete again",
                deleted(),
                KeyChange::Delete,
                Want::Refused(404, "not_found"),
            ),
        ];
        for (name, before, change, want) in rows {
            let got = apply(&before, &change, now);
            match (want, got) {
                (Want::Refused(status, code), Err(e)) => {
                    assert_eq!((e.status().as_u16(), e.code()), (status, code), "{name}");
                }
                (Want::Unchanged, Ok(None)) => {}
                (Want::Changed(check), Ok(Some(after))) => {
                    assert!(check(&after), "{name}: {after:?}");
                    assert_eq!(after.updated_at, now, "{name}");
                    assert_eq!(
                        after.version, before.version,
                        "{name}: the write path sets it"
                    );
                    assert_eq!(after.id, before.id, "{name}");
                }
                (_, got) => panic!("{name}: got {got:?}"),
            }
        }
    }
}
