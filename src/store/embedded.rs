//! The embedded key store: everything in one redb file, for one gateway process
//! (`store.backend: embedded`).
//!
//! It owns the file layout (the tables below) and keeps every index in step with the
//! records it points at, inside the same write transaction. Every write commits with
//! immediate durability before it returns, so a key acknowledged to an admin survives a
//! crash or `kill -9`.
//!
//! It must never be opened by two processes at once (redb's file lock refuses the second
//! one with a clear error), never block an async worker (every redb call runs on
//! `spawn_blocking`), and never put a hash or a record's content in an error message.
//!
//! # Layout
//!
//! | table | key → value | why |
//! |---|---|---|
//! | `meta` | name → u64 | schema version, so a future layout change is detected |
//! | `keys` | key id → JSON `KeyRecord` | the records, deleted ones included |
//! | `key_hashes` | SHA-256 → key id | data-plane lookup, current and previous secret |
//! | `org_keys` | (org, key id) → () | listings; holds only keys that are not deleted |
//! | `creator_keys` | (principal, key id) → () | `key_policy: creator` |
//! | `idempotency` | (org, idempotency key) → key id | replayed creates |
//! | `orgs` | org id → JSON `Org` | |
//! | `principals` | principal id → JSON `Principal` | |
//! | `principal_tokens` | SHA-256 → principal id | admin-token lookup |
//! | `audit` | event id → JSON `AuditEvent` | every event, with or without an org |
//! | `org_audit` | (org, event id) → () | per-org audit listings |
//! | `usage` | (key id, hour) → JSON `UsageCounts` | usage per key and UTC hour (Unix seconds) |
//! | `usage_hours` | (hour, key id) → () | pruning usage older than 90 days |
//! | `usage_batches` | batch id → Unix seconds applied | applying a retried batch once |
//!
//! Ids are `<kind>_<lowercase ULID>`, so byte order is creation order and a reverse range
//! scan of an `(org, id)` index is a newest-first listing.

use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use jiff::Timestamp;

use super::usage::RESOURCES_PER_HOUR;
use super::{
    CreateOutcome, KeyStore, Page, QuotaCount, QuotaStore, StoreError, UsageBatch, UsageCounts,
    UsageRow,
};
use crate::key::{AuditEvent, KeyHash, KeyPolicy, KeyRecord, Org, Principal};

/// Bumped whenever the table layout or record encoding changes incompatibly.
const SCHEMA_VERSION: u64 = 1;
const SCHEMA_KEY: &str = "schema_version";
/// redb's page cache. Its 1 GiB default is far more than a gateway needs: hot keys are
/// served from the resolver's cache, and the OS caches the file too.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const KEY_HASHES: TableDefinition<&[u8; 32], &str> = TableDefinition::new("key_hashes");
const ORG_KEYS: TableDefinition<(&str, &str), ()> = TableDefinition::new("org_keys");
const CREATOR_KEYS: TableDefinition<(&str, &str), ()> = TableDefinition::new("creator_keys");
const IDEMPOTENCY: TableDefinition<(&str, &str), &str> = TableDefinition::new("idempotency");
const ORGS: TableDefinition<&str, &[u8]> = TableDefinition::new("orgs");
const PRINCIPALS: TableDefinition<&str, &[u8]> = TableDefinition::new("principals");
const PRINCIPAL_TOKENS: TableDefinition<&[u8; 32], &str> = TableDefinition::new("principal_tokens");
const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
const ORG_AUDIT: TableDefinition<(&str, &str), ()> = TableDefinition::new("org_audit");
const USAGE: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("usage");
const USAGE_HOURS: TableDefinition<(i64, &str), ()> = TableDefinition::new("usage_hours");
const USAGE_BATCHES: TableDefinition<&str, i64> = TableDefinition::new("usage_batches");
/// `<owner>|<window>` → (window start, requests counted): quota counters of the limiter.
const QUOTAS: TableDefinition<&str, (i64, u64)> = TableDefinition::new("quotas");
/// How long a usage batch id is remembered (a retry comes within seconds or minutes).
const BATCH_MEMORY_SECS: i64 = 86_400;

/// An `(owner, id)` index: org → keys, principal → keys, org → audit events.
type Index = (&'static str, &'static str);

pub struct EmbeddedStore {
    /// Shared with the blocking tasks that run redb calls; the file closes (and its lock
    /// is released) when the last clone is dropped.
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, creating its directory if missing.
    ///
    /// Blocking: it takes the file lock and verifies the checksums of the whole file, so
    /// that a damaged file is reported here, naming the path, rather than found later.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the directory {} for the key store: {e}",
                    dir.display()
                ))
            })?;
        }
        // redb may panic on a file that was altered outside redb (its debug builds assert
        // on impossible states): report that as damage, like any other corruption.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_check_integrity_on_open(true)
                .set_cache_size(CACHE_BYTES)
                .create(path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(path, e)),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "reading it failed".to_string());
                return Err(damaged(path, &why));
            }
        };
        prepare_tables(&db).map_err(|e| match e {
            StoreError::Corrupt(why) => damaged(path, &why),
            other => StoreError::Unavailable(format!("cannot open {}: {other}", path.display())),
        })?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || {
            let txn = db.begin_read().map_err(db_error)?;
            f(&txn)
        })
        .await
    }

    /// Runs `f` in one write transaction, committed durably if `f` succeeds and rolled
    /// back (dropped) if it fails.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || write_txn(&db, f)).await
    }
}

fn write_txn<T>(
    db: &Database,
    f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut txn = db.begin_write().map_err(db_error)?;
    // Immediate is redb's default; set it anyway, since an acknowledged key that is lost
    // on a crash would be a silent security bug (a revoke undone).
    txn.set_durability(Durability::Immediate)
        .map_err(db_error)?;
    let out = f(&txn)?;
    txn.commit().map_err(db_error)?;
    Ok(out)
}

async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store task failed: {e}")))?
}

/// Creates every table (so that readers never meet a missing one) and checks the schema.
fn prepare_tables(db: &Database) -> Result<(), StoreError> {
    write_txn(db, |txn| {
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let found = meta.get(SCHEMA_KEY).map_err(db_error)?.map(|v| v.value());
        match found {
            None => {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(db_error)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "it has store schema version {other}, this keygate reads version \
                     {SCHEMA_VERSION} (was it written by a newer keygate?)"
                )));
            }
        }
        txn.open_table(KEYS).map_err(db_error)?;
        txn.open_table(KEY_HASHES).map_err(db_error)?;
        txn.open_table(ORG_KEYS).map_err(db_error)?;
        txn.open_table(CREATOR_KEYS).map_err(db_error)?;
        txn.open_table(IDEMPOTENCY).map_err(db_error)?;
        txn.open_table(ORGS).map_err(db_error)?;
        txn.open_table(PRINCIPALS).map_err(db_error)?;
        txn.open_table(PRINCIPAL_TOKENS).map_err(db_error)?;
        txn.open_table(AUDIT).map_err(db_error)?;
        txn.open_table(ORG_AUDIT).map_err(db_error)?;
        txn.open_table(USAGE).map_err(db_error)?;
        txn.open_table(USAGE_HOURS).map_err(db_error)?;
        txn.open_table(USAGE_BATCHES).map_err(db_error)?;
        txn.open_table(QUOTAS).map_err(db_error)?;
        Ok(())
    })
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Unavailable(format!(
                "the key store file {} is in use by another keygate process (the embedded \
                 store serves one process; use store.backend: redis to share keys between \
                 replicas)",
                path.display()
            ))
        }
        DatabaseError::Storage(StorageError::Corrupted(why)) => damaged(path, &why),
        // redb reports a file that is not a redb database as invalid data.
        DatabaseError::Storage(StorageError::Io(e)) if e.kind() == ErrorKind::InvalidData => {
            damaged(path, &e.to_string())
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Corrupt(format!(
            "the key store file {} uses redb file format {v}, which this keygate cannot read",
            path.display()
        )),
        other => StoreError::Unavailable(format!(
            "cannot open the key store file {}: {other}",
            path.display()
        )),
    }
}

fn damaged(path: &Path, why: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the key store file {} is damaged ({why}); restore it from a backup or move it away",
        path.display()
    ))
}

/// Maps a redb error: damage is `Corrupt`, anything else (IO, closed file...) means the
/// store cannot answer, which callers treat as an outage and fail closed.
fn db_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(why) => StoreError::Corrupt(format!("embedded store: {why}")),
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::UpgradeRequired(_)) => {
            StoreError::Corrupt(format!("embedded store layout: {e}"))
        }
        e => StoreError::Unavailable(format!("embedded store: {e}")),
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {:?}", e.classify())))
}

/// Decodes a stored record. The error names the record and the position, never the
/// content (a record holds hashes).
fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what} cannot be decoded ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    kind: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(id).map_err(db_error)? {
        Some(v) => decode(&format!("{kind} {id}"), v.value()).map(Some),
        None => Ok(None),
    }
}

fn get_id(
    table: &impl ReadableTable<&'static [u8; 32], &'static str>,
    hash: &KeyHash,
) -> Result<Option<String>, StoreError> {
    Ok(table
        .get(hash.as_bytes())
        .map_err(db_error)?
        .map(|v| v.value().to_string()))
}

/// `VersionConflict` unless the stored version is the expected one.
fn check_version(what: &str, expected: u64, found: u64) -> Result<(), StoreError> {
    if found == expected {
        Ok(())
    } else {
        Err(StoreError::VersionConflict {
            what: what.to_string(),
            expected,
            found,
        })
    }
}

/// Whether `key_policy: creator` suspends this key now: its org has that policy and its
/// creator is disabled, deleted or gone (read in the lookup's own transaction).
fn creator_suspends(txn: &ReadTransaction, key: &KeyRecord) -> Result<bool, StoreError> {
    let orgs = txn.open_table(ORGS).map_err(db_error)?;
    let policy = get_json::<Org>(&orgs, "org", &key.org)?
        .map(|o| o.key_policy)
        .unwrap_or_default();
    if policy != KeyPolicy::Creator {
        return Ok(false);
    }
    let principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
    Ok(
        get_json::<Principal>(&principals, "principal", &key.created_by)?
            .is_none_or(|p| p.is_away()),
    )
}

/// Every id under `owner` in an `(owner, id)` index, oldest first.
fn owned_ids(
    index: &impl ReadableTable<Index, ()>,
    owner: &str,
) -> Result<Vec<String>, StoreError> {
    // `owner` followed by NUL is the least string greater than `owner` and every string
    // it prefixes, so this bound covers exactly the entries of `owner`.
    let next_owner = format!("{owner}\0");
    let mut ids = Vec::new();
    for entry in index
        .range((owner, "")..(next_owner.as_str(), ""))
        .map_err(db_error)?
    {
        let (k, _) = entry.map_err(db_error)?;
        ids.push(k.value().1.to_string());
    }
    Ok(ids)
}

/// One newest-first page of an `(owner, id)` index, strictly before the id `after`.
/// `load` turns an id into an item, or `None` to skip it. `next` is set only when another
/// item exists past the page. A `limit` of 0 gives an empty page without `next`: callers
/// clamp limits to at least 1.
fn page<T>(
    index: &impl ReadableTable<Index, ()>,
    owner: &str,
    after: Option<&str>,
    limit: usize,
    mut load: impl FnMut(&str) -> Result<Option<T>, StoreError>,
) -> Result<Page<T>, StoreError> {
    let next_owner = format!("{owner}\0");
    let end = match after {
        Some(after) => (owner, after),
        None => (next_owner.as_str(), ""),
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for entry in index.range((owner, "")..end).map_err(db_error)?.rev() {
        let (k, _) = entry.map_err(db_error)?;
        let key = k.value();
        let Some(item) = load(key.1)? else {
            continue;
        };
        if items.len() >= limit {
            more = true;
            break;
        }
        last = Some(key.1.to_string());
        items.push(item);
    }
    Ok(Page {
        items,
        next: if more { last } else { None },
    })
}

/// Quota counters of the limiter (`limits::QuotaFile`), in the `quotas` table.
#[async_trait]
impl QuotaStore for EmbeddedStore {
    async fn save_quotas(&self, counts: Vec<QuotaCount>) -> Result<(), StoreError> {
        self.write(move |txn| {
            let mut table = txn.open_table(QUOTAS).map_err(db_error)?;
            for c in &counts {
                let name = format!("{}|{}", c.owner, c.window);
                table
                    .insert(name.as_str(), (c.start, c.count))
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn load_quotas(&self, since: Timestamp) -> Result<Vec<QuotaCount>, StoreError> {
        let since = since.as_second();
        self.write(move |txn| {
            let mut table = txn.open_table(QUOTAS).map_err(db_error)?;
            let mut live = Vec::new();
            let mut ended = Vec::new();
            for entry in table.iter().map_err(db_error)? {
                let (name, value) = entry.map_err(db_error)?;
                let name = name.value().to_string();
                let (start, count) = value.value();
                if start < since {
                    ended.push(name);
                    continue;
                }
                let Some((owner, window)) = name.rsplit_once('|') else {
                    return Err(StoreError::Corrupt(format!(
                        "quota counter {name:?} has no window"
                    )));
                };
                live.push(QuotaCount {
                    owner: owner.to_string(),
                    window: window.to_string(),
                    start,
                    count,
                });
            }
            for name in &ended {
                table.remove(name.as_str()).map_err(db_error)?;
            }
            Ok(live)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let hash = *hash;
        self.read(move |txn| {
            let hashes = txn.open_table(KEY_HASHES).map_err(db_error)?;
            let Some(id) = get_id(&hashes, &hash)? else {
                return Ok(None);
            };
            let keys = txn.open_table(KEYS).map_err(db_error)?;
            match get_json::<KeyRecord>(&keys, "key", &id)? {
                Some(mut key) if key.hashes().any(|h| h == hash) => {
                    key.creator_suspended = creator_suspends(txn, &key)?;
                    Ok(Some(key))
                }
                // A stale index entry must never let a dropped secret back in.
                Some(_) => Err(StoreError::Corrupt(format!(
                    "the hash index names key {id}, whose record no longer has that secret"
                ))),
                None => Err(StoreError::Corrupt(format!(
                    "the hash index names key {id}, which does not exist"
                ))),
            }
        })
        .await
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let keys = txn.open_table(KEYS).map_err(db_error)?;
            get_json(&keys, "key", &id)
        })
        .await
    }

    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        let org = org.to_string();
        let after = after.map(str::to_string);
        self.read(move |txn| {
            let index = txn.open_table(ORG_KEYS).map_err(db_error)?;
            let keys = txn.open_table(KEYS).map_err(db_error)?;
            page(&index, &org, after.as_deref(), limit, |id| {
                match get_json::<KeyRecord>(&keys, "key", id)? {
                    // The index holds no deleted keys; the check keeps listings right
                    // even if it ever did.
                    Some(key) => Ok(key.deleted_at.is_none().then_some(key)),
                    None => Err(StoreError::Corrupt(format!(
                        "the org index names key {id}, which does not exist"
                    ))),
                }
            })
        })
        .await
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        let key = key.clone();
        let idempotency_key = idempotency_key.map(str::to_string);
        let json = encode("key", &key)?;
        self.write(move |txn| {
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
            if let Some(ik) = &idempotency_key
                && let Some(existing) = idem
                    .get((key.org.as_str(), ik.as_str()))
                    .map_err(db_error)?
            {
                return Ok(CreateOutcome::IdempotencyReplay {
                    existing_id: existing.value().to_string(),
                });
            }
            let mut keys = txn.open_table(KEYS).map_err(db_error)?;
            if keys.get(key.id.as_str()).map_err(db_error)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "key {} already exists",
                    key.id
                )));
            }
            let mut hashes = txn.open_table(KEY_HASHES).map_err(db_error)?;
            for h in key.hashes() {
                if hashes.get(h.as_bytes()).map_err(db_error)?.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "a secret of key {} is already indexed for another key",
                        key.id
                    )));
                }
                hashes
                    .insert(h.as_bytes(), key.id.as_str())
                    .map_err(db_error)?;
            }
            keys.insert(key.id.as_str(), json.as_slice())
                .map_err(db_error)?;
            if key.deleted_at.is_none() {
                txn.open_table(ORG_KEYS)
                    .map_err(db_error)?
                    .insert((key.org.as_str(), key.id.as_str()), ())
                    .map_err(db_error)?;
            }
            txn.open_table(CREATOR_KEYS)
                .map_err(db_error)?
                .insert((key.created_by.as_str(), key.id.as_str()), ())
                .map_err(db_error)?;
            if let Some(ik) = &idempotency_key {
                idem.insert((key.org.as_str(), ik.as_str()), key.id.as_str())
                    .map_err(db_error)?;
            }
            Ok(CreateOutcome::Created)
        })
        .await
    }

    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError> {
        let mut key = key.clone();
        key.version = expected + 1;
        key.creator_suspended = false;
        self.write(move |txn| {
            let mut keys = txn.open_table(KEYS).map_err(db_error)?;
            let Some(old) = get_json::<KeyRecord>(&keys, "key", &key.id)? else {
                return Err(StoreError::Conflict(format!(
                    "key {} does not exist",
                    key.id
                )));
            };
            check_version(&format!("key {}", key.id), expected, old.version)?;
            // last_used_at is written by the data plane (`touch_keys`) between an admin's
            // read and write: the admin's copy must not move it back.
            key.last_used_at = key.last_used_at.max(old.last_used_at);
            let json = encode("key", &key)?;
            let mut hashes = txn.open_table(KEY_HASHES).map_err(db_error)?;
            for h in old.hashes().filter(|h| !key.hashes().any(|n| n == *h)) {
                // Only drop an entry that is ours: never unindex another key's secret.
                let ours = get_id(&hashes, &h)?.is_some_and(|id| id == key.id);
                if ours {
                    hashes.remove(h.as_bytes()).map_err(db_error)?;
                }
            }
            for h in key.hashes() {
                match get_id(&hashes, &h)? {
                    Some(id) if id == key.id => {}
                    Some(_) => {
                        return Err(StoreError::Conflict(format!(
                            "a secret of key {} is already indexed for another key",
                            key.id
                        )));
                    }
                    None => {
                        hashes
                            .insert(h.as_bytes(), key.id.as_str())
                            .map_err(db_error)?;
                    }
                }
            }
            keys.insert(key.id.as_str(), json.as_slice())
                .map_err(db_error)?;

            let mut org_keys = txn.open_table(ORG_KEYS).map_err(db_error)?;
            org_keys
                .remove((old.org.as_str(), old.id.as_str()))
                .map_err(db_error)?;
            if key.deleted_at.is_none() {
                org_keys
                    .insert((key.org.as_str(), key.id.as_str()), ())
                    .map_err(db_error)?;
            }
            if old.created_by != key.created_by {
                let mut creators = txn.open_table(CREATOR_KEYS).map_err(db_error)?;
                creators
                    .remove((old.created_by.as_str(), old.id.as_str()))
                    .map_err(db_error)?;
                creators
                    .insert((key.created_by.as_str(), key.id.as_str()), ())
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let principal_id = principal_id.to_string();
        self.read(move |txn| {
            let index = txn.open_table(CREATOR_KEYS).map_err(db_error)?;
            let keys = txn.open_table(KEYS).map_err(db_error)?;
            let mut out = Vec::new();
            for id in owned_ids(&index, &principal_id)? {
                match get_json::<KeyRecord>(&keys, "key", &id)? {
                    Some(key) => out.push(key),
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "the creator index names key {id}, which does not exist"
                        )));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        let id = org.id.clone();
        let json = encode("org", org)?;
        self.write(move |txn| {
            let mut orgs = txn.open_table(ORGS).map_err(db_error)?;
            if orgs.get(id.as_str()).map_err(db_error)?.is_some() {
                return Err(StoreError::Conflict(format!("org {id} already exists")));
            }
            orgs.insert(id.as_str(), json.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError> {
        let id = org.id.clone();
        let mut org = org.clone();
        org.version = expected + 1;
        let json = encode("org", &org)?;
        self.write(move |txn| {
            let mut orgs = txn.open_table(ORGS).map_err(db_error)?;
            let Some(old) = get_json::<Org>(&orgs, "org", &id)? else {
                return Err(StoreError::Conflict(format!("org {id} does not exist")));
            };
            check_version(&format!("org {id}"), expected, old.version)?;
            orgs.insert(id.as_str(), json.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let orgs = txn.open_table(ORGS).map_err(db_error)?;
            get_json(&orgs, "org", &id)
        })
        .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        self.read(|txn| {
            let orgs = txn.open_table(ORGS).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in orgs.iter().map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                out.push(decode(&format!("org {}", k.value()), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError> {
        let principal = principal.clone();
        let json = encode("principal", &principal)?;
        // redb runs one write transaction at a time, so the emptiness check and the insert
        // cannot interleave with another caller's.
        self.write(move |txn| {
            let mut principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            if !principals.is_empty().map_err(db_error)? {
                return Ok(false);
            }
            principals
                .insert(principal.id.as_str(), json.as_slice())
                .map_err(db_error)?;
            txn.open_table(PRINCIPAL_TOKENS)
                .map_err(db_error)?
                .insert(principal.token_hash.as_bytes(), principal.id.as_str())
                .map_err(db_error)?;
            Ok(true)
        })
        .await
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        let principal = principal.clone();
        let json = encode("principal", &principal)?;
        self.write(move |txn| {
            let mut principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            if principals
                .get(principal.id.as_str())
                .map_err(db_error)?
                .is_some()
            {
                return Err(StoreError::Conflict(format!(
                    "principal {} already exists",
                    principal.id
                )));
            }
            let mut tokens = txn.open_table(PRINCIPAL_TOKENS).map_err(db_error)?;
            if get_id(&tokens, &principal.token_hash)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "the token of principal {} is already indexed for another principal",
                    principal.id
                )));
            }
            tokens
                .insert(principal.token_hash.as_bytes(), principal.id.as_str())
                .map_err(db_error)?;
            principals
                .insert(principal.id.as_str(), json.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError> {
        let mut principal = principal.clone();
        principal.version = expected + 1;
        let json = encode("principal", &principal)?;
        self.write(move |txn| {
            let mut principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            let Some(old) = get_json::<Principal>(&principals, "principal", &principal.id)? else {
                return Err(StoreError::Conflict(format!(
                    "principal {} does not exist",
                    principal.id
                )));
            };
            check_version(
                &format!("principal {}", principal.id),
                expected,
                old.version,
            )?;
            let mut tokens = txn.open_table(PRINCIPAL_TOKENS).map_err(db_error)?;
            match get_id(&tokens, &principal.token_hash)? {
                Some(id) if id != principal.id => {
                    return Err(StoreError::Conflict(format!(
                        "the token of principal {} is already indexed for another principal",
                        principal.id
                    )));
                }
                Some(_) => {}
                None => {
                    tokens
                        .insert(principal.token_hash.as_bytes(), principal.id.as_str())
                        .map_err(db_error)?;
                }
            }
            // A rotated token must stop resolving in this same transaction.
            if old.token_hash != principal.token_hash {
                let ours = get_id(&tokens, &old.token_hash)?.is_some_and(|id| id == old.id);
                if ours {
                    tokens.remove(old.token_hash.as_bytes()).map_err(db_error)?;
                }
            }
            principals
                .insert(principal.id.as_str(), json.as_slice())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            get_json(&principals, "principal", &id)
        })
        .await
    }

    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        let hash = *hash;
        self.read(move |txn| {
            let tokens = txn.open_table(PRINCIPAL_TOKENS).map_err(db_error)?;
            let Some(id) = get_id(&tokens, &hash)? else {
                return Ok(None);
            };
            let principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            match get_json(&principals, "principal", &id)? {
                Some(p) => Ok(Some(p)),
                None => Err(StoreError::Corrupt(format!(
                    "the token index names principal {id}, which does not exist"
                ))),
            }
        })
        .await
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        self.read(|txn| {
            let principals = txn.open_table(PRINCIPALS).map_err(db_error)?;
            let mut out = Vec::new();
            for entry in principals.iter().map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                out.push(decode(&format!("principal {}", k.value()), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let id = event.id.clone();
        let org = event.org.clone();
        let json = encode("audit event", event)?;
        self.write(move |txn| {
            let mut audit = txn.open_table(AUDIT).map_err(db_error)?;
            if audit.get(id.as_str()).map_err(db_error)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "audit event {id} already exists"
                )));
            }
            audit
                .insert(id.as_str(), json.as_slice())
                .map_err(db_error)?;
            if let Some(org) = &org {
                txn.open_table(ORG_AUDIT)
                    .map_err(db_error)?
                    .insert((org.as_str(), id.as_str()), ())
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let org = org.to_string();
        let after = after.map(str::to_string);
        self.read(move |txn| {
            let index = txn.open_table(ORG_AUDIT).map_err(db_error)?;
            let audit = txn.open_table(AUDIT).map_err(db_error)?;
            page(&index, &org, after.as_deref(), limit, |id| match get_json(
                &audit,
                "audit event",
                id,
            )? {
                Some(event) => Ok(Some(event)),
                None => Err(StoreError::Corrupt(format!(
                    "the org audit index names event {id}, which does not exist"
                ))),
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META).map_err(db_error)?;
            meta.get(SCHEMA_KEY).map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let batch = batch.clone();
        self.write(move |txn| {
            let mut batches = txn.open_table(USAGE_BATCHES).map_err(db_error)?;
            if batches.get(batch.id.as_str()).map_err(db_error)?.is_some() {
                return Ok(());
            }
            let mut usage = txn.open_table(USAGE).map_err(db_error)?;
            let mut hours = txn.open_table(USAGE_HOURS).map_err(db_error)?;
            for row in &batch.rows {
                let at = (row.key_id.as_str(), row.hour.as_second());
                let stored: Option<UsageCounts> = match usage.get(at).map_err(db_error)? {
                    Some(v) => Some(decode(
                        &format!("usage of key {} at {}", row.key_id, row.hour),
                        v.value(),
                    )?),
                    None => None,
                };
                let mut counts = stored.unwrap_or_default();
                counts.add(&row.counts);
                counts.cap_resources(RESOURCES_PER_HOUR);
                let json = encode("usage", &counts)?;
                usage.insert(at, json.as_slice()).map_err(db_error)?;
                hours.insert((at.1, at.0), ()).map_err(db_error)?;
            }
            batches
                .insert(batch.id.as_str(), Timestamp::now().as_second())
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn usage(
        &self,
        key_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let key_id = key_id.to_string();
        self.read(move |txn| {
            let usage = txn.open_table(USAGE).map_err(db_error)?;
            let mut rows = Vec::new();
            let range = (key_id.as_str(), from.as_second())..(key_id.as_str(), to.as_second());
            for entry in usage.range(range).map_err(db_error)? {
                let (k, v) = entry.map_err(db_error)?;
                let hour = Timestamp::from_second(k.value().1).map_err(|_| {
                    StoreError::Corrupt(format!("usage of key {key_id} has a bad hour"))
                })?;
                rows.push(UsageRow {
                    key_id: key_id.clone(),
                    hour,
                    counts: decode(&format!("usage of key {key_id} at {hour}"), v.value())?,
                });
            }
            Ok(rows)
        })
        .await
    }

    async fn prune_usage(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = before.as_second();
        let forget_before = Timestamp::now().as_second() - BATCH_MEMORY_SECS;
        self.write(move |txn| {
            let mut hours = txn.open_table(USAGE_HOURS).map_err(db_error)?;
            let mut old = Vec::new();
            for entry in hours
                .range((i64::MIN, "")..(before, ""))
                .map_err(db_error)?
            {
                let (k, _) = entry.map_err(db_error)?;
                let (hour, key) = k.value();
                old.push((hour, key.to_string()));
            }
            let mut usage = txn.open_table(USAGE).map_err(db_error)?;
            for (hour, key) in &old {
                usage.remove((key.as_str(), *hour)).map_err(db_error)?;
                hours.remove((*hour, key.as_str())).map_err(db_error)?;
            }
            let mut batches = txn.open_table(USAGE_BATCHES).map_err(db_error)?;
            let mut forgotten = Vec::new();
            for entry in batches.iter().map_err(db_error)? {
                let (id, at) = entry.map_err(db_error)?;
                if at.value() < forget_before {
                    forgotten.push(id.value().to_string());
                }
            }
            for id in &forgotten {
                batches.remove(id.as_str()).map_err(db_error)?;
            }
            Ok(old.len() as u64)
        })
        .await
    }

    async fn touch_keys(&self, seen: &[(String, Timestamp)]) -> Result<(), StoreError> {
        let seen = seen.to_vec();
        self.write(move |txn| {
            let mut keys = txn.open_table(KEYS).map_err(db_error)?;
            for (id, at) in &seen {
                let Some(mut key) = get_json::<KeyRecord>(&keys, "key", id)? else {
                    continue;
                };
                if key.last_used_at.is_some_and(|t| t >= *at) {
                    continue;
                }
                key.last_used_at = Some(*at);
                let json = encode("key", &key)?;
                keys.insert(id.as_str(), json.as_slice())
                    .map_err(db_error)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tempfile::TempDir;

    use super::*;
    // The behaviour shared with the Redis store is tested in `store::conformance`;
    // what stays here is this backend's own: the file, its lock, its damage.
    use crate::store::conformance::{event, key, org, principal};

    fn store() -> (TempDir, PathBuf, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("keygate.db");
        let store = EmbeddedStore::open(&path).unwrap();
        (dir, path, store)
    }

    #[tokio::test]
    async fn data_survives_close_and_reopen() {
        let (_dir, path, s) = store();
        let k = key(1, "acme", "s1");
        s.create_key(&k, Some("idem")).await.unwrap();
        s.create_org(&org("acme")).await.unwrap();
        let p = principal(1, "tok");
        assert!(s.create_first_principal(&p).await.unwrap());
        s.append_audit(&event(1, Some("acme"))).await.unwrap();
        drop(s);

        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(
            s.key_by_hash(&KeyHash::of("s1")).await.unwrap(),
            Some(k.clone())
        );
        assert_eq!(
            s.list_keys("acme", None, 10).await.unwrap().items,
            vec![k.clone()]
        );
        assert_eq!(
            s.create_key(&key(2, "acme", "s2"), Some("idem"))
                .await
                .unwrap(),
            CreateOutcome::IdempotencyReplay { existing_id: k.id }
        );
        assert!(s.get_org("acme").await.unwrap().is_some());
        assert_eq!(
            s.principal_by_token(&KeyHash::of("tok")).await.unwrap(),
            Some(p)
        );
        assert_eq!(s.list_audit("acme", None, 10).await.unwrap().items.len(), 1);
    }

    #[tokio::test]
    async fn a_second_open_is_refused_clearly() {
        let (_dir, path, _s) = store();
        let err = EmbeddedStore::open(&path)
            .err()
            .expect("second open must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("is in use by another keygate process"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    fn assert_refused_as_damaged(path: &Path) {
        let err = EmbeddedStore::open(path)
            .err()
            .expect("damaged file must fail");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt(_)), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("is damaged"), "{msg}");
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.db");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        assert_refused_as_damaged(&path);
    }

    #[tokio::test]
    async fn a_damaged_store_is_refused_clearly() {
        let (_dir, path, s) = store();
        for n in 1..=50 {
            s.create_key(&key(n, "acme", &format!("s{n}")), None)
                .await
                .unwrap();
        }
        drop(s);
        let mut bytes = std::fs::read(&path).unwrap();
        // Alter one stored record in place, as a failing disk would (every copy of it:
        // copy-on-write leaves stale ones in free pages).
        let needle = b"\"name\":\"key 25\"";
        let hits: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert!(!hits.is_empty(), "records are stored as JSON");
        for at in hits {
            bytes[at + needle.len() - 3] = b'9';
        }
        std::fs::write(&path, bytes).unwrap();
        assert_refused_as_damaged(&path);
    }
}
