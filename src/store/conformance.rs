//! The behaviour every [`KeyStore`] backend must have, as one test set run against each
//! backend (the embedded store, and the Redis store on a real `redis-server`), so that
//! the backends cannot drift apart. A new store behaviour gets its test here; a test of
//! one backend's own concerns (file damage, Redis outages) stays with that backend.

use std::sync::Arc;

use jiff::Timestamp;

use super::{CreateOutcome, KeyStore, StoreError, UsageBatch, UsageCounts, UsageRow};
use crate::key::{AuditEvent, KeyHash, KeyRecord, Org, OrgScope, PreviousSecret, Principal, Role};

pub(super) fn id(kind: &str, n: u64) -> String {
    let ulid = ulid::Ulid::from_parts(1_700_000_000_000 + n, 7);
    format!("{kind}_{}", ulid.to_string().to_lowercase())
}

pub(super) fn key(n: u64, org: &str, secret: &str) -> KeyRecord {
    KeyRecord {
        id: id("key", n),
        org: org.to_string(),
        name: format!("key {n}"),
        created_by: "prn_creator".to_string(),
        ..KeyRecord::sample(KeyHash::of(secret))
    }
}

pub(super) fn org(id: &str) -> Org {
    let now = Timestamp::now();
    Org {
        id: id.to_string(),
        name: format!("Org {id}"),
        key_policy: Default::default(),
        max_key_lifetime_days: None,
        rate_limit: None,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

pub(super) fn principal(n: u64, token: &str) -> Principal {
    Principal {
        id: id("prn", n),
        name: format!("admin {n}"),
        role: Role::Owner,
        orgs: OrgScope::All,
        api_access: true,
        disabled: false,
        created_at: Timestamp::now(),
        deleted_at: None,
        token_hash: KeyHash::of(token),
        version: 1,
    }
}

pub(super) fn event(n: u64, org: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: id("aud", n),
        at: Timestamp::from_second(1_700_000_000 + n as i64).unwrap(),
        actor: "prn_creator".to_string(),
        org: org.map(str::to_string),
        action: "key.create".to_string(),
        target: None,
        details: serde_json::json!({}),
    }
}

/// Stores `k` over its current version, as the admin write path does, and moves `k` to
/// the version written.
async fn update(s: &Arc<dyn KeyStore>, k: &mut KeyRecord) -> Result<(), StoreError> {
    s.update_key(k, k.version).await?;
    k.version += 1;
    Ok(())
}

async fn hash_owner(s: &Arc<dyn KeyStore>, secret: &str) -> Option<String> {
    s.key_by_hash(&KeyHash::of(secret))
        .await
        .unwrap()
        .map(|k| k.id)
}

/// Every page of a listing, following `next` (bounded).
async fn all_pages(s: &Arc<dyn KeyStore>, org: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let page = s.list_keys(org, after.as_deref(), limit).await.unwrap();
        pages.push(page.items.iter().map(|k| k.id.clone()).collect());
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), page.items.last().map(|k| &k.id));
                after = Some(next);
            }
            None => return pages,
        }
    }
    panic!("listing did not end");
}

async fn keys_round_trip(s: Arc<dyn KeyStore>) {
    let k = key(1, "acme", "secret-1");
    assert_eq!(
        s.create_key(&k, None).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(s.key_by_id(&k.id).await.unwrap(), Some(k.clone()));
    assert_eq!(
        s.key_by_hash(&k.secret_hash).await.unwrap(),
        Some(k.clone())
    );
    assert_eq!(s.key_by_id("key_missing").await.unwrap(), None);
    assert_eq!(hash_owner(&s, "unknown").await, None);

    let again = s.create_key(&k, None).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    let mut edited = k.clone();
    edited.name = "renamed".to_string();
    edited.scopes = vec!["write".to_string()];
    update(&s, &mut edited).await.unwrap();
    assert_eq!(edited.version, 2);
    assert_eq!(s.key_by_id(&k.id).await.unwrap(), Some(edited));

    let missing = s.update_key(&key(2, "acme", "secret-2"), 1).await;
    assert!(
        matches!(missing, Err(StoreError::Conflict(_))),
        "{missing:?}"
    );
    assert_eq!(hash_owner(&s, "secret-2").await, None);
    s.ping().await.unwrap();
}

async fn regenerate_keeps_the_hash_index_in_step(s: Arc<dyn KeyStore>) {
    let mut k = key(1, "acme", "old");
    s.create_key(&k, None).await.unwrap();

    // Regenerate with grace: both secrets resolve.
    k.secret_hash = KeyHash::of("new");
    k.previous_secret = Some(PreviousSecret {
        hash: KeyHash::of("old"),
        expires_at: Timestamp::now(),
    });
    update(&s, &mut k).await.unwrap();
    assert_eq!(hash_owner(&s, "new").await, Some(k.id.clone()));
    assert_eq!(hash_owner(&s, "old").await, Some(k.id.clone()));

    // Grace over: the previous secret stops resolving.
    k.previous_secret = None;
    update(&s, &mut k).await.unwrap();
    assert_eq!(hash_owner(&s, "old").await, None);
    assert_eq!(hash_owner(&s, "new").await, Some(k.id.clone()));

    // Regenerate without grace: the new secret replaces the current one.
    k.secret_hash = KeyHash::of("newer");
    update(&s, &mut k).await.unwrap();
    assert_eq!(hash_owner(&s, "new").await, None);
    assert_eq!(hash_owner(&s, "newer").await, Some(k.id.clone()));

    // A secret of another key is never taken over.
    let other = key(2, "acme", "other");
    s.create_key(&other, None).await.unwrap();
    k.secret_hash = KeyHash::of("other");
    let stolen = s.update_key(&k, k.version).await;
    assert!(matches!(stolen, Err(StoreError::Conflict(_))), "{stolen:?}");
    assert_eq!(hash_owner(&s, "other").await, Some(other.id));
    assert_eq!(hash_owner(&s, "newer").await, Some(k.id.clone()));
}

async fn listing_is_newest_first_paginated_and_skips_deleted(s: Arc<dyn KeyStore>) {
    for n in 1..=9 {
        s.create_key(&key(n, "acme", &format!("s{n}")), None)
            .await
            .unwrap();
    }
    // An org whose id extends "acme" must not leak into its listing.
    s.create_key(&key(20, "acme2", "t1"), None).await.unwrap();
    s.create_key(&key(21, "acm", "t2"), None).await.unwrap();
    for n in [3, 9] {
        let mut k = key(n, "acme", &format!("s{n}"));
        k.deleted_at = Some(Timestamp::now());
        update(&s, &mut k).await.unwrap();
    }
    // Deleted keys stay readable by id and hash.
    assert!(s.key_by_id(&id("key", 3)).await.unwrap().is_some());
    assert_eq!(hash_owner(&s, "s9").await, Some(id("key", 9)));

    let expected: Vec<String> = [8, 7, 6, 5, 4, 2, 1]
        .iter()
        .map(|n| id("key", *n))
        .collect();
    let pages = all_pages(&s, "acme", 3).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages.concat(), expected);
    // A last page that is exactly full has no `next`.
    let pages = all_pages(&s, "acme", 7).await;
    assert_eq!(pages, vec![expected.clone()]);
    let pages = all_pages(&s, "acme", 1).await;
    assert_eq!(pages.len(), 7);
    assert_eq!(pages.concat(), expected);

    assert_eq!(all_pages(&s, "acme2", 10).await, vec![vec![id("key", 20)]]);
    assert_eq!(
        all_pages(&s, "nobody", 10).await,
        vec![Vec::<String>::new()]
    );
}

async fn idempotency_key_replays_within_its_org(s: Arc<dyn KeyStore>) {
    let first = key(1, "acme", "s1");
    let second = key(2, "acme", "s2");
    assert_eq!(
        s.create_key(&first, Some("idem-1")).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        s.create_key(&second, Some("idem-1")).await.unwrap(),
        CreateOutcome::IdempotencyReplay {
            existing_id: first.id.clone()
        }
    );
    assert_eq!(s.key_by_id(&second.id).await.unwrap(), None);
    assert_eq!(hash_owner(&s, "s2").await, None);

    let elsewhere = key(3, "other", "s3");
    assert_eq!(
        s.create_key(&elsewhere, Some("idem-1")).await.unwrap(),
        CreateOutcome::Created
    );
}

async fn keys_are_found_by_creator(s: Arc<dyn KeyStore>) {
    let mut a = key(1, "acme", "s1");
    a.created_by = "prn_a".to_string();
    let mut b = key(2, "acme", "s2");
    b.created_by = "prn_ab".to_string();
    s.create_key(&a, None).await.unwrap();
    s.create_key(&b, None).await.unwrap();
    let found = s.keys_created_by("prn_a").await.unwrap();
    assert_eq!(found, vec![a]);
    assert!(s.keys_created_by("prn_z").await.unwrap().is_empty());
}

async fn orgs_round_trip(s: Arc<dyn KeyStore>) {
    s.create_org(&org("acme")).await.unwrap();
    s.create_org(&org("beta")).await.unwrap();
    let dup = s.create_org(&org("acme")).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let mut acme = org("acme");
    acme.name = "Acme Ltd".to_string();
    acme.max_key_lifetime_days = Some(90);
    s.update_org(&acme, 1).await.unwrap();
    acme.version = 2;
    assert_eq!(s.get_org("acme").await.unwrap(), Some(acme));
    assert_eq!(s.get_org("nope").await.unwrap(), None);
    let missing = s.update_org(&org("nope"), 1).await;
    assert!(
        matches!(missing, Err(StoreError::Conflict(_))),
        "{missing:?}"
    );

    let ids: Vec<String> = s
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
}

async fn exactly_one_first_principal_wins_a_race(s: Arc<dyn KeyStore>) {
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.create_first_principal(&principal(n, &format!("t{n}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    let all = s.list_principals().await.unwrap();
    assert_eq!(all.len(), 1);
    let token = all[0].token_hash;
    assert_eq!(
        s.principal_by_token(&token).await.unwrap(),
        Some(all[0].clone())
    );
}

async fn rotated_principal_token_stops_resolving_at_once(s: Arc<dyn KeyStore>) {
    let mut p = principal(1, "token-a");
    s.create_principal(&p).await.unwrap();
    assert_eq!(
        s.principal_by_token(&KeyHash::of("token-a")).await.unwrap(),
        Some(p.clone())
    );
    let again = s.create_principal(&p).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    p.token_hash = KeyHash::of("token-b");
    s.update_principal(&p, 1).await.unwrap();
    p.version = 2;
    assert_eq!(
        s.principal_by_token(&KeyHash::of("token-a")).await.unwrap(),
        None
    );
    assert_eq!(
        s.principal_by_token(&KeyHash::of("token-b")).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(s.get_principal(&p.id).await.unwrap(), Some(p.clone()));

    // Another principal cannot take that token.
    let clash = s.create_principal(&principal(2, "token-b")).await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert_eq!(s.get_principal(&id("prn", 2)).await.unwrap(), None);

    // Editing without rotating keeps the token.
    p.disabled = true;
    s.update_principal(&p, 2).await.unwrap();
    p.version = 3;
    assert_eq!(
        s.principal_by_token(&KeyHash::of("token-b")).await.unwrap(),
        Some(p)
    );
    assert!(!s.create_first_principal(&principal(3, "t3")).await.unwrap());
}

/// Compare-and-swap: a change derived from an older version is refused, typed, and
/// changes nothing (not the record, not an index); the current version is accepted.
async fn a_stale_version_is_refused_and_changes_nothing(s: Arc<dyn KeyStore>) {
    let mut k = key(1, "acme", "s1");
    s.create_key(&k, None).await.unwrap();
    let stale = k.clone();
    k.revoked_at = Some(Timestamp::now());
    update(&s, &mut k).await.unwrap();

    // A regenerate derived from version 1 must not bring the key back, nor index its
    // new secret.
    let mut undo = stale.clone();
    undo.secret_hash = KeyHash::of("s2");
    let e = s.update_key(&undo, stale.version).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::VersionConflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(s.key_by_id(&k.id).await.unwrap(), Some(k.clone()));
    assert_eq!(hash_owner(&s, "s2").await, None);
    assert_eq!(hash_owner(&s, "s1").await, Some(k.id.clone()));
    // A version from the future is no better.
    let e = s.update_key(&k, 7).await.unwrap_err();
    assert!(matches!(e, StoreError::VersionConflict { .. }), "{e:?}");

    // touch_keys changes no version: a change derived from the current one still lands.
    s.touch_keys(&[(k.id.clone(), Timestamp::now())])
        .await
        .unwrap();
    k.name = "renamed".into();
    update(&s, &mut k).await.unwrap();
    assert_eq!(s.key_by_id(&k.id).await.unwrap().unwrap().version, 3);

    let mut o = org("acme");
    s.create_org(&o).await.unwrap();
    o.name = "first".into();
    s.update_org(&o, 1).await.unwrap();
    o.name = "second".into();
    let e = s.update_org(&o, 1).await.unwrap_err();
    assert!(
        matches!(e, StoreError::VersionConflict { found: 2, .. }),
        "{e:?}"
    );
    assert_eq!(s.get_org("acme").await.unwrap().unwrap().name, "first");

    let mut p = principal(1, "t1");
    s.create_principal(&p).await.unwrap();
    p.disabled = true;
    s.update_principal(&p, 1).await.unwrap();
    let mut rotate = principal(1, "t2");
    rotate.disabled = false;
    let e = s.update_principal(&rotate, 1).await.unwrap_err();
    assert!(
        matches!(e, StoreError::VersionConflict { found: 2, .. }),
        "{e:?}"
    );
    let stored = s.get_principal(&p.id).await.unwrap().unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.version, 2);
    assert_eq!(
        s.principal_by_token(&KeyHash::of("t2")).await.unwrap(),
        None
    );
    assert!(
        s.principal_by_token(&KeyHash::of("t1"))
            .await
            .unwrap()
            .is_some()
    );
}

/// `key_policy: creator`: the lookup derives suspension from the creator's current state
/// in the same read, without any write to the key.
async fn the_lookup_derives_creator_suspension(s: Arc<dyn KeyStore>) {
    let mut o = org("acme");
    o.key_policy = crate::key::KeyPolicy::Creator;
    s.create_org(&o).await.unwrap();
    s.create_org(&org("plain")).await.unwrap();
    let mut p = principal(1, "t1");
    s.create_principal(&p).await.unwrap();
    let mut k = key(1, "acme", "s1");
    k.created_by = p.id.clone();
    let mut other = key(2, "plain", "s2");
    other.created_by = p.id.clone();
    let mut orphan = key(3, "acme", "s3");
    orphan.created_by = "prn_gone".into();
    for k in [&k, &other, &orphan] {
        s.create_key(k, None).await.unwrap();
    }
    let suspended = async |secret: &str| {
        s.key_by_hash(&KeyHash::of(secret))
            .await
            .unwrap()
            .unwrap()
            .creator_suspended
    };
    assert!(!suspended("s1").await);
    assert!(
        suspended("s3").await,
        "a creator that does not exist counts as deleted"
    );

    p.disabled = true;
    s.update_principal(&p, 1).await.unwrap();
    assert!(suspended("s1").await);
    assert!(!suspended("s2").await, "key_policy: org keeps keys working");

    p.disabled = false;
    s.update_principal(&p, 2).await.unwrap();
    assert!(!suspended("s1").await);
    p.deleted_at = Some(Timestamp::now());
    s.update_principal(&p, 3).await.unwrap();
    assert!(suspended("s1").await);

    o.key_policy = crate::key::KeyPolicy::Org;
    s.update_org(&o, 1).await.unwrap();
    assert!(!suspended("s1").await);
    // Never stored: the record read by id has no trace of it.
    k.version = 1;
    assert_eq!(s.key_by_id(&k.id).await.unwrap(), Some(k));
}

async fn audit_is_listed_per_org_newest_first(s: Arc<dyn KeyStore>) {
    for n in 1..=5 {
        s.append_audit(&event(n, Some("acme"))).await.unwrap();
    }
    s.append_audit(&event(6, Some("beta"))).await.unwrap();
    s.append_audit(&event(7, None)).await.unwrap();
    let dup = s.append_audit(&event(1, Some("acme"))).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = s.list_audit("acme", after.as_deref(), 2).await.unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (1..=5).rev().map(|n| id("aud", n)).collect();
    assert_eq!(seen, expected);
    let beta = s.list_audit("beta", None, 10).await.unwrap();
    assert_eq!(beta.items, vec![event(6, Some("beta"))]);
    assert!(beta.next.is_none());
}

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn usage_row(key: &str, hour: &str, requests: u64, resources: &[(&str, u64)]) -> UsageRow {
    UsageRow {
        key_id: key.to_string(),
        hour: ts(hour),
        counts: UsageCounts {
            requests,
            successes: requests,
            routes: [("r".to_string(), requests)].into_iter().collect(),
            resources: resources.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..UsageCounts::default()
        },
    }
}

async fn usage_adds_up_per_key_and_hour_and_a_batch_applies_once(s: Arc<dyn KeyStore>) {
    let first = UsageBatch {
        id: "usb_1".into(),
        rows: vec![
            usage_row("key_a", "2024-05-01T10:00:00Z", 3, &[("flow:x", 3)]),
            usage_row("key_a", "2024-05-01T11:00:00Z", 1, &[]),
            usage_row("key_b", "2024-05-01T10:00:00Z", 7, &[]),
        ],
    };
    s.add_usage(&first).await.unwrap();
    // A retried batch (same id) is not counted again.
    s.add_usage(&first).await.unwrap();
    let second = UsageBatch {
        id: "usb_2".into(),
        rows: vec![usage_row(
            "key_a",
            "2024-05-01T10:00:00Z",
            2,
            &[("flow:x", 1), ("flow:y", 1)],
        )],
    };
    s.add_usage(&second).await.unwrap();

    let rows = s
        .usage(
            "key_a",
            ts("2024-05-01T00:00:00Z"),
            ts("2024-05-02T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].hour, ts("2024-05-01T10:00:00Z"));
    assert_eq!(rows[0].counts.requests, 5);
    assert_eq!(rows[0].counts.routes["r"], 5);
    assert_eq!(rows[0].counts.resources["flow:x"], 4);
    assert_eq!(rows[0].counts.resources["flow:y"], 1);
    assert_eq!(rows[1].counts.requests, 1);
    // `to` is exclusive; other keys are not mixed in.
    let rows = s
        .usage(
            "key_a",
            ts("2024-05-01T10:00:00Z"),
            ts("2024-05-01T11:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        s.usage(
            "key_c",
            ts("2024-01-01T00:00:00Z"),
            ts("2025-01-01T00:00:00Z")
        )
        .await
        .unwrap()
        .is_empty()
    );
}

async fn an_hour_keeps_its_top_resources_and_the_rest_under_other(s: Arc<dyn KeyStore>) {
    let many: Vec<(String, u64)> = (0..150).map(|i| (format!("feed:{i}"), i + 1)).collect();
    let refs: Vec<(&str, u64)> = many.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let total: u64 = refs.iter().map(|(_, n)| n).sum();
    s.add_usage(&UsageBatch {
        id: "usb_1".into(),
        rows: vec![usage_row("key_a", "2024-05-01T10:00:00Z", total, &refs)],
    })
    .await
    .unwrap();
    let rows = s
        .usage(
            "key_a",
            ts("2024-05-01T00:00:00Z"),
            ts("2024-05-02T00:00:00Z"),
        )
        .await
        .unwrap();
    let res = &rows[0].counts.resources;
    assert_eq!(res.len(), 101);
    assert!(res.contains_key("feed:149") && !res.contains_key("feed:0"));
    assert_eq!(res.values().sum::<u64>(), total);
    assert_eq!(res["other"], (1..=50).sum::<u64>());
}

async fn old_usage_is_pruned(s: Arc<dyn KeyStore>) {
    s.add_usage(&UsageBatch {
        id: "usb_1".into(),
        rows: vec![
            usage_row("key_a", "2024-01-01T10:00:00Z", 1, &[]),
            usage_row("key_b", "2024-01-01T11:00:00Z", 1, &[]),
            usage_row("key_a", "2024-04-01T10:00:00Z", 1, &[]),
        ],
    })
    .await
    .unwrap();
    let pruned = s.prune_usage(ts("2024-01-01T11:00:00Z")).await.unwrap();
    assert_eq!(pruned, 1);
    let all = |k: &'static str| {
        let s = &s;
        async move {
            s.usage(k, ts("2000-01-01T00:00:00Z"), ts("2100-01-01T00:00:00Z"))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(all("key_a").await, 1);
    assert_eq!(all("key_b").await, 1);
    assert_eq!(s.prune_usage(ts("2024-01-01T11:00:00Z")).await.unwrap(), 0);
}

async fn touch_moves_last_used_forward_only_and_an_edit_cannot_move_it_back(s: Arc<dyn KeyStore>) {
    let k = key(1, "acme", "s1");
    s.create_key(&k, None).await.unwrap();
    let t1 = ts("2024-05-01T10:00:00Z");
    let t0 = ts("2024-05-01T09:00:00Z");
    s.touch_keys(&[(k.id.clone(), t1), ("key_unknown".into(), t1)])
        .await
        .unwrap();
    s.touch_keys(&[(k.id.clone(), t0)]).await.unwrap();
    let stored = s.key_by_id(&k.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at, Some(t1));
    assert_eq!(stored.name, k.name);
    // An admin edit made from a copy read before the touch keeps the later time.
    let mut edited = k.clone();
    edited.name = "renamed".into();
    s.update_key(&edited, edited.version).await.unwrap();
    let stored = s.key_by_id(&k.id).await.unwrap().unwrap();
    assert_eq!(stored.name, "renamed");
    assert_eq!(stored.last_used_at, Some(t1));
}

/// Runs each named behaviour against a fresh store of every backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::embedded();
                    super::$name(store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_server, store) = super::redis();
                    super::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    keys_round_trip,
    regenerate_keeps_the_hash_index_in_step,
    listing_is_newest_first_paginated_and_skips_deleted,
    idempotency_key_replays_within_its_org,
    keys_are_found_by_creator,
    orgs_round_trip,
    exactly_one_first_principal_wins_a_race,
    rotated_principal_token_stops_resolving_at_once,
    audit_is_listed_per_org_newest_first,
    usage_adds_up_per_key_and_hour_and_a_batch_applies_once,
    an_hour_keeps_its_top_resources_and_the_rest_under_other,
    old_usage_is_pruned,
    touch_moves_last_used_forward_only_and_an_edit_cannot_move_it_back,
    a_stale_version_is_refused_and_changes_nothing,
    the_lookup_derives_creator_suspension,
);

fn embedded() -> (tempfile::TempDir, Arc<dyn KeyStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = super::EmbeddedStore::open(&dir.path().join("data").join("keygate.db")).unwrap();
    (dir, Arc::new(store))
}

/// A fresh `redis-server` per test (killed when the guard drops), and a store on db 0
/// under a namespace other than the default, so the prefix is exercised too.
fn redis() -> (super::test_redis::RedisServer, Arc<dyn KeyStore>) {
    let server = super::test_redis::RedisServer::start();
    let store =
        super::RedisStore::open(&server.url(0), "kgtest", std::time::Duration::from_secs(2))
            .unwrap();
    (server, Arc::new(store))
}
