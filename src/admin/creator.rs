//! `key_policy: creator` (SPEC §1): in an org with that policy, a key is suspended while
//! the principal who created it is disabled, and for good once that principal is deleted.
//!
//! The suspension is written into each key (`suspended_at`), so that the data plane
//! decides from the key record alone and never looks a principal up per request. It is
//! recomputed whenever one of its inputs changes: a principal is disabled, enabled or
//! deleted, or an org's `key_policy` changes. Every key looked at is invalidated in the
//! resolver, so the change holds from the next request on.

use std::collections::HashMap;

use jiff::Timestamp;

use super::AdminContext;
use super::error::AdminError;
use crate::key::{KeyPolicy, KeyRecord, Org, Principal};

/// Bound on the pages walked through one org's keys (500 keys a page).
const MAX_PAGES: usize = 100_000;

/// Whether a key is suspended under `policy` with this creator (`None`: not found, which
/// counts as deleted).
pub fn suspends(policy: KeyPolicy, creator: Option<&Principal>) -> bool {
    policy == KeyPolicy::Creator && creator.is_none_or(|c| c.disabled || c.deleted_at.is_some())
}

/// Brings one key's `suspended_at` in line with `suspend`, then drops it from the cache.
/// Revoked and deleted keys are final and left as they are.
async fn sync_key(
    ctx: &AdminContext,
    key: &KeyRecord,
    suspend: bool,
    now: Timestamp,
) -> Result<(), AdminError> {
    let live = key.deleted_at.is_none() && key.revoked_at.is_none();
    if live && suspend != key.suspended_at.is_some() {
        let mut changed = key.clone();
        changed.suspended_at = suspend.then_some(now);
        changed.updated_at = now;
        ctx.store.update_key(&changed).await?;
    }
    ctx.resolver.invalidate_key(key).await;
    Ok(())
}

/// After `creator` was disabled, enabled or deleted: every key it created, in every org.
pub async fn sync_creator(
    ctx: &AdminContext,
    creator: &Principal,
    now: Timestamp,
) -> Result<(), AdminError> {
    let mut policies: HashMap<String, KeyPolicy> = HashMap::new();
    for key in ctx.store.keys_created_by(&creator.id).await? {
        let policy = match policies.get(&key.org) {
            Some(p) => *p,
            None => {
                let p = ctx
                    .store
                    .get_org(&key.org)
                    .await?
                    .map(|o| o.key_policy)
                    .unwrap_or_default();
                policies.insert(key.org.clone(), p);
                p
            }
        };
        sync_key(ctx, &key, suspends(policy, Some(creator)), now).await?;
    }
    Ok(())
}

/// After an org change: every key of the org, under its (possibly new) policy.
pub async fn sync_org(ctx: &AdminContext, org: &Org, now: Timestamp) -> Result<(), AdminError> {
    let mut creators: HashMap<String, Option<Principal>> = HashMap::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = ctx.store.list_keys(&org.id, after.as_deref(), 500).await?;
        for key in &page.items {
            if !creators.contains_key(&key.created_by) {
                let p = ctx.store.get_principal(&key.created_by).await?;
                creators.insert(key.created_by.clone(), p);
            }
            let creator = creators.get(&key.created_by).and_then(Option::as_ref);
            sync_key(ctx, key, suspends(org.key_policy, creator), now).await?;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(()),
        }
    }
    tracing::warn!(org = %org.id, "stopped syncing an org's keys after too many pages");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyHash, OrgScope, Role};

    fn principal(disabled: bool, deleted: bool) -> Principal {
        Principal {
            id: "prn_1".into(),
            name: "c".into(),
            role: Role::Manager,
            orgs: OrgScope::List(vec!["acme".into()]),
            api_access: true,
            disabled,
            created_at: Timestamp::UNIX_EPOCH,
            deleted_at: deleted.then_some(Timestamp::UNIX_EPOCH),
            token_hash: KeyHash([9; 32]),
        }
    }

    #[test]
    fn only_the_creator_policy_suspends_and_only_for_an_absent_creator() {
        let rows = [
            (KeyPolicy::Org, Some(principal(true, true)), false),
            (KeyPolicy::Org, None, false),
            (KeyPolicy::Creator, Some(principal(false, false)), false),
            (KeyPolicy::Creator, Some(principal(true, false)), true),
            (KeyPolicy::Creator, Some(principal(true, true)), true),
            (KeyPolicy::Creator, None, true),
        ];
        for (policy, creator, want) in rows {
            assert_eq!(
                suspends(policy, creator.as_ref()),
                want,
                "{policy:?} {creator:?}"
            );
        }
    }
}
