//! Who is calling the admin API and what they may do.
//!
//! An admin token (`kga_` + 34 random base62 characters + a 6-character base62 CRC-32,
//! the same construction as API keys) is checked offline, hashed, and looked up with
//! `principal_by_token` on every request, so that disabling, deleting or rotating a
//! principal takes effect at once. API keys are refused here with 401.
//!
//! [`allows`] is the whole role table; [`Caller::authorize`] adds the org check. An
//! org the caller cannot see is 403 whether it exists or not, so its existence does
//! not leak. This module never logs a token or a hash.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;

use super::AdminContext;
use super::error::AdminError;
use crate::key::{
    ADMIN_TOKEN_PREFIX, BODY_LEN, CHECKSUM_LEN, KeyHash, OrgScope, Principal, RANDOM_LEN, Role,
    checksum_chars,
};

/// A new admin token. Shown once (create, rotate, bootstrap file), then dropped.
pub struct AdminToken {
    pub token: String,
    pub hash: KeyHash,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    pub fn generate() -> Self {
        // OsRng failing means the OS has no entropy source: nothing safe can continue.
        let mut rng = OsRng.unwrap_err();
        let random: String = Alphanumeric
            .sample_iter(&mut rng)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        let mut token = format!("{ADMIN_TOKEN_PREFIX}_{random}");
        token.push_str(&checksum_chars(crc32fast::hash(token.as_bytes())));
        let hash = KeyHash::of(&token);
        AdminToken { token, hash }
    }
}

/// Shape and checksum of an admin token, without touching the store.
pub fn is_admin_token(token: &str) -> bool {
    let Some(body) = token
        .strip_prefix(ADMIN_TOKEN_PREFIX)
        .and_then(|r| r.strip_prefix('_'))
    else {
        return false;
    };
    if body.len() != BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (signed, given) = token.split_at(token.len() - CHECKSUM_LEN);
    given == checksum_chars(crc32fast::hash(signed.as_bytes()))
}

/// Something a principal may or may not do, whatever the org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Orgs, keys: any role.
    Read,
    /// Create, edit, regenerate keys.
    WriteKeys,
    /// Revoke and delete keys.
    RevokeKeys,
    ReadAudit,
    /// Create, list, edit, delete principals (admins: managers and viewers only).
    ManagePrincipals,
    /// Create and edit orgs.
    ManageOrgs,
    /// `POST /v1/verify`: every role, and the only thing a verifier may do.
    Verify,
}

/// The role table of SPEC §5. Owners may do all that admins may.
pub fn allows(p: &Principal, action: Action) -> bool {
    match action {
        Action::Read => p.role != Role::Verifier,
        Action::Verify => true,
        Action::WriteKeys => match p.role {
            Role::Owner | Role::Admin => true,
            Role::Manager => p.api_access,
            Role::Viewer | Role::Verifier => false,
        },
        Action::RevokeKeys | Action::ReadAudit | Action::ManagePrincipals => {
            matches!(p.role, Role::Owner | Role::Admin)
        }
        Action::ManageOrgs => p.role == Role::Owner,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Manager => "manager",
        Role::Viewer => "viewer",
        Role::Verifier => "verifier",
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Verify => "verify keys",
        Action::WriteKeys => "create or edit keys",
        Action::RevokeKeys => "revoke or delete keys",
        Action::ReadAudit => "read the audit log",
        Action::ManagePrincipals => "manage principals",
        Action::ManageOrgs => "create or edit orgs",
    }
}

/// The authenticated principal of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }

    pub fn sees_org(&self, org: &str) -> bool {
        self.0.orgs.contains(org)
    }

    /// 403 unless the caller's orgs include `org` (when given) and its role allows `action`.
    pub fn authorize(&self, action: Action, org: Option<&str>) -> Result<(), AdminError> {
        if let Some(org) = org
            && !self.sees_org(org)
        {
            return Err(AdminError::forbidden(format!("no access to org `{org}`")));
        }
        if allows(&self.0, action) {
            return Ok(());
        }
        let why = if self.0.role == Role::Manager && action == Action::WriteKeys {
            "a manager without api_access may not create or edit keys".to_string()
        } else {
            format!(
                "role {} may not {}",
                role_name(self.0.role),
                action_name(action)
            )
        };
        Err(AdminError::forbidden(why))
    }

    /// Whether the caller holds every org of `orgs` (an owner holds all).
    pub fn holds_orgs(&self, orgs: &OrgScope) -> bool {
        match (&self.0.orgs, orgs) {
            (OrgScope::All, _) => true,
            (OrgScope::List(_), OrgScope::All) => false,
            (OrgScope::List(_), OrgScope::List(l)) => l.iter().all(|o| self.sees_org(o)),
        }
    }
}

impl FromRequestParts<Arc<AdminContext>> for Caller {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &Arc<AdminContext>,
    ) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let value = values.next().ok_or(AdminError::MissingToken)?;
        if values.next().is_some() {
            return Err(AdminError::InvalidToken(
                "several Authorization headers".into(),
            ));
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                AdminError::InvalidToken("expected Authorization: Bearer kga_…".into())
            })?;
        if !is_admin_token(token) {
            let why = if ctx.key_format.check(token).is_ok() {
                "this is an API key; the admin port takes admin tokens (kga_…)"
            } else {
                "not a valid admin token"
            };
            return Err(AdminError::InvalidToken(why.into()));
        }
        let hash = KeyHash::of(token);
        let principal = ctx
            .store
            .principal_by_token(&hash)
            .await?
            .filter(|p| p.token_hash == hash && p.deleted_at.is_none())
            .ok_or_else(|| AdminError::InvalidToken("unknown admin token".into()))?;
        if principal.disabled {
            return Err(AdminError::InvalidToken(
                "the principal of this token is disabled".into(),
            ));
        }
        Ok(Caller(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, api_access: bool) -> Principal {
        Principal {
            id: "prn_x".into(),
            name: "x".into(),
            role,
            orgs: OrgScope::List(vec!["a".into()]),
            api_access,
            disabled: false,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            deleted_at: None,
            token_hash: KeyHash([0; 32]),
            version: 1,
        }
    }

    #[test]
    fn admin_tokens_have_their_shape_and_check() {
        let t = AdminToken::generate();
        assert!(t.token.starts_with("kga_"));
        assert_eq!(t.token.len(), 4 + BODY_LEN);
        assert!(is_admin_token(&t.token));
        assert_eq!(t.hash, KeyHash::of(&t.token));
        assert!(!format!("{t:?}").contains(&t.token));
        let mut altered = t.token.clone().into_bytes();
        altered[5] = if altered[5] == b'a' { b'b' } else { b'a' };
        assert!(!is_admin_token(&String::from_utf8(altered).unwrap()));
        assert!(!is_admin_token(&t.token[1..]));
        assert!(!is_admin_token(&format!("{}x", t.token)));
        assert!(!is_admin_token("kga_"));
        assert!(!is_admin_token(""));
    }

    /// The role table, row by row.
    #[test]
    fn role_table() {
        use Action::*;
        let rows: [(Role, bool, [bool; 6]); 6] = [
            // role, api_access: Read, WriteKeys, RevokeKeys, ReadAudit, ManagePrincipals, ManageOrgs
            (Role::Owner, false, [true, true, true, true, true, true]),
            (Role::Admin, false, [true, true, true, true, true, false]),
            (
                Role::Manager,
                true,
                [true, true, false, false, false, false],
            ),
            (
                Role::Manager,
                false,
                [true, false, false, false, false, false],
            ),
            (
                Role::Viewer,
                true,
                [true, false, false, false, false, false],
            ),
            (
                Role::Viewer,
                false,
                [true, false, false, false, false, false],
            ),
        ];
        let actions = [
            Read,
            WriteKeys,
            RevokeKeys,
            ReadAudit,
            ManagePrincipals,
            ManageOrgs,
        ];
        for (role, api, expected) in rows {
            let p = principal(role, api);
            for (action, want) in actions.iter().zip(expected) {
                assert_eq!(allows(&p, *action), want, "{role:?} api={api} {action:?}");
            }
        }
    }

    #[test]
    fn org_checks_come_first() {
        let c = Caller(principal(Role::Admin, false));
        assert!(c.authorize(Action::RevokeKeys, Some("a")).is_ok());
        let e = c.authorize(Action::Read, Some("b")).unwrap_err();
        assert_eq!(e, AdminError::forbidden("no access to org `b`"));
        assert!(c.holds_orgs(&OrgScope::List(vec!["a".into()])));
        assert!(!c.holds_orgs(&OrgScope::List(vec!["a".into(), "b".into()])));
        assert!(!c.holds_orgs(&OrgScope::All));
    }
}
