//! `key_policy: creator` (SPEC §1): in an org with that policy, a key is suspended while
//! the principal who created it is disabled, and for good once that principal is deleted.
//!
//! The suspension is derived, never written into keys: the data plane's lookup
//! (`KeyStore::key_by_hash`) reads the org's policy and the creator's state in the same
//! atomic read as the key, and admin views derive it with [`suspends`]. So it cannot fall
//! between two writes, and a key created while its creator is being disabled is
//! suspended like the others. A principal change (disable, enable, delete) or a
//! `key_policy` change invalidates cached keys by creator or org id
//! (`write::Versioned::invalidations`), on every replica, without iterating over keys.

use crate::key::{KeyPolicy, Principal};

/// Whether a key is suspended under `policy` with this creator (`None`: not found, which
/// counts as deleted).
pub fn suspends(policy: KeyPolicy, creator: Option<&Principal>) -> bool {
    policy == KeyPolicy::Creator && creator.is_none_or(Principal::is_away)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

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
            version: 1,
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
