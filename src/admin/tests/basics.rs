//! Health, readiness, metrics, admin authentication, error shapes and bootstrap.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::json;

use super::Harness;
use crate::admin::auth::{AdminToken, is_admin_token};
use crate::admin::{BootstrapOutcome, bootstrap, metrics_router};
use crate::key::Environment;
use crate::metrics::Metrics;
use crate::store::{EmbeddedStore, KeyStore};

#[tokio::test]
async fn healthz_readyz_and_metrics_need_no_token() {
    let h = Harness::start().await;
    let r = h.raw(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "ok"})));

    let r = h.raw(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(r.status, 503);
    h.ready.store(true, Ordering::SeqCst);
    let r = h.raw(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(r.status, 200);

    let r = h.raw(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(r.text.contains("keygate_build_info"));
}

#[tokio::test]
async fn the_metrics_router_serves_metrics_alone() {
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, metrics_router(metrics))
            .await
            .unwrap();
    });
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("keygate_store_up"));
    let r = client
        .get(format!("http://{addr}/v1/orgs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.abort();
}

#[tokio::test]
async fn admin_tokens_are_checked_and_api_keys_refused() {
    let h = Harness::start().await;
    let r = h.raw(Method::GET, "/v1/orgs", None, None, &[]).await;
    assert_eq!((r.status, r.code()), (401, "missing_admin_token"));
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    let api_key = h.key_format.generate(Environment::Live).token;
    let unknown_admin = AdminToken::generate().token;
    let mut bad_checksum = h.owner.clone().into_bytes();
    bad_checksum[6] = if bad_checksum[6] == b'a' { b'b' } else { b'a' };
    let bad_checksum = String::from_utf8(bad_checksum).unwrap();
    for token in [
        api_key.as_str(),
        &unknown_admin,
        &bad_checksum,
        "kga_short",
        "x",
    ] {
        let r = h.get("/v1/orgs", token).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "invalid_admin_token"),
            "{token}"
        );
        assert!(r.headers.contains_key("www-authenticate"));
        assert!(!r.text.contains(token), "the token is echoed");
    }
    let r = h.get("/v1/orgs", &api_key).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key")
    );

    let basic = format!("Basic {}", h.owner);
    let r = h
        .raw(
            Method::GET,
            "/v1/orgs",
            None,
            None,
            &[("authorization", &basic)],
        )
        .await;
    assert_eq!(r.status, 401);
    // The scheme is case-insensitive.
    let lower = format!("bearer {}", h.owner);
    let r = h
        .raw(
            Method::GET,
            "/v1/orgs",
            None,
            None,
            &[("authorization", &lower)],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = h.get("/v1/orgs", &h.owner).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_paths_methods_bodies_and_outages_get_json_errors() {
    let h = Harness::start_mem().await;
    let r = h.get("/v1/nothing", &h.owner).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = h.call(Method::PUT, "/v1/orgs", &h.owner, None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));

    let r = h
        .raw(
            Method::POST,
            "/v1/orgs",
            Some(&h.owner),
            Some("{\"id\":".into()),
            &[],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = h
        .raw(
            Method::POST,
            "/v1/orgs",
            Some(&h.owner),
            Some("[]".into()),
            &[],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let huge = json!({ "id": "a", "name": "x".repeat(70_000) }).to_string();
    let r = h
        .raw(Method::POST, "/v1/orgs", Some(&h.owner), Some(huge), &[])
        .await;
    assert_eq!((r.status, r.code()), (413, "body_too_large"));

    h.mem.as_ref().unwrap().down.store(true, Ordering::SeqCst);
    let r = h.get("/v1/orgs", &h.owner).await;
    assert_eq!((r.status, r.code()), (503, "store_unavailable"));
    assert!(r.headers.contains_key("retry-after"));
    h.mem.as_ref().unwrap().down.store(false, Ordering::SeqCst);
}

/// Captures everything logged while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn bootstrap_writes_a_private_token_file_and_logs_only_its_path() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // With a single registered dispatcher, `tracing` computes the interest of a callsite
    // first hit on another test thread from that thread's (empty) default, and caches
    // "never" for everyone. A second live dispatcher, registered first, makes it ask all.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    // The test runtime is single-threaded, so the whole bootstrap runs under it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("keygate.db")).unwrap();
    let file = dir.path().join("nested/deeper/admin-token");
    let outcome = bootstrap(&store, &file).await.unwrap();
    let BootstrapOutcome::Created {
        principal_id,
        token_file,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(token_file, file);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(is_admin_token(&token));
    let p = store
        .principal_by_token(&crate::key::KeyHash::of(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.id, principal_id);
    assert_eq!(p.role, crate::key::Role::Owner);
    assert_eq!(p.orgs, crate::key::OrgScope::All);
    // Only the token file is left in the directory: no temp file.
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("admin-token")]);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(!text.contains(&token), "the token was logged");
    assert!(
        !text.contains(&p.token_hash.to_hex()),
        "the hash was logged"
    );

    // A second start changes nothing.
    assert_eq!(
        bootstrap(&store, &file).await.unwrap(),
        BootstrapOutcome::AlreadyInitialized
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_bootstraps_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("keygate.db")).unwrap());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let file = dir.path().join(format!("replica{i}/admin-token"));
        tasks.push(tokio::spawn(async move {
            bootstrap(store.as_ref(), &file).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), BootstrapOutcome::Created { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.list_principals().await.unwrap().len(), 1);
    // Losers leave no file behind, not even a temp one.
    let mut files = 0;
    for i in 0..8 {
        if let Ok(d) = std::fs::read_dir(dir.path().join(format!("replica{i}"))) {
            files += d.count();
        }
    }
    assert_eq!(files, 1);
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routed_operations() {
    let h = Harness::start().await;
    let r = h.raw(Method::GET, "/openapi.json", None, None, &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{org}", "acme")
            .replace("{id}", "x_01j0000000000000000000000a");
        for (method, _) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented += 1;
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = h
                .raw(m, &concrete, Some(&h.owner), Some("{}".into()), &[])
                .await;
            assert_ne!(resp.status, 405, "{method} {path} is not routed");
            assert_ne!(resp.code(), "not_found_path", "{method} {path}");
            assert!(
                !resp.text.contains("no such admin API path"),
                "{method} {path} is not routed"
            );
        }
    }
    // Every route of `router` (counted by hand: 26 operations) is documented.
    assert_eq!(documented, 26);
}
