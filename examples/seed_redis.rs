//! Fills a Redis store with many API keys for benchmarks (benches/redis_load.sh), writing
//! them through the same `RedisStore::create_key` the admin API uses, so the layout is
//! exactly what keygate reads.
//!
//! ```text
//! cargo run --release --example seed_redis -- URL NAMESPACE ORG COUNT TOKENS_FILE
//! ```
//!
//! Creates org ORG (if missing) and COUNT read keys in it, and writes their tokens, one
//! per line, to TOKENS_FILE (mode 0600). For benchmarks on a test Redis only: the tokens
//! are real secrets of that store. Progress goes to stderr; no token is ever printed.

use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{self, StreamExt};
use jiff::Timestamp;

use keygate::key::{Environment, KeyFormat, KeyPolicy, KeyRecord, Org, new_id};
use keygate::store::{KeyStore, RedisStore, StoreError};

/// Concurrent `create_key` calls: enough to keep the multiplexed connection's pipeline full.
const IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, namespace, org, count, tokens_file] = args.as_slice() else {
        bail!("usage: seed_redis URL NAMESPACE ORG COUNT TOKENS_FILE");
    };
    let count: usize = count.parse().context("COUNT is not a number")?;
    let store = Arc::new(
        RedisStore::open(url, namespace, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let now = Timestamp::now();
    let created = store
        .create_org(&Org {
            id: org.clone(),
            name: org.clone(),
            key_policy: KeyPolicy::default(),
            max_key_lifetime_days: None,
            rate_limit: None,
            created_at: now,
            updated_at: now,
            version: 1,
        })
        .await;
    match created {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(e) => bail!("cannot create org {org}: {e}"),
    }

    let format = KeyFormat::new("kg").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tokens_file)
        .with_context(|| format!("cannot write {tokens_file}"))?;
    let mut out = BufWriter::new(file);
    let started = Instant::now();
    let mut results = stream::iter(0..count)
        .map(|_| {
            let store = store.clone();
            let secret = format.generate(Environment::Live);
            let record = KeyRecord {
                id: new_id("key"),
                org: org.clone(),
                name: "seeded".into(),
                description: None,
                environment: Environment::Live,
                prefix: secret.display_prefix.clone(),
                scopes: vec!["read".into()],
                resources: None,
                endpoints: None,
                ip_allow: None,
                rate_limit: None,
                created_at: now,
                created_by: "prn_seed".into(),
                updated_at: now,
                last_used_at: None,
                expires_at: None,
                revoked_at: None,
                deleted_at: None,
                creator_suspended: false,
                version: 1,
                secret_hash: secret.hash,
                previous_secret: None,
            };
            async move { store.create_key(&record, None).await.map(|_| secret.token) }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0usize;
    while let Some(r) = results.next().await {
        let token = r.map_err(|e| anyhow::anyhow!("create_key failed after {done} keys: {e}"))?;
        writeln!(out, "{token}")?;
        done += 1;
        if done.is_multiple_of(100_000) {
            eprintln!(
                "seed_redis: {done} keys in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    out.flush()?;
    eprintln!(
        "seed_redis: {done} keys in org {org} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
