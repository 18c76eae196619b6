//! The Redis key store (`store.backend: redis`): one Redis (or a Sentinel-managed
//! master with replicas) shared by any number of gateway replicas, and the
//! invalidation bus that goes with it ([`RedisBus`]).
//!
//! It owns the Redis layout below and keeps every index in step with the records it
//! points at: each write is one Lua script (`scripts`), atomic in Redis, so no reader on
//! any replica sees half a key, and of several replicas bootstrapping at once exactly
//! one creates the first owner. Semantics are those of the embedded store; one
//! behavioural test set runs against both (`store::conformance`).
//!
//! This is the only part of keygate that imports the `redis` crate. It must never put a
//! hash, a record's content, the URL or its password in a log line or an error message,
//! never retry a write (the `Instrumented` wrapper bounds each call by `store.timeout`),
//! and never hold a lock across an await on the lookup path: commands are pipelined on
//! multiplexed connections (a few, used in turn), so lookups do not queue behind each
//! other.
//!
//! Durability is Redis's: an acknowledged revoke survives a Redis restart only with AOF
//! persistence, which is why [`RedisStore::check_server_settings`] warns at start when
//! Redis reports `appendonly no` (docs/operations.md).
//!
//! # Layout
//!
//! Every name starts with the namespace prefix `<store.namespace>:` (`keygate:`).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `meta` | hash | `schema_version` |
//! | `key:<id>` | hash | `json` (the `KeyRecord`), `org`, `creator`, `hashes` (hex, comma-separated), `version` (compared by updates), `last_used` (Unix nanoseconds; the later of it and the JSON's is the key's `last_used_at`) |
//! | `key_hashes` | hash | SHA-256 (hex) → key id: current and previous secret |
//! | `org_keys:<org>` | sorted set | ids of the org's keys that are not deleted |
//! | `creator_keys:<principal>` | sorted set | ids of the keys a principal created |
//! | `idempotency:<org>` | hash | idempotency key → key id |
//! | `orgs` | hash | org id → JSON `Org` (its `version` compared by `UPDATE_ORG`) |
//! | `principal:<id>` | hash | `json` (the `Principal`), `token` (hex), `version` |
//! | `principals` | sorted set | every principal id |
//! | `principal_tokens` | hash | admin-token SHA-256 (hex) → principal id |
//! | `audit` | hash | event id → JSON `AuditEvent` |
//! | `org_audit:<org>` | sorted set | the org's event ids |
//! | `usage:<key id>:<hour>` | hash | usage counters of a key in an hour (Unix seconds): `requests`…, `d:<code>`, `r:<route>`, `s:<resource>` |
//! | `usage_hours:<key id>` | sorted set | the key's hours with usage (score = hour) |
//! | `usage_keys:<hour>` | set | ids of the keys with usage in that hour, for pruning |
//! | `usage_index_hours` | sorted set | hours that have a `usage_keys:<hour>` set (score = hour) |
//! | `usage_all` | sorted set | `<hour>:<key id>`: the pruning index of keygates before December 2026, still read by pruning |
//! | `usage_batches` | sorted set | usage batch ids applied, and `<batch id>.<part>` for the parts of a batch not yet wholly applied; score = Unix seconds applied |
//! | `rl:<key id>[:r:<route>]:<window>:<start>` | string | requests counted in a rate-limit window (expires at its end) |
//! | `invalidations` | pub/sub channel | changes (published by the write scripts and by the writer) and heartbeats ([`RedisBus`]) |
//!
//! Sorted sets have every score 0, so they are ordered by member, and ids are
//! `<kind>_<lowercase ULID>`: `ZREVRANGEBYLEX` is a newest-first listing from a cursor.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{FromRedisValue, Script, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use jiff::Timestamp;

use super::usage::RESOURCES_PER_HOUR;
use super::{
    CreateOutcome, KeyStore, Page, StoreError, UsageBatch, UsageCounts, UsageRow, WindowStore,
};
use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, Principal};

mod bus;
mod conn;
mod scripts;

pub use bus::RedisBus;
use conn::{Breaker, Conn, Target, describe_error};

/// Bumped whenever the layout or record encoding changes incompatibly.
const SCHEMA_VERSION: &str = "1";

/// The compiled scripts (each knows its SHA1 and is loaded into Redis on first use).
struct Scripts {
    key_by_hash: Script,
    page: Script,
    keys_created_by: Script,
    create_key: Script,
    update_key: Script,
    update_org: Script,
    create_first_principal: Script,
    create_principal: Script,
    update_principal: Script,
    principal_by_token: Script,
    list_principals: Script,
    append_audit: Script,
    schema: Script,
    touch_keys: Script,
    add_usage: Script,
    usage: Script,
    prune_usage: Script,
    lease_windows: Script,
    refund_window: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            key_by_hash: Script::new(scripts::KEY_BY_HASH),
            page: Script::new(scripts::PAGE),
            keys_created_by: Script::new(scripts::KEYS_CREATED_BY),
            create_key: Script::new(scripts::CREATE_KEY),
            update_key: Script::new(scripts::UPDATE_KEY),
            update_org: Script::new(scripts::UPDATE_ORG),
            create_first_principal: Script::new(scripts::CREATE_FIRST_PRINCIPAL),
            create_principal: Script::new(scripts::CREATE_PRINCIPAL),
            update_principal: Script::new(scripts::UPDATE_PRINCIPAL),
            principal_by_token: Script::new(scripts::PRINCIPAL_BY_TOKEN),
            list_principals: Script::new(scripts::LIST_PRINCIPALS),
            append_audit: Script::new(scripts::APPEND_AUDIT),
            schema: Script::new(scripts::SCHEMA),
            touch_keys: Script::new(scripts::TOUCH_KEYS),
            add_usage: Script::new(scripts::ADD_USAGE),
            usage: Script::new(scripts::USAGE),
            prune_usage: Script::new(scripts::PRUNE_USAGE),
            lease_windows: Script::new(scripts::LEASE_WINDOWS),
            refund_window: Script::new(scripts::REFUND_WINDOW),
        }
    }
}

/// What Redis says about the settings keygate depends on (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSettings {
    /// Values of `appendonly` and `maxmemory-policy`.
    Read {
        appendonly: String,
        maxmemory_policy: String,
    },
    /// `CONFIG GET` was refused (managed Redis, or an ACL without `+config`).
    Unreadable(String),
}

pub struct RedisStore {
    /// Shared multiplexed connection; cloning it is cheap and shares the socket.
    conn: Conn,
    /// Kept to open the bus's pub/sub connections to the same server.
    target: Target,
    /// `<namespace>:`, the start of every key and channel name.
    prefix: String,
    scripts: Arc<Scripts>,
    /// Connection and response timeout of the underlying connections.
    io_timeout: Duration,
    breaker: Breaker,
}

impl RedisStore {
    /// Parses `store.url` and sets up the connection without waiting on Redis: the first
    /// command connects (so a gateway can start while Redis is still coming up).
    /// `io_timeout` bounds each connection attempt and each response.
    pub fn open(url: &str, namespace: &str, io_timeout: Duration) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        let conn = target.connect(io_timeout)?;
        Ok(RedisStore {
            conn,
            target,
            prefix: format!("{namespace}:"),
            scripts: Arc::new(Scripts::new()),
            io_timeout,
            breaker: Breaker::new(),
        })
    }

    /// The invalidation bus on the same Redis and namespace.
    pub fn bus(&self) -> RedisBus {
        RedisBus::new(
            self.target.clone(),
            self.conn.clone(),
            format!("{}invalidations", self.prefix),
            self.io_timeout,
        )
    }

    /// Where this store points, without credentials (for log lines).
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Reads `appendonly` and `maxmemory-policy` with `CONFIG GET`.
    pub async fn check_server_settings(&self) -> Result<ServerSettings, StoreError> {
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg("appendonly").arg("maxmemory-policy");
        match get.query_async::<Vec<String>>(&mut conn).await {
            Ok(pairs) => {
                let find = |name: &str| {
                    pairs
                        .chunks(2)
                        .find(|c| c.first().is_some_and(|n| n == name))
                        .and_then(|c| c.get(1).cloned())
                        .unwrap_or_default()
                };
                Ok(ServerSettings::Read {
                    appendonly: find("appendonly"),
                    maxmemory_policy: find("maxmemory-policy"),
                })
            }
            Err(e) if e.code().is_some() => Ok(ServerSettings::Unreadable(describe_error(&e))),
            Err(e) => Err(conn::unavailable("reading the Redis settings", &e)),
        }
    }

    /// Logs, once Redis answers, whether it is set up as keygate needs (AOF persistence,
    /// no eviction). Runs in the background and gives up after a bounded number of
    /// attempts, so a Redis that is down at start delays nothing.
    pub fn spawn_settings_check(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = conn::MIN_BACKOFF;
            for _ in 0..30 {
                match this.check_server_settings().await {
                    Ok(s) => {
                        log_settings(&s, &this.describe());
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(conn::jitter(delay)).await;
                        delay = (delay * 2).min(conn::MAX_BACKOFF);
                    }
                }
            }
            tracing::warn!(
                "could not read the Redis persistence settings (Redis did not answer); \
                 make sure it runs with appendonly yes"
            );
        });
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// A key's stored JSON and its decoded record (with the `last_used` field's time).
    async fn stored_key_json(&self, id: &str) -> Result<Option<(String, KeyRecord)>, StoreError> {
        let (json, last_used): (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.key(&format!("key:{id}")))
                    .arg("json")
                    .arg("last_used"),
            )
            .await?;
        match json {
            Some(j) => {
                let key = decode_key(id, &j, last_used.as_deref().unwrap_or(""))?;
                Ok(Some((j, key)))
            }
            None => Ok(None),
        }
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        for a in args {
            inv.arg(*a);
        }
        let admission = self.breaker.admit().ok_or_else(fail_fast)?;
        let mut conn = self.conn.clone();
        let result = inv.invoke_async(&mut conn).await;
        admission.record(&result);
        result.map_err(store_error)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let admission = self.breaker.admit().ok_or_else(fail_fast)?;
        let mut conn = self.conn.clone();
        let result = cmd.query_async(&mut conn).await;
        admission.record(&result);
        result.map_err(store_error)
    }

    /// One page of an `(owner, id)` sorted set, newest first, from the records in
    /// `records` (a hash; `""` for `key:<id>` hashes).
    /// `decode` gets each record's id, JSON and `last_used` field (see `scripts::PAGE`)
    /// and says whether the page keeps it.
    async fn page<T>(
        &self,
        kind: &str,
        index: &str,
        records: &str,
        after: Option<&str>,
        limit: usize,
        decode: impl Fn(&str, &str, &str) -> Result<Option<T>, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        if limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let count = (limit + 1).to_string();
        let flat: Vec<String> = self
            .invoke(
                &self.scripts.page,
                &[index, records, after.unwrap_or(""), &count],
            )
            .await?;
        let mut items = Vec::new();
        let mut ids = Vec::new();
        for [id, json, last_used] in listing::<3>(&flat, kind, index)? {
            if let Some(item) = decode(id, json, last_used)? {
                items.push(item);
                ids.push(id);
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            ids.get(limit - 1).map(|s| s.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

fn log_settings(s: &ServerSettings, target: &str) {
    match s {
        ServerSettings::Read {
            appendonly,
            maxmemory_policy,
        } => {
            if appendonly != "yes" {
                tracing::warn!(
                    redis = %target,
                    appendonly = %appendonly,
                    "Redis reports appendonly {appendonly}: an acknowledged revoke can be lost \
                     if Redis restarts; run it with appendonly yes (docs/operations.md)"
                );
            }
            if maxmemory_policy != "noeviction" {
                tracing::warn!(
                    redis = %target,
                    maxmemory_policy = %maxmemory_policy,
                    "Redis may evict keys (maxmemory-policy {maxmemory_policy}): an evicted \
                     index entry makes a good key unknown; use noeviction (docs/operations.md)"
                );
            }
            if appendonly == "yes" && maxmemory_policy == "noeviction" {
                tracing::info!(redis = %target, "Redis persistence and eviction settings are as required");
            }
        }
        ServerSettings::Unreadable(why) => tracing::warn!(
            redis = %target,
            "could not check whether Redis persists writes (CONFIG GET refused: {why}); \
             make sure it runs with appendonly yes and maxmemory-policy noeviction"
        ),
    }
}

/// Read-modify-swap attempts before giving up on a record that keeps changing.
const SWAP_ATTEMPTS: usize = 8;

/// How long a usage batch id is remembered (a retry comes within seconds or minutes).
const BATCH_MEMORY_SECS: i64 = 86_400;

/// Usage rows per `scripts::ADD_USAGE` call: a call holds Redis for every client for
/// about 15 µs a row (a new row's counters and index entries), so a batch of 1,000
/// rows goes as parts of 100 (~1.5 ms each) rather than one call of ~15 ms.
const USAGE_ROWS_PER_CALL: usize = 100;

/// Keys per `scripts::TOUCH_KEYS` call: one call stalls other Redis clients for about
/// a microsecond per key, so a flush's thousands of keys go as several calls, sent
/// together on the multiplexed connection.
const TOUCH_KEYS_PER_CALL: usize = 100;

fn busy(id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "redis store: key {id} kept changing during the write; try again"
    ))
}

/// A row's counters as `usage:<key>:<hour>` fields (see `scripts::ADD_USAGE`); zeros
/// are left out.
fn usage_fields(c: &UsageCounts) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = [
        ("requests", c.requests),
        ("successes", c.successes),
        ("client_errors", c.client_errors),
        ("upstream_errors", c.upstream_errors),
        ("rate_limited", c.rate_limited),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_string(), n))
    .collect();
    for (tag, map) in [("d:", &c.denied), ("r:", &c.routes), ("s:", &c.resources)] {
        out.extend(map.iter().map(|(name, n)| (format!("{tag}{name}"), *n)));
    }
    out.retain(|(_, n)| *n > 0);
    out
}

/// The counters back from `usage:<key>:<hour>` fields.
fn usage_counts(fields: &[String], what: &str) -> Result<UsageCounts, StoreError> {
    let mut c = UsageCounts::default();
    for pair in fields.chunks(2) {
        let [field, value] = pair else {
            return Err(StoreError::Corrupt(format!("{what} came back malformed")));
        };
        let n: u64 = value.parse().map_err(|_| {
            StoreError::Corrupt(format!("{what} has a counter that is not a count"))
        })?;
        match field.as_str() {
            "requests" => c.requests = n,
            "successes" => c.successes = n,
            "client_errors" => c.client_errors = n,
            "upstream_errors" => c.upstream_errors = n,
            "rate_limited" => c.rate_limited = n,
            f => {
                let (map, name) = if let Some(name) = f.strip_prefix("d:") {
                    (&mut c.denied, name)
                } else if let Some(name) = f.strip_prefix("r:") {
                    (&mut c.routes, name)
                } else if let Some(name) = f.strip_prefix("s:") {
                    (&mut c.resources, name)
                } else {
                    return Err(StoreError::Corrupt(format!(
                        "{what} has an unknown counter"
                    )));
                };
                map.insert(name.to_string(), n);
            }
        }
    }
    Ok(c)
}

fn fail_fast() -> StoreError {
    StoreError::Unavailable("redis store: unreachable moments ago; retrying shortly".to_string())
}

/// Maps a redis error: a reply that says the data has the wrong shape is `Corrupt`;
/// anything else (unreachable, timed out, read-only replica, out of memory, refused by
/// an ACL) means the store cannot do it now, and callers fail closed.
fn store_error(e: redis::RedisError) -> StoreError {
    match e.code() {
        Some("WRONGTYPE") => StoreError::Corrupt(format!("redis store: {}", describe_error(&e))),
        _ => StoreError::Unavailable(format!("redis store: {}", describe_error(&e))),
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {:?}", e.classify())))
}

/// Decodes a stored record; the error names the record and the position, never the
/// content (records hold hashes).
fn decode<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Corrupt(format!(
            "{what} cannot be decoded ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// The records of a listing script's flat reply, `N` values each: `{id, json, …}` (key
/// listings add the `last_used` field); an empty json is a dangling index entry.
fn listing<'a, const N: usize>(
    flat: &'a [String],
    kind: &str,
    index: &str,
) -> Result<Vec<[&'a str; N]>, StoreError> {
    flat.chunks(N)
        .map(|c| match c {
            [id, json, ..] if c.len() == N && !json.is_empty() => {
                Ok(std::array::from_fn(|i| c[i].as_str()))
            }
            [id, ..] if c.len() == N => Err(StoreError::Corrupt(format!(
                "the index {index} names {kind} {id}, which does not exist"
            ))),
            _ => Err(StoreError::Corrupt(format!(
                "a listing of {index} came back malformed"
            ))),
        })
        .collect()
}

/// A key record from its JSON and its `last_used` field (`""` if none): its
/// `last_used_at` is the later of the two (see `scripts::TOUCH_KEYS`).
fn decode_key(id: &str, json: &str, last_used: &str) -> Result<KeyRecord, StoreError> {
    let mut key: KeyRecord = decode(&format!("key {id}"), json)?;
    if !last_used.is_empty() {
        let at = last_used
            .parse::<i128>()
            .ok()
            .and_then(|n| Timestamp::from_nanosecond(n).ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("key {id} has a last_used that is not a time"))
            })?;
        key.last_used_at = key.last_used_at.max(Some(at));
    }
    Ok(key)
}

/// How a time is kept in a key's `last_used` field: Unix nanoseconds in decimal, so
/// that `scripts::TOUCH_KEYS` compares equal-length values as strings. `None` for a
/// time before 1970, which no use of a key has.
fn last_used_field(at: Timestamp) -> Option<String> {
    let n = at.as_nanosecond();
    (n >= 0).then(|| n.to_string())
}

/// The first element of a script's status reply.
fn status(reply: &[Value]) -> Option<String> {
    match reply.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn string_at(reply: &[Value], i: usize) -> Option<String> {
    match reply.get(i)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The `VersionConflict` of a `{'stale', stored version}` reply.
fn stale(what: &str, expected: u64, reply: &[Value]) -> StoreError {
    match string_at(reply, 1).and_then(|v| v.parse().ok()) {
        Some(found) => StoreError::VersionConflict {
            what: what.to_string(),
            expected,
            found,
        },
        None => StoreError::Corrupt(format!("{what} has a malformed version")),
    }
}

fn token_taken(id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the token of principal {id} is already indexed for another principal"
    ))
}

fn listed(key: &KeyRecord) -> &'static str {
    if key.deleted_at.is_none() { "1" } else { "0" }
}

/// Rate-limit window counters `rl:…` (`limits::RedisLimiter`), one script each.
#[async_trait]
impl WindowStore for RedisStore {
    async fn lease_windows(
        &self,
        windows: &[(String, u64, i64, u64)],
    ) -> Result<(bool, Vec<(u64, u64)>), StoreError> {
        let owned: Vec<String> = windows
            .iter()
            .flat_map(|(name, limit, expire, want)| {
                [
                    format!("rl:{name}"),
                    limit.to_string(),
                    expire.to_string(),
                    want.max(&1).to_string(),
                ]
            })
            .collect();
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        let reply: Vec<u64> = self.invoke(&self.scripts.lease_windows, &args).await?;
        match reply.split_first() {
            Some((ok, rest)) if rest.len() == 2 * windows.len() => Ok((
                *ok == 1,
                rest.chunks_exact(2).map(|c| (c[0], c[1])).collect(),
            )),
            _ => Err(StoreError::Corrupt(
                "a rate-limit check came back malformed".to_string(),
            )),
        }
    }

    async fn refund_window(&self, name: &str, tokens: u64) -> Result<u64, StoreError> {
        let counter = format!("rl:{name}");
        let tokens = tokens.to_string();
        self.invoke(&self.scripts.refund_window, &[&counter, &tokens])
            .await
    }

    async fn peek_windows(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut cmd = redis::cmd("MGET");
        for name in names {
            cmd.arg(self.key(&format!("rl:{name}")));
        }
        let values: Vec<Option<u64>> = self.query(&cmd).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let hex = hash.to_hex();
        let reply: Option<Vec<String>> = self.invoke(&self.scripts.key_by_hash, &[&hex]).await?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        match reply.as_slice() {
            [id, json, suspended, last_used] => {
                let mut key = decode_key(id, json, last_used)?;
                key.creator_suspended = suspended == "1";
                // A stale index entry must never let a dropped secret back in.
                if key.hashes().any(|h| h == *hash) {
                    Ok(Some(key))
                } else {
                    Err(StoreError::Corrupt(format!(
                        "the hash index names key {id}, whose record no longer has that secret"
                    )))
                }
            }
            [id] => Err(StoreError::Corrupt(format!(
                "the hash index names key {id}, which does not exist"
            ))),
            _ => Err(StoreError::Corrupt(
                "a hash lookup came back malformed".to_string(),
            )),
        }
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.stored_key_json(id).await?.map(|(_, key)| key))
    }

    async fn list_keys(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<KeyRecord>, StoreError> {
        // The index holds no deleted keys; the filter keeps listings right even if it
        // ever did.
        self.page(
            "key",
            &format!("org_keys:{org}"),
            "",
            after,
            limit,
            |id, json, last_used| {
                decode_key(id, json, last_used).map(|k| k.deleted_at.is_none().then_some(k))
            },
        )
        .await
    }

    async fn create_key(
        &self,
        key: &KeyRecord,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, StoreError> {
        let json = encode("key", key)?;
        let hashes: Vec<String> = key.hashes().map(|h| h.to_hex()).collect();
        let version = key.version.to_string();
        let mut args = vec![
            key.id.as_str(),
            key.org.as_str(),
            key.created_by.as_str(),
            listed(key),
            json.as_str(),
            if idempotency_key.is_some() { "1" } else { "0" },
            idempotency_key.unwrap_or(""),
            version.as_str(),
        ];
        args.extend(hashes.iter().map(String::as_str));
        let reply: Vec<Value> = self.invoke(&self.scripts.create_key, &args).await?;
        match status(&reply).as_deref() {
            Some("created") => Ok(CreateOutcome::Created),
            Some("replay") => match string_at(&reply, 1) {
                Some(existing_id) => Ok(CreateOutcome::IdempotencyReplay { existing_id }),
                None => Err(StoreError::Corrupt(
                    "an idempotency entry came back malformed".to_string(),
                )),
            },
            Some("exists") => Err(StoreError::Conflict(format!(
                "key {} already exists",
                key.id
            ))),
            Some("hash_taken") => Err(StoreError::Conflict(format!(
                "a secret of key {} is already indexed for another key",
                key.id
            ))),
            _ => Err(StoreError::Corrupt(
                "create_key came back malformed".to_string(),
            )),
        }
    }

    async fn update_key(&self, key: &KeyRecord, expected: u64) -> Result<(), StoreError> {
        let hashes: Vec<String> = key.hashes().map(|h| h.to_hex()).collect();
        let expected_version = expected.to_string();
        // Keep the later last_used_at in the JSON too, and retry if only that changed
        // under us (same version): a keygate from before the `last_used` field still
        // touches keys by swapping their JSON (`scripts::UPDATE_KEY`).
        for _ in 0..SWAP_ATTEMPTS {
            let stored = self.stored_key_json(&key.id).await?;
            let mut key = key.clone();
            key.version = expected + 1;
            key.creator_suspended = false;
            if let Some((_, old)) = &stored {
                key.last_used_at = key.last_used_at.max(old.last_used_at);
            }
            let json = encode("key", &key)?;
            let expected_json = stored.as_ref().map_or("", |(j, _)| j.as_str());
            let mut args = vec![
                key.id.as_str(),
                key.org.as_str(),
                key.created_by.as_str(),
                listed(&key),
                json.as_str(),
                expected_json,
                expected_version.as_str(),
            ];
            args.extend(hashes.iter().map(String::as_str));
            let reply: Vec<Value> = self.invoke(&self.scripts.update_key, &args).await?;
            return match status(&reply).as_deref() {
                Some("updated") => Ok(()),
                Some("changed") => continue,
                Some("stale") => Err(stale(&format!("key {}", key.id), expected, &reply)),
                Some("missing") => Err(StoreError::Conflict(format!(
                    "key {} does not exist",
                    key.id
                ))),
                Some("hash_taken") => Err(StoreError::Conflict(format!(
                    "a secret of key {} is already indexed for another key",
                    key.id
                ))),
                Some("corrupt") => Err(StoreError::Corrupt(format!(
                    "key {} is stored without its index fields",
                    key.id
                ))),
                _ => Err(StoreError::Corrupt(
                    "update_key came back malformed".to_string(),
                )),
            };
        }
        Err(busy(&key.id))
    }

    async fn keys_created_by(&self, principal_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let flat: Vec<String> = self
            .invoke(&self.scripts.keys_created_by, &[principal_id])
            .await?;
        listing::<3>(&flat, "key", &format!("creator_keys:{principal_id}"))?
            .into_iter()
            .map(|[id, json, last_used]| decode_key(id, json, last_used))
            .collect()
    }

    async fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        let json = encode("org", org)?;
        let added: bool = self
            .query(
                redis::cmd("HSETNX")
                    .arg(self.key("orgs"))
                    .arg(&org.id)
                    .arg(json),
            )
            .await?;
        if added {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "org {} already exists",
                org.id
            )))
        }
    }

    async fn update_org(&self, org: &Org, expected: u64) -> Result<(), StoreError> {
        let mut org = org.clone();
        org.version = expected + 1;
        let json = encode("org", &org)?;
        let expected_version = expected.to_string();
        let reply: Vec<Value> = self
            .invoke(
                &self.scripts.update_org,
                &[&org.id, &json, &expected_version],
            )
            .await?;
        match status(&reply).as_deref() {
            Some("updated") => Ok(()),
            Some("stale") => Err(stale(&format!("org {}", org.id), expected, &reply)),
            Some("missing") => Err(StoreError::Conflict(format!(
                "org {} does not exist",
                org.id
            ))),
            _ => Err(StoreError::Corrupt(
                "update_org came back malformed".to_string(),
            )),
        }
    }

    async fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        let json: Option<String> = self
            .query(redis::cmd("HGET").arg(self.key("orgs")).arg(id))
            .await?;
        json.map(|j| decode(&format!("org {id}"), &j)).transpose()
    }

    async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let mut all: Vec<(String, String)> = self
            .query(redis::cmd("HGETALL").arg(self.key("orgs")))
            .await?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.iter()
            .map(|(id, json)| decode(&format!("org {id}"), json))
            .collect()
    }

    async fn create_first_principal(&self, principal: &Principal) -> Result<bool, StoreError> {
        let json = encode("principal", principal)?;
        let token = principal.token_hash.to_hex();
        let version = principal.version.to_string();
        let stored: i64 = self
            .invoke(
                &self.scripts.create_first_principal,
                &[&principal.id, &token, &json, &version],
            )
            .await?;
        Ok(stored == 1)
    }

    async fn create_principal(&self, principal: &Principal) -> Result<(), StoreError> {
        let json = encode("principal", principal)?;
        let token = principal.token_hash.to_hex();
        let version = principal.version.to_string();
        let created: i64 = self
            .invoke(
                &self.scripts.create_principal,
                &[&principal.id, &token, &json, &version],
            )
            .await?;
        match created {
            1 => Ok(()),
            0 => Err(StoreError::Conflict(format!(
                "principal {} already exists",
                principal.id
            ))),
            _ => Err(token_taken(&principal.id)),
        }
    }

    async fn update_principal(
        &self,
        principal: &Principal,
        expected: u64,
    ) -> Result<(), StoreError> {
        let mut principal = principal.clone();
        principal.version = expected + 1;
        let json = encode("principal", &principal)?;
        let token = principal.token_hash.to_hex();
        let expected_version = expected.to_string();
        let reply: Vec<Value> = self
            .invoke(
                &self.scripts.update_principal,
                &[&principal.id, &token, &json, &expected_version],
            )
            .await?;
        match status(&reply).as_deref() {
            Some("updated") => Ok(()),
            Some("stale") => Err(stale(
                &format!("principal {}", principal.id),
                expected,
                &reply,
            )),
            Some("missing") => Err(StoreError::Conflict(format!(
                "principal {} does not exist",
                principal.id
            ))),
            Some("token_taken") => Err(token_taken(&principal.id)),
            _ => Err(StoreError::Corrupt(
                "update_principal came back malformed".to_string(),
            )),
        }
    }

    async fn get_principal(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        let json: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.key(&format!("principal:{id}")))
                    .arg("json"),
            )
            .await?;
        json.map(|j| decode(&format!("principal {id}"), &j))
            .transpose()
    }

    async fn principal_by_token(&self, hash: &KeyHash) -> Result<Option<Principal>, StoreError> {
        let hex = hash.to_hex();
        let reply: Option<Vec<String>> = self
            .invoke(&self.scripts.principal_by_token, &[&hex])
            .await?;
        match reply.as_deref() {
            None => Ok(None),
            Some([id, json]) => decode(&format!("principal {id}"), json).map(Some),
            Some([id]) => Err(StoreError::Corrupt(format!(
                "the token index names principal {id}, which does not exist"
            ))),
            Some(_) => Err(StoreError::Corrupt(
                "a token lookup came back malformed".to_string(),
            )),
        }
    }

    async fn list_principals(&self) -> Result<Vec<Principal>, StoreError> {
        let flat: Vec<String> = self.invoke(&self.scripts.list_principals, &[]).await?;
        listing::<2>(&flat, "principal", "principals")?
            .into_iter()
            .map(|[id, json]| decode(&format!("principal {id}"), json))
            .collect()
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let json = encode("audit event", event)?;
        let org = event.org.as_deref().unwrap_or("");
        let stored: i64 = self
            .invoke(&self.scripts.append_audit, &[&event.id, &json, org])
            .await?;
        if stored == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "audit event {} already exists",
                event.id
            )))
        }
    }

    async fn list_audit(
        &self,
        org: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.page(
            "audit event",
            &format!("org_audit:{org}"),
            "audit",
            after,
            limit,
            |id, json, _| decode(&format!("audit event {id}"), json).map(Some),
        )
        .await
    }

    /// One round trip that also checks (or, on an empty Redis, records) the layout
    /// version, so a keygate never works on data written in a layout it cannot read.
    async fn ping(&self) -> Result<(), StoreError> {
        let found: String = self.invoke(&self.scripts.schema, &[SCHEMA_VERSION]).await?;
        if found == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "Redis under namespace {} holds store schema version {found}, this keygate \
                 reads version {SCHEMA_VERSION} (was it written by a newer keygate?)",
                self.prefix
            )))
        }
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let now = Timestamp::now().as_second().to_string();
        let cap = RESOURCES_PER_HOUR.to_string();
        // One script per USAGE_ROWS_PER_CALL rows, one after another: a script holds
        // Redis for every client (other replicas' key lookups too) while it runs. Each
        // part is applied at most once (`scripts::ADD_USAGE`), so a batch sent again
        // after a failure half-way applies only the parts missing.
        let parts = batch.rows.len().div_ceil(USAGE_ROWS_PER_CALL).max(1);
        for (part, rows) in batch.rows.chunks(USAGE_ROWS_PER_CALL).enumerate() {
            let number = part.to_string();
            let last = if part + 1 == parts {
                parts.to_string()
            } else {
                "0".to_string()
            };
            let mut owned: Vec<String> = Vec::new();
            for row in rows {
                let fields = usage_fields(&row.counts);
                owned.push(row.key_id.clone());
                owned.push(row.hour.as_second().to_string());
                owned.push(fields.len().to_string());
                for (f, n) in fields {
                    owned.push(f);
                    owned.push(n.to_string());
                }
            }
            let mut args = vec![
                batch.id.as_str(),
                number.as_str(),
                last.as_str(),
                now.as_str(),
                cap.as_str(),
            ];
            args.extend(owned.iter().map(String::as_str));
            let _applied: i64 = self.invoke(&self.scripts.add_usage, &args).await?;
        }
        Ok(())
    }

    async fn usage(
        &self,
        key_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let (from_s, to_s) = (from.as_second().to_string(), to.as_second().to_string());
        let rows: Vec<Vec<String>> = self
            .invoke(&self.scripts.usage, &[key_id, &from_s, &to_s])
            .await?;
        rows.iter()
            .map(|row| {
                let Some((hour, fields)) = row.split_first() else {
                    return Err(StoreError::Corrupt(format!(
                        "usage of key {key_id} came back malformed"
                    )));
                };
                let hour = hour
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| Timestamp::from_second(s).ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("usage of key {key_id} has a bad hour"))
                    })?;
                Ok(UsageRow {
                    key_id: key_id.to_string(),
                    hour,
                    counts: usage_counts(fields, &format!("usage of key {key_id} at {hour}"))?,
                })
            })
            .collect()
    }

    async fn prune_usage(&self, before: Timestamp) -> Result<u64, StoreError> {
        let before = before.as_second().to_string();
        let forget = (Timestamp::now().as_second() - BATCH_MEMORY_SECS).to_string();
        let pruned: u64 = self
            .invoke(&self.scripts.prune_usage, &[&before, &forget])
            .await?;
        Ok(pruned)
    }

    async fn touch_keys(&self, seen: &[(String, Timestamp)]) -> Result<(), StoreError> {
        // One field write per key inside a script (no read, decode and swap of the
        // record), the calls pipelined on the multiplexed connection.
        let calls = seen.chunks(TOUCH_KEYS_PER_CALL).map(|chunk| {
            let args: Vec<String> = chunk
                .iter()
                .filter_map(|(id, at)| Some([id.clone(), last_used_field(*at)?]))
                .flatten()
                .collect();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.invoke::<i64>(&self.scripts.touch_keys, &args).await
            }
        });
        futures_util::future::try_join_all(calls).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
