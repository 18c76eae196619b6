//! Domain types shared by every part of keygate: API-key tokens and their format,
//! the stored key record, orgs, admin principals and audit events.
//!
//! This module owns the token format of SPEC §1 (`<prefix>_<env>_<body>`, 34 random
//! base62 characters plus a 6-character base62 CRC-32), so that the data plane can
//! refuse a malformed token offline, without touching the store.
//!
//! It must never log, print or serialize a raw token: [`NewSecret`] is the only type
//! that holds one, and it exists only between generation and the create/regenerate
//! response. Stored records hold [`KeyHash`] only.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use jiff::Timestamp;
use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Characters of randomness in a token body (34 × log2(62) ≈ 202 bits).
pub const RANDOM_LEN: usize = 34;
/// Characters of base62 CRC-32 at the end of a token body.
pub const CHECKSUM_LEN: usize = 6;
/// Body length: random part plus checksum.
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// How many body characters the display prefix shows (`mtf_live_3vQ8`).
pub const DISPLAY_BODY_CHARS: usize = 4;

/// Whether a key reaches an upstream's live `url` or its `test_url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SHA-256 of a token: the only form in which a secret is stored or looked up.
///
/// `Debug` is redacted so that a hash never reaches a log line by accident.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest);
        KeyHash(out)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(KeyHash(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Self::from_slice(&v)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

impl Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex hash"))
    }
}

/// Why a presented token was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token does not have the shape <prefix>_<live|test>_<40 base62 characters>")]
    Shape,
    #[error("the token's checksum does not match")]
    Checksum,
}

/// A freshly generated secret. Returned exactly once to the admin who asked for it.
pub struct NewSecret {
    /// The full token; shown once, then dropped.
    pub token: String,
    /// What may be displayed and stored: prefix, env and the first body characters.
    pub display_prefix: String,
    /// What is stored and looked up.
    pub hash: KeyHash,
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret")
            .field("display_prefix", &self.display_prefix)
            .finish_non_exhaustive()
    }
}

/// The deployment's token format (`keys.prefix`).
#[derive(Debug, Clone)]
pub struct KeyFormat {
    prefix: String,
}

/// Why a `keys.prefix` value is not usable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a key prefix is 1 to 16 lowercase letters and digits, got {0:?}")]
pub struct BadPrefix(pub String);

impl KeyFormat {
    pub fn new(prefix: &str) -> Result<Self, BadPrefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 16
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(KeyFormat {
                prefix: prefix.to_string(),
            })
        } else {
            Err(BadPrefix(prefix.to_string()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks shape and checksum of a presented token without allocating.
    pub fn check(&self, token: &str) -> Result<Environment, TokenError> {
        let rest = token
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(TokenError::Shape)?;
        let (env, body) = if let Some(b) = rest.strip_prefix("live_") {
            (Environment::Live, b)
        } else if let Some(b) = rest.strip_prefix("test_") {
            (Environment::Test, b)
        } else {
            return Err(TokenError::Shape);
        };
        if body.len() != BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Shape);
        }
        let signed = &token[..token.len() - CHECKSUM_LEN];
        let given = base62::decode(&token[token.len() - CHECKSUM_LEN..])
            .map_err(|_| TokenError::Checksum)?;
        if given != u128::from(crc32fast::hash(signed.as_bytes())) {
            return Err(TokenError::Checksum);
        }
        Ok(env)
    }

    /// Makes a new token from the OS CSPRNG.
    pub fn generate(&self, env: Environment) -> NewSecret {
        // OsRng failing means the OS has no entropy source: nothing safe can continue.
        let mut rng = OsRng.unwrap_err();
        let random: String = Alphanumeric
            .sample_iter(&mut rng)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        let mut token = format!("{}_{}_{}", self.prefix, env.as_str(), random);
        let crc = crc32fast::hash(token.as_bytes());
        token.push_str(&checksum_chars(crc));
        let display_prefix = display_prefix(&token);
        let hash = KeyHash::of(&token);
        NewSecret {
            token,
            display_prefix,
            hash,
        }
    }
}

/// Base62 (`0-9A-Za-z`) of a CRC-32, most significant first, zero-padded to 6.
pub fn checksum_chars(crc: u32) -> String {
    format!("{:0>width$}", base62::encode(crc), width = CHECKSUM_LEN)
}

/// `mtf_live_3vQ8` from a well-formed token: everything up to the body plus 4 characters.
pub fn display_prefix(token: &str) -> String {
    let body_start = token.len() - BODY_LEN;
    token[..body_start + DISPLAY_BODY_CHARS].to_string()
}

/// Per-window request limits. `None` in a window means "not set here".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<u64>,
}

/// A key's previous secret during a regenerate grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub hash: KeyHash,
    /// The old secret is refused from this instant on.
    pub expires_at: Timestamp,
}

/// Key status as shown to admins and enforced on the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
    Suspended,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Suspended => "suspended",
        }
    }
}

/// A stored API key. Holds hashes of its secrets, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Stable id (`key_<ulid>`); ULIDs sort by creation time, which gives newest-first lists.
    pub id: String,
    pub org: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub environment: Environment,
    /// Display prefix, e.g. `mtf_live_3vQ8`.
    pub prefix: String,
    pub scopes: Vec<String>,
    /// `None` = unrestricted; never `Some(empty)` (refused at the admin API).
    #[serde(default)]
    pub resources: Option<Vec<String>>,
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    #[serde(default)]
    pub ip_allow: Option<Vec<IpNet>>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    pub created_at: Timestamp,
    /// Principal id of the creator (for `key_policy: creator`).
    pub created_by: String,
    pub updated_at: Timestamp,
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Deleted keys stop working and leave listings and the admin API (404); the record
    /// stays as a tombstone so that its usage and audit stay readable.
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// Derived, never stored: under `key_policy: creator`, whether the creator is
    /// disabled or deleted, as read by the data-plane lookup (`KeyStore::key_by_hash`)
    /// in the same atomic read as the key. Other reads leave it false.
    #[serde(skip)]
    pub creator_suspended: bool,
    /// Incremented by every change (SPEC §1 "Writes are never undone"); stores write a
    /// record only over the version it was derived from. Records written before
    /// versions existed read as 0.
    #[serde(default)]
    pub version: u64,
    /// SHA-256 of the current secret.
    pub secret_hash: KeyHash,
    #[serde(default)]
    pub previous_secret: Option<PreviousSecret>,
}

impl KeyRecord {
    /// Status from the record alone (with `creator_suspended` as the lookup derived it).
    pub fn status_at(&self, now: Timestamp) -> KeyStatus {
        status(
            self.revoked_at.is_some(),
            self.expires_at,
            self.creator_suspended,
            now,
        )
    }

    /// Every hash under which this record may be found: current, and previous while in grace.
    pub fn hashes(&self) -> impl Iterator<Item = KeyHash> + '_ {
        std::iter::once(self.secret_hash).chain(self.previous_secret.as_ref().map(|p| p.hash))
    }

    /// What the data plane keeps of this record when it was found by `presented`; the
    /// values many keys repeat are taken from `shared`.
    pub fn into_view(self, presented: &KeyHash, shared: &Shared) -> KeyView {
        let secret = if *presented == self.secret_hash {
            Presented::Current
        } else {
            match self.previous_secret {
                Some(p) if p.hash == *presented => Presented::Previous {
                    refused_from: p.expires_at,
                },
                _ => Presented::Unknown,
            }
        };
        let restricted = self.resources.is_some()
            || self.endpoints.is_some()
            || self.ip_allow.is_some()
            || self.rate_limit.is_some();
        let restrictions = restricted.then(|| {
            Box::new(Restrictions {
                resources: self.resources.map(Vec::into_boxed_slice),
                endpoints: self.endpoints.map(Vec::into_boxed_slice),
                ip_allow: self.ip_allow.map(Vec::into_boxed_slice),
                rate_limit: self.rate_limit,
            })
        });
        KeyView {
            id: self.id.into_boxed_str(),
            org: shared.str(&self.org),
            name: self.name.into_boxed_str(),
            created_by: shared.str(&self.created_by),
            scopes: shared.scopes(&self.scopes),
            expires: self.expires_at.unwrap_or(Timestamp::MAX),
            version: self.version,
            restrictions,
            secret,
            environment: self.environment,
            revoked: self.revoked_at.is_some(),
            deleted: self.deleted_at.is_some(),
            creator_suspended: self.creator_suspended,
        }
    }
}

#[cfg(test)]
impl KeyRecord {
    /// A live, unrestricted `read` key (`key_1` of org `acme`, created by `prn_1`)
    /// whose current secret hashes to `secret`: the record unit tests start from.
    pub(crate) fn sample(secret: KeyHash) -> KeyRecord {
        let now = Timestamp::now();
        KeyRecord {
            id: "key_1".into(),
            org: "acme".into(),
            name: "k".into(),
            description: None,
            environment: Environment::Live,
            prefix: "kg_live_abcd".into(),
            scopes: vec!["read".into()],
            resources: None,
            endpoints: None,
            ip_allow: None,
            rate_limit: None,
            created_at: now,
            created_by: "prn_1".into(),
            updated_at: now,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            deleted_at: None,
            creator_suspended: false,
            version: 1,
            secret_hash: secret,
            previous_secret: None,
        }
    }
}

/// A key's status from its parts, the one rule for [`KeyRecord`] and [`KeyView`].
fn status(
    revoked: bool,
    expires_at: Option<Timestamp>,
    suspended: bool,
    now: Timestamp,
) -> KeyStatus {
    if revoked {
        KeyStatus::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        KeyStatus::Expired
    } else if suspended {
        KeyStatus::Suspended
    } else {
        KeyStatus::Active
    }
}

/// What the data plane keeps of a stored key, as found by one presented secret: the
/// fields its checks, identity headers, limits, logs and the verify API read, and
/// nothing else (no description, prefix, hashes or timestamps of its own), so that a
/// cache of a million keys stays small. Made by [`KeyRecord::into_view`]; never
/// changed in place (a changed key is a new view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    pub id: Box<str>,
    pub org: Arc<str>,
    pub name: Box<str>,
    /// Principal id of the creator, for invalidations by principal.
    pub created_by: Arc<str>,
    pub scopes: Arc<[String]>,
    /// When it expires, `Timestamp::MAX` for never (not an `Option`: 8 bytes less,
    /// which keeps the view in its `Arc` within a 160-byte allocation). Read it through
    /// [`KeyView::expires_at`].
    expires: Timestamp,
    /// The record version it was made from.
    pub version: u64,
    /// Resource, endpoint, IP and rate-limit restrictions; `None` when it has none, as
    /// most keys do.
    restrictions: Option<Box<Restrictions>>,
    /// Which of the key's secrets was presented.
    secret: Presented,
    pub environment: Environment,
    revoked: bool,
    deleted: bool,
    creator_suspended: bool,
}

/// One shared copy of the values many keys repeat: org ids, creator ids and scope
/// lists, so that a cache of a million keys of a few orgs holds each once. Entries no
/// view uses any more are dropped whenever the set has doubled since the last sweep.
#[derive(Default)]
pub struct Shared {
    strs: Mutex<Interned<str>>,
    scopes: Mutex<Interned<[String]>>,
}

struct Interned<T: ?Sized> {
    set: HashSet<Arc<T>>,
    /// Size at which unused entries are next swept out.
    sweep_at: usize,
}

impl<T: ?Sized> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            set: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

/// Below this many entries a [`Shared`] set is never swept.
const MIN_SWEEP: usize = 1024;

impl<T: ?Sized + Eq + std::hash::Hash> Interned<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    fn get(&mut self, value: &T) -> Arc<T> {
        if let Some(v) = self.set.get(value) {
            return v.clone();
        }
        if self.set.len() >= self.sweep_at {
            self.set.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.set.len() * 2).max(MIN_SWEEP);
        }
        let v = Arc::from(value);
        self.set.insert(v.clone());
        v
    }
}

impl Shared {
    fn str(&self, s: &str) -> Arc<str> {
        // Interned values are immutable: a panic elsewhere cannot leave them unusable.
        self.strs.lock().unwrap_or_else(|p| p.into_inner()).get(s)
    }

    fn scopes(&self, scopes: &[String]) -> Arc<[String]> {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scopes)
    }

    /// Values held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let strs = self
            .strs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .len();
        strs + self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .len()
    }
}

/// The restrictions of a [`KeyView`]; each `None` = unrestricted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Restrictions {
    resources: Option<Box<[String]>>,
    endpoints: Option<Box<[String]>>,
    ip_allow: Option<Box<[IpNet]>>,
    rate_limit: Option<RateLimit>,
}

/// Which secret of a key the presented hash is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presented {
    Current,
    /// The previous secret, refused from this instant on.
    Previous {
        refused_from: Timestamp,
    },
    /// Neither (a store that returned a record for another hash): never accepted.
    Unknown,
}

impl KeyView {
    pub fn status_at(&self, now: Timestamp) -> KeyStatus {
        status(self.revoked, self.expires_at(), self.creator_suspended, now)
    }

    /// When the key expires, if it does.
    pub fn expires_at(&self) -> Option<Timestamp> {
        (self.expires != Timestamp::MAX).then_some(self.expires)
    }

    /// Deleted keys stay readable as tombstones but never authenticate.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// Whether the presented secret may still be used: the current one, or the
    /// previous one before its grace ends.
    pub fn secret_accepted(&self, now: Timestamp) -> bool {
        match self.secret {
            Presented::Current => true,
            Presented::Previous { refused_from } => now < refused_from,
            Presented::Unknown => false,
        }
    }

    pub fn resources(&self) -> Option<&[String]> {
        self.restrictions.as_ref()?.resources.as_deref()
    }

    pub fn endpoints(&self) -> Option<&[String]> {
        self.restrictions.as_ref()?.endpoints.as_deref()
    }

    pub fn ip_allow(&self) -> Option<&[IpNet]> {
        self.restrictions.as_ref()?.ip_allow.as_deref()
    }

    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.restrictions.as_ref()?.rate_limit.as_ref()
    }
}

/// How an org treats keys whose creating principal is disabled or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyPolicy {
    #[default]
    Org,
    Creator,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub key_policy: KeyPolicy,
    #[serde(default)]
    pub max_key_lifetime_days: Option<u32>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Incremented by every change; see [`KeyRecord::version`].
    #[serde(default)]
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only `POST /v1/verify` (SPEC §9).
    Verifier,
    Viewer,
    Manager,
    Admin,
    Owner,
}

/// Which orgs a principal may act on: `"*"` (owners) or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrgScope {
    All,
    List(Vec<String>),
}

impl OrgScope {
    pub fn contains(&self, org: &str) -> bool {
        match self {
            OrgScope::All => true,
            OrgScope::List(l) => l.iter().any(|o| o == org),
        }
    }
}

impl Serialize for OrgScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrgScope::All => s.serialize_str("*"),
            OrgScope::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OrgScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Star(s) if s == "*" => Ok(OrgScope::All),
            Raw::Star(s) => Err(serde::de::Error::custom(format!(
                "orgs is a list of org ids or \"*\", got {s:?}"
            ))),
            Raw::List(l) => Ok(OrgScope::List(l)),
        }
    }
}

/// An admin-API identity. Its token is stored hashed, like API keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `prn_<ulid>`.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub orgs: OrgScope,
    /// Managers may write keys only while this is true.
    #[serde(default)]
    pub api_access: bool,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: Timestamp,
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    pub token_hash: KeyHash,
    /// Incremented by every change; see [`KeyRecord::version`].
    #[serde(default)]
    pub version: u64,
}

impl Principal {
    /// Whether keys it created are suspended under `key_policy: creator`.
    pub fn is_away(&self) -> bool {
        self.disabled || self.deleted_at.is_some()
    }
}

/// Admin tokens: `kga_` + 40 base62 characters (random + checksum, like API keys).
pub const ADMIN_TOKEN_PREFIX: &str = "kga";

/// One admin action, kept for audit. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// `aud_<ulid>`: sorts by time.
    pub id: String,
    pub at: Timestamp,
    /// Principal id of who did it.
    pub actor: String,
    /// Org concerned, if any.
    #[serde(default)]
    pub org: Option<String>,
    /// e.g. `key.create`, `key.revoke`, `org.create`.
    pub action: String,
    /// Id of the thing acted on.
    #[serde(default)]
    pub target: Option<String>,
    /// Non-secret details (changed field names, grace seconds...).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// New time-sortable id with a type prefix, e.g. `key_01J…`.
///
/// Ids come from one monotonic generator, so that two ids made in the same millisecond
/// still sort in creation order (newest-first listings and cursors depend on it).
pub fn new_id(kind: &str) -> String {
    static IDS: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    let next = match IDS.lock().ok().and_then(|mut g| g.generate().ok()) {
        Some(id) => id,
        // Only on a poisoned lock or 2^80 ids in one millisecond: still unique, maybe
        // unordered. (`Ulid::default()` would be the nil id, hence no `unwrap_or_default`.)
        None => ulid::Ulid::new(),
    };
    format!("{kind}_{}", next.to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A million cached keys hold a million views: each in its `Arc` (16 bytes of
    /// counts) must fit mimalloc's 160-byte size class, not the 192-byte one.
    #[test]
    fn a_view_fits_its_allocation() {
        assert!(std::mem::size_of::<KeyView>() <= 160 - 16);
    }

    #[test]
    fn a_view_keeps_the_expiry_or_its_absence() {
        let now = Timestamp::now();
        let mut k = KeyRecord::sample(KeyHash::of("s"));
        k.expires_at = None;
        let never = k.clone().into_view(&KeyHash::of("s"), &Shared::default());
        assert_eq!(never.expires_at(), None);
        assert!(never.status_at(now) != KeyStatus::Expired);
        k.expires_at = Some(now);
        let expired = k.into_view(&KeyHash::of("s"), &Shared::default());
        assert_eq!(expired.expires_at(), Some(now));
        assert_eq!(expired.status_at(now), KeyStatus::Expired);
    }

    /// Keys of one org and creator share one copy of each repeated value, and a value
    /// no view holds any more is dropped at the next sweep.
    #[test]
    fn views_share_repeated_values() {
        let shared = Shared::default();
        let a = shared.str("org_a");
        let b = shared.str("org_a");
        assert!(Arc::ptr_eq(&a, &b));
        let read_write = ["read".to_string(), "write".to_string()];
        let s1 = shared.scopes(&read_write);
        let s2 = shared.scopes(&read_write);
        assert!(Arc::ptr_eq(&s1, &s2));
        assert_ne!(&*shared.scopes(&read_write[..1]), &*s1);
        assert_eq!(shared.len(), 3);
        // Fill past the first sweep with values nobody keeps: the sweep drops them
        // and keeps those still held.
        for i in 0..MIN_SWEEP {
            drop(shared.str(&format!("prn_{i}")));
        }
        assert!(shared.len() < 10, "swept: {}", shared.len());
        assert!(Arc::ptr_eq(&a, &shared.str("org_a")));
    }

    /// The view remembers which secret found it: the current one always passes, the
    /// previous one until its grace ends, any other never.
    #[test]
    fn a_view_knows_which_secret_found_it() {
        let now = Timestamp::now();
        let record = KeyRecord {
            description: Some("not kept".into()),
            version: 3,
            previous_secret: Some(PreviousSecret {
                hash: KeyHash::of("old"),
                expires_at: now + jiff::SignedDuration::from_secs(60),
            }),
            ..KeyRecord::sample(KeyHash::of("current"))
        };
        let shared = Shared::default();
        let view = |presented: &str| record.clone().into_view(&KeyHash::of(presented), &shared);
        let later = now + jiff::SignedDuration::from_secs(60);
        assert!(view("current").secret_accepted(later));
        assert!(view("old").secret_accepted(now));
        assert!(!view("old").secret_accepted(later));
        assert!(!view("other").secret_accepted(now));
        let v = view("current");
        assert_eq!((v.version, v.resources(), v.rate_limit()), (3, None, None));
        assert_eq!(v.status_at(now), KeyStatus::Active);
    }

    #[test]
    fn generated_tokens_check() {
        let f = KeyFormat::new("mtf").unwrap();
        for env in [Environment::Live, Environment::Test] {
            let s = f.generate(env);
            assert_eq!(f.check(&s.token), Ok(env));
            assert_eq!(s.token.len(), "mtf_live_".len() + BODY_LEN);
            assert!(s.token.starts_with(&s.display_prefix));
            assert_eq!(s.display_prefix.len(), "mtf_live_".len() + 4);
            assert_eq!(s.hash, KeyHash::of(&s.token));
        }
    }

    #[test]
    fn checksum_is_crc32_iso_hdlc_base62_padded() {
        // CRC-32/ISO-HDLC check value of "123456789" is 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(checksum_chars(0), "000000");
        assert_eq!(checksum_chars(61), "00000z");
        assert_eq!(checksum_chars(62), "000010");
        assert_eq!(checksum_chars(u32::MAX), "4gfFC3");
    }

    #[test]
    fn altered_tokens_fail() {
        let f = KeyFormat::new("kg").unwrap();
        let t = f.generate(Environment::Live).token;
        let mut bad = t.clone().into_bytes();
        let i = 12;
        bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(f.check(&bad), Err(TokenError::Checksum));
        assert_eq!(f.check(&t[1..]), Err(TokenError::Shape));
        assert_eq!(f.check(&format!("{t}x")), Err(TokenError::Shape));
        assert_eq!(
            f.check(&t.replace("kg_live_", "kg_prod_")),
            Err(TokenError::Shape)
        );
        assert_eq!(
            KeyFormat::new("mtf").unwrap().check(&t),
            Err(TokenError::Shape)
        );
        assert_eq!(f.check(""), Err(TokenError::Shape));
        assert_eq!(f.check("kg_live_ü"), Err(TokenError::Shape));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyFormat::new("mtf").is_ok());
        assert!(KeyFormat::new("ft2").is_ok());
        assert!(KeyFormat::new("").is_err());
        assert!(KeyFormat::new("MTF").is_err());
        assert!(KeyFormat::new("m_t").is_err());
    }

    #[test]
    fn hash_debug_is_redacted() {
        let h = KeyHash::of("secret");
        assert!(!format!("{h:?}").contains(&h.to_hex()));
    }
}

/// Properties of the token format: every generated token checks; any change of one
/// character, a cut or an extension is refused offline; `check` never panics and
/// accepts only the documented shape.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn one_changed_character_is_refused(
            prefix in "[a-z][a-z0-9]{0,5}",
            live in any::<bool>(),
            at in any::<prop::sample::Index>(),
            to in any::<prop::sample::Index>(),
        ) {
            let f = KeyFormat::new(&prefix).unwrap();
            let env = if live { Environment::Live } else { Environment::Test };
            let token = f.generate(env).token;
            prop_assert_eq!(f.check(&token), Ok(env));
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            let c = ALPHABET[to.index(ALPHABET.len())];
            prop_assume!(bytes[i] != c);
            bytes[i] = c;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(f.check(&changed).is_err(), "{} accepted", changed);
            prop_assert!(f.check(&token[..token.len() - 1]).is_err());
            let longer = format!("{token}0");
            prop_assert!(f.check(&longer).is_err());
        }

        #[test]
        fn check_accepts_only_the_shape(token in "\\PC{0,60}|kg_(live|test)_[0-9A-Za-z]{40}") {
            let f = KeyFormat::new("kg").unwrap();
            if f.check(&token).is_ok() {
                let body = token
                    .strip_prefix("kg_live_")
                    .or_else(|| token.strip_prefix("kg_test_"));
                prop_assert!(body.is_some_and(|b| b.len() == 40
                    && b.bytes().all(|c| c.is_ascii_alphanumeric())));
            }
        }
    }
}
