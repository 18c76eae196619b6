//! Redis-only concerns, on a real `redis-server`: namespaces, URL settings (db,
//! ACL user), the persistence check, outages and recovery, bootstrap across
//! connections, and the bus. Shared behaviour is in `store::conformance`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::*;
use crate::store::conformance::{key, org, principal, ts};
use crate::store::test_redis::RedisServer;
use crate::store::{BusEvent, InvalidationBus};

const IO: Duration = Duration::from_secs(2);

fn open(url: &str, ns: &str) -> RedisStore {
    RedisStore::open(url, ns, IO).unwrap()
}

/// The next bus event, waiting at most `within`.
async fn next(rx: &mut mpsc::Receiver<BusEvent>, within: Duration) -> Option<BusEvent> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// Waits (bounded) until `rx` delivers `want`, skipping other events; returns how long.
async fn wait_for(
    rx: &mut mpsc::Receiver<BusEvent>,
    want: &BusEvent,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(e) = next(rx, within.saturating_sub(start.elapsed())).await
            && &e == want
        {
            return start.elapsed();
        }
    }
    panic!("no {want:?} within {within:?}");
}

#[tokio::test]
async fn namespaces_and_databases_keep_deployments_apart() {
    let server = RedisServer::start();
    let a = open(&server.url(0), "alpha");
    let b = open(&server.url(0), "beta");
    let c = open(&server.url(3), "alpha");
    let k = key(1, "acme", "s1");
    a.create_key(&k, None).await.unwrap();
    assert!(a.key_by_id(&k.id).await.unwrap().is_some());
    assert!(b.key_by_id(&k.id).await.unwrap().is_none());
    assert!(c.key_by_id(&k.id).await.unwrap().is_none());
    // The same id can exist once per namespace.
    b.create_key(&k, None).await.unwrap();
    assert!(server.command(&["EXISTS", &format!("alpha:key:{}", k.id)]) == "1");
    assert!(server.command(&["HLEN", "beta:key_hashes"]) == "1");
}

#[tokio::test]
async fn one_bootstrap_winner_across_separate_connections() {
    let server = RedisServer::start();
    // Separate stores have separate connections, as separate replicas do.
    let stores: Vec<Arc<RedisStore>> = (0..8)
        .map(|_| Arc::new(open(&server.url(0), "keygate")))
        .collect();
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                s.create_first_principal(&principal(n as u64, &format!("t{n}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(stores[0].list_principals().await.unwrap().len(), 1);
}

#[tokio::test]
async fn settings_check_reads_appendonly_or_says_it_cannot() {
    let server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    assert_eq!(
        s.check_server_settings().await.unwrap(),
        ServerSettings::Read {
            appendonly: "no".into(),
            maxmemory_policy: "noeviction".into()
        }
    );
    // The least-privilege user of docs/operations.md, named in the URL; first without
    // `+config|get` (as on many managed services), then with it.
    server.command(&[
        "ACL",
        "SETUSER",
        "gateway",
        "on",
        ">s3cret",
        "~keygate:*",
        "&keygate:*",
        "+@all",
        "-@dangerous",
    ]);
    let url = format!("redis://gateway:s3cret@127.0.0.1:{}/0", server.port);
    let limited = open(&url, "keygate");
    limited.ping().await.unwrap();
    assert_eq!(
        limited.check_server_settings().await.unwrap(),
        ServerSettings::Unreadable("Redis answered NOPERM".into())
    );
    // Everything keygate does works under that user: scripts, reads, the bus.
    let k = key(1, "acme", "s1");
    limited.create_key(&k, None).await.unwrap();
    assert_eq!(
        limited.key_by_hash(&k.secret_hash).await.unwrap(),
        Some(k.clone())
    );
    let mut rx = limited.bus().subscribe();
    wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;
    limited.bus().publish(&inv(&[k.secret_hash])).await.unwrap();
    wait_for(
        &mut rx,
        &BusEvent::Invalidate(inv(&[k.secret_hash])),
        Duration::from_secs(1),
    )
    .await;
    // Outside its namespace it can do nothing (a script refused by the ACL is an ERR).
    let e = open(&url, "other").ping().await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    server.command(&["ACL", "SETUSER", "gateway", "+config|get"]);
    assert!(matches!(
        limited.check_server_settings().await.unwrap(),
        ServerSettings::Read { .. }
    ));
    // A wrong password is an outage of this store, and says nothing about the password.
    let wrong = open(
        &format!("redis://gateway:wrong@127.0.0.1:{}/0", server.port),
        "keygate",
    );
    let e = wrong.ping().await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(!e.to_string().contains("wrong"), "{e}");
}

#[tokio::test]
async fn a_newer_layout_is_refused() {
    let server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    s.ping().await.unwrap();
    assert_eq!(
        server.command(&["HGET", "keygate:meta", "schema_version"]),
        "1"
    );
    server.command(&["HSET", "keygate:meta", "schema_version", "99"]);
    let e = s.ping().await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains("version 99"), "{e}");
}

#[tokio::test]
async fn a_touch_writes_one_field_and_never_the_record() {
    let server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    // As a keygate from before the `last_used` field left it: the time in the JSON.
    let mut k = key(1, "acme", "s1");
    let before = ts("2024-05-01T09:00:00Z");
    k.last_used_at = Some(before);
    s.create_key(&k, None).await.unwrap();
    let hk = format!("keygate:key:{}", k.id);
    let json = server.command(&["HGET", &hk, "json"]);
    let version = server.command(&["HGET", &hk, "version"]);
    let last_used = async || {
        let by_hash = s.key_by_hash(&k.secret_hash).await.unwrap().unwrap();
        let by_id = s.key_by_id(&k.id).await.unwrap().unwrap();
        let listed = s.list_keys("acme", None, 10).await.unwrap().items;
        let created = s.keys_created_by(&k.created_by).await.unwrap();
        let all = [by_hash, by_id, listed[0].clone(), created[0].clone()];
        assert!(all.iter().all(|r| r.last_used_at == all[0].last_used_at));
        all[0].last_used_at
    };

    // An earlier use does not move the JSON's later time back.
    s.touch_keys(&[(k.id.clone(), ts("2024-05-01T08:00:00Z"))])
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(before));
    // A later one moves it, in every read, to the nanosecond.
    let later = ts("2024-05-01T10:00:00.123456789Z");
    s.touch_keys(&[(k.id.clone(), later), ("key_unknown".into(), later)])
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(later));
    assert_eq!(
        server.command(&["HGET", &hk, "last_used"]),
        later.as_nanosecond().to_string()
    );
    // The record itself is untouched: an admin write read before the touch still lands.
    assert_eq!(server.command(&["HGET", &hk, "json"]), json);
    assert_eq!(server.command(&["HGET", &hk, "version"]), version);
    assert_eq!(server.command(&["EXISTS", "keygate:key:key_unknown"]), "0");
    // Only forward, also across a change of digit count in the field.
    s.touch_keys(&[(k.id.clone(), ts("2001-09-09T01:46:39Z"))])
        .await
        .unwrap();
    assert_eq!(last_used().await, Some(later));

    // A field that is not a time fails closed and names the key, not the content.
    server.command(&["HSET", &hk, "last_used", "soon"]);
    let e = s.key_by_id(&k.id).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    assert!(e.to_string().contains(&k.id), "{e}");
    assert!(!e.to_string().contains("soon"), "{e}");
    // A record deleted from Redis gets no field back.
    server.command(&["DEL", &hk]);
    s.touch_keys(&[(k.id.clone(), later)]).await.unwrap();
    assert_eq!(server.command(&["EXISTS", &hk]), "0");
}

#[tokio::test]
async fn a_large_usage_batch_goes_in_parts_each_applied_once() {
    use crate::store::usage::{UsageBatch, UsageCounts, UsageRow};
    let server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    let hour = ts("2024-05-01T10:00:00Z");
    let rows: Vec<UsageRow> = (0..USAGE_ROWS_PER_CALL * 2 + 50)
        .map(|n| UsageRow {
            key_id: format!("key_{n:04}"),
            hour,
            counts: UsageCounts {
                requests: 1,
                ..Default::default()
            },
        })
        .collect();
    let batch = UsageBatch {
        id: "usb_one".into(),
        rows,
    };
    s.add_usage(&batch).await.unwrap();
    // Applied whole: one mark, whatever the number of parts.
    let marks = || server.command(&["ZRANGE", "keygate:usage_batches", "0", "-1"]);
    assert_eq!(marks(), "usb_one");
    // As if the last part's call had never reached Redis (the marks the first two
    // parts leave): sent again, only the last part applies.
    server.command(&["DEL", "keygate:usage_batches"]);
    server.command(&[
        "ZADD",
        "keygate:usage_batches",
        "1",
        "usb_one.0",
        "1",
        "usb_one.1",
    ]);
    s.add_usage(&batch).await.unwrap();
    assert_eq!(marks(), "usb_one");
    // And once more: nothing applies.
    s.add_usage(&batch).await.unwrap();
    let requests = |n: usize| {
        let k = format!("key_{n:04}");
        server.command(&[
            "HGET",
            &format!("keygate:usage:{k}:{}", hour.as_second()),
            "requests",
        ])
    };
    assert_eq!(requests(0), "1");
    assert_eq!(requests(USAGE_ROWS_PER_CALL * 2 - 1), "1");
    assert_eq!(requests(USAGE_ROWS_PER_CALL * 2), "2");
    // A row's hour is indexed once, however many batches add to it.
    let keys_of_hour = format!("keygate:usage_keys:{}", hour.as_second());
    assert_eq!(
        server.command(&["SCARD", &keys_of_hour]),
        (USAGE_ROWS_PER_CALL * 2 + 50).to_string()
    );
    assert_eq!(
        server.command(&["ZCARD", "keygate:usage_hours:key_0000"]),
        "1"
    );

    // A row an older keygate also indexed in `usage_all` is pruned once, from both.
    let old = format!("{}:key_0000", hour.as_second());
    server.command(&[
        "ZADD",
        "keygate:usage_all",
        &hour.as_second().to_string(),
        &old,
    ]);
    let pruned = s.prune_usage(ts("2024-05-01T11:00:00Z")).await.unwrap();
    assert_eq!(pruned, (USAGE_ROWS_PER_CALL * 2 + 50) as u64);
    for index in ["usage_all", "usage_index_hours", "usage_hours:key_0000"] {
        assert_eq!(
            server.command(&["ZCARD", &format!("keygate:{index}")]),
            "0",
            "{index}"
        );
    }
    assert_eq!(server.command(&["EXISTS", &keys_of_hour]), "0");
    assert_eq!(requests(0), "");
}

#[tokio::test]
async fn a_dangling_index_entry_fails_closed() {
    let server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    let k = key(1, "acme", "s1");
    s.create_key(&k, None).await.unwrap();
    server.command(&["DEL", &format!("keygate:key:{}", k.id)]);
    let e = s.key_by_hash(&k.secret_hash).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
}

#[tokio::test]
async fn outage_fails_fast_and_recovers_by_itself() {
    let mut server = RedisServer::start();
    let s = open(&server.url(0), "keygate");
    let k = key(1, "acme", "s1");
    s.create_key(&k, None).await.unwrap();

    server.stop();
    for _ in 0..20 {
        let started = Instant::now();
        let e = s.key_by_hash(&k.secret_hash).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        assert!(
            started.elapsed() < IO,
            "a down Redis is reported, not waited on"
        );
    }

    // Persistence is off in tests, so the restarted server is empty; the point is that
    // the store reconnects by itself, within the breaker's bounded pause.
    server.restart();
    let started = Instant::now();
    loop {
        if s.ping().await.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "store reconnected {:?} after Redis restarted",
        started.elapsed()
    );
    s.create_org(&org("acme")).await.unwrap();
}

fn inv(hashes: &[KeyHash]) -> Vec<crate::store::Invalidation> {
    hashes
        .iter()
        .map(|h| crate::store::Invalidation::Key {
            hash: *h,
            version: None,
        })
        .collect()
}

#[tokio::test]
async fn bus_carries_invalidations_between_replicas() {
    let server = RedisServer::start();
    let a = open(&server.url(0), "keygate").bus();
    let b = open(&server.url(0), "keygate").bus();
    let mut rx = b.subscribe();
    let took = wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;
    println!("bus connected after {took:?}");

    let hashes = vec![KeyHash::of("x"), KeyHash::of("y")];
    let sent = Instant::now();
    a.publish(&inv(&hashes)).await.unwrap();
    wait_for(
        &mut rx,
        &BusEvent::Invalidate(inv(&hashes)),
        Duration::from_secs(1),
    )
    .await;
    println!("invalidation crossed the bus in {:?}", sent.elapsed());

    // A namespace hears only its own channel.
    let other = open(&server.url(0), "other").bus();
    other.publish(&inv(&[KeyHash::of("z")])).await.unwrap();
    let unrelated = Duration::from_millis(300);
    let start = Instant::now();
    while start.elapsed() < unrelated {
        if let Some(BusEvent::Invalidate(h)) = next(&mut rx, unrelated).await {
            panic!("heard another namespace: {} hashes", h.len());
        }
    }
}

#[tokio::test]
async fn bus_reports_a_killed_subscription_and_resubscribes() {
    let server = RedisServer::start();
    let bus = open(&server.url(0), "keygate").bus();
    let mut rx = bus.subscribe();
    wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;

    let killed = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed, "1");
    let lost = wait_for(&mut rx, &BusEvent::Lost, Duration::from_secs(2)).await;
    let back = wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;
    println!("pub/sub killed: Lost after {lost:?}, Connected {back:?} later");

    // And it still carries messages.
    let h = inv(&[KeyHash::of("after")]);
    bus.publish(&h).await.unwrap();
    wait_for(&mut rx, &BusEvent::Invalidate(h), Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bus_reports_a_redis_outage_and_recovers() {
    let mut server = RedisServer::start();
    let bus = open(&server.url(0), "keygate").bus();
    let mut rx = bus.subscribe();
    wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;

    server.stop();
    let lost = wait_for(&mut rx, &BusEvent::Lost, Duration::from_secs(2)).await;
    // Down for a while: no event at all (no Lost/Connected flapping while it is down).
    assert_eq!(next(&mut rx, Duration::from_millis(1500)).await, None);

    server.restart();
    let back = wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(10)).await;
    println!("Redis stopped: Lost after {lost:?}; restarted: Connected after {back:?}");
}

#[tokio::test]
async fn bus_reports_a_frozen_redis_by_its_missing_heartbeat() {
    let server = RedisServer::start();
    let bus = open(&server.url(0), "keygate").bus();
    let mut rx = bus.subscribe();
    wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;
    // The connection stays open but nothing moves: only the heartbeat can tell.
    server.command(&["CLIENT", "PAUSE", "2500", "ALL"]);
    let lost = wait_for(&mut rx, &BusEvent::Lost, Duration::from_secs(3)).await;
    assert!(lost >= Duration::from_millis(900), "{lost:?}");
    let back = wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(10)).await;
    println!("Redis paused: Lost after {lost:?}, Connected {back:?} later");
}

/// Polls `f` every 50 ms until it returns true, at most `within`.
async fn eventually(within: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_finds_the_master_and_follows_a_failover() {
    let master = RedisServer::start();
    let replica = RedisServer::start_replica_of(master.port);
    let sentinel = RedisServer::start_sentinel(master.port, "kgmaster");
    eventually(
        Duration::from_secs(15),
        "the Sentinel sees the replica",
        async || {
            sentinel
                .try_command(&["SENTINEL", "REPLICAS", "kgmaster"])
                .is_ok_and(|r| r.contains(&replica.port.to_string()))
        },
    )
    .await;

    let url = format!("redis+sentinel://127.0.0.1:{}/kgmaster/0", sentinel.port);
    let s = open(&url, "keygate");
    assert!(s.describe().contains("kgmaster"));
    let k = key(1, "acme", "s1");
    s.create_key(&k, None).await.unwrap();
    assert_eq!(
        master.command(&["HLEN", "keygate:key_hashes"]),
        "1",
        "written to the master"
    );
    let bus = s.bus();
    let mut rx = bus.subscribe();
    wait_for(&mut rx, &BusEvent::Connected, Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(10),
        "the replica has the key",
        async || {
            replica
                .try_command(&["HLEN", "keygate:key_hashes"])
                .is_ok_and(|r| r == "1")
        },
    )
    .await;

    sentinel.command(&["SENTINEL", "FAILOVER", "kgmaster"]);
    let new_master = replica.port.to_string();
    eventually(
        Duration::from_secs(15),
        "the Sentinel names the new master",
        async || {
            sentinel
                .try_command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "kgmaster"])
                .is_ok_and(|r| r.ends_with(&new_master))
        },
    )
    .await;
    // Until Sentinel has demoted the old master it still accepts writes, and they are
    // lost when it resyncs as a replica: the window `min-replicas-to-write` closes
    // (docs/operations.md). Past it, the old master answers READONLY.
    eventually(
        Duration::from_secs(15),
        "the old master is demoted",
        // (A busy machine may drop a connection while the old master resyncs.)
        async || {
            master
                .try_command(&["ROLE"])
                .is_ok_and(|r| r.starts_with("slave"))
        },
    )
    .await;
    let failed_over = Instant::now();
    // Writes go to the new master once keygate has noticed.
    eventually(
        Duration::from_secs(15),
        "a write after the failover",
        async || s.create_org(&org("acme")).await.is_ok(),
    )
    .await;
    println!(
        "writes resumed {:?} after the failover",
        failed_over.elapsed()
    );
    assert_eq!(replica.command(&["HEXISTS", "keygate:orgs", "acme"]), "1");
    assert_eq!(
        s.key_by_hash(&k.secret_hash).await.unwrap(),
        Some(k.clone())
    );
    // And invalidations still reach the subscriber.
    let h = inv(&[KeyHash::of("after failover")]);
    eventually(
        Duration::from_secs(10),
        "an invalidation after the failover",
        async || {
            let _ = bus.publish(&h).await;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(300) {
                if next(&mut rx, Duration::from_millis(300)).await
                    == Some(BusEvent::Invalidate(h.clone()))
                {
                    return true;
                }
            }
            false
        },
    )
    .await;
}
