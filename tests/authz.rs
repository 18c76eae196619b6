//! keygate as the key check of another proxy (SPEC §9), through the real binary:
//! Envoy's `ext_authz` `Check` with a real gRPC client (tonic, envoy-types' client),
//! forward-auth at `/v1/authz` (nginx through the shipped snippet is in
//! `forward_auth_nginx.rs`), `allow_from` at accept, the verify API and the `verifier`
//! role, and `keygate_authz_requests_total`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn env() -> Env {
    Env::start_with(|b| b.authz(None)).await
}

/// A `CheckRequest` as Envoy sends it for a client at `client` asking `method path`.
fn check_request(method: &str, path: &str, headers: &[(&str, &str)], client: &str) -> CheckRequest {
    let mut h: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    h.insert(":authority".into(), "api.example.com".into());
    h.insert(":method".into(), method.into());
    h.insert(":path".into(), path.into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: client.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    headers: h,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

async fn grpc(env: &Env) -> AuthorizationClient<tonic::transport::Channel> {
    let addr = env.gw.authz.expect("authz listener");
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("gRPC connect to the authz listener")
}

fn headers_of(
    opts: &[envoy_types::ext_authz::v3::pb::HeaderValueOption],
) -> HashMap<String, String> {
    opts.iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
        .collect()
}

/// The denied response's status, headers and JSON body.
fn denied(r: &CheckResponse) -> (u16, HashMap<String, String>, Value) {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.as_ref().map_or(0, |s| s.code as u16),
            headers_of(&d.headers),
            serde_json::from_str(&d.body).expect("denied body is JSON"),
        ),
        other => panic!("expected a denied response, got {other:?}"),
    }
}

#[tokio::test]
async fn grpc_check_allows_with_identity_and_removes_the_credential() {
    let env = env().await;
    let key = env.key(json!({ "scopes": ["write"] })).await;
    let mut c = grpc(&env).await;
    let bearer = format!("Bearer {}", key.secret);
    let r = c
        .check(check_request(
            "GET",
            "/v1/feeds?page=2",
            &[("authorization", &bearer), ("x-org-id", "evil")],
            "203.0.113.9",
        ))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("expected OkHttpResponse: {r:?}");
    };
    let set = headers_of(&ok.headers);
    assert_eq!(set["x-org-id"], ORG);
    assert_eq!(set["x-api-key-id"], key.id);
    assert_eq!(set["x-api-key-scopes"], "write");
    assert_eq!(set["x-api-key-environment"], "live");
    assert!(!set["x-request-id"].is_empty());
    // Overwrite, never append: the client's X-Org-Id must not survive.
    for o in &ok.headers {
        assert_eq!(
            o.append_action,
            envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
    }
    assert_eq!(ok.headers_to_remove, vec!["authorization".to_string()]);
    assert_eq!(ok.query_parameters_to_remove, vec!["api_key".to_string()]);
    let md = r.dynamic_metadata.as_ref().expect("dynamic_metadata");
    let text = |k: &str| match md.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("key_id"), key.id);
    assert_eq!(text("org"), ORG);
    // Nothing was forwarded by keygate itself.
    assert_eq!(env.up.count(), 0);
    // Counted like a data-plane request.
    let m = env.gw.metrics().await;
    assert!(
        m.contains(r#"keygate_authz_requests_total{mode="grpc",outcome="allowed"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"keygate_requests_total{method="GET",outcome="allowed",route="list-feeds",status="200"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn grpc_check_refusals_carry_the_data_planes_answer() {
    let env = env().await;
    let read = env
        .key(json!({ "scopes": ["read"], "rate_limit": { "per_minute": 1 } }))
        .await;
    // The allowed call and the 429 in one minute.
    common::clock::fresh_minute(10.0).await;
    let revoked = env.key(json!({ "scopes": ["read"] })).await;
    env.gw.revoke_key(ORG, &revoked.id).await;
    let mut c = grpc(&env).await;
    let bearer = |k: &Key| format!("Bearer {}", k.secret);

    // (method, path, authorization, status, code)
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("GET", "/v1/feeds", None, 401, "missing_api_key"),
        (
            "GET",
            "/v1/feeds",
            Some("Bearer kg_live_nope".into()),
            401,
            "invalid_api_key",
        ),
        (
            "GET",
            "/v1/feeds",
            Some(bearer(&revoked)),
            401,
            "revoked_api_key",
        ),
        (
            "POST",
            "/v1/feeds/f1/refresh",
            Some(bearer(&read)),
            403,
            "insufficient_scope",
        ),
        ("GET", "/nowhere", Some(bearer(&read)), 404, "no_route"),
        (
            "GET",
            "/v1/%2e%2e/admin",
            Some(bearer(&read)),
            400,
            "bad_request",
        ),
    ];
    for (method, path, auth, status, code) in cases {
        let mut h = vec![];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        let r = c
            .check(check_request(method, path, &h, "203.0.113.9"))
            .await
            .expect("Check")
            .into_inner();
        assert_ne!(r.status.as_ref().map(|s| s.code), Some(0), "{path}: {r:?}");
        let (s, headers, body) = denied(&r);
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
        assert_eq!(headers["x-keygate-code"], code);
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(headers["content-type"], "application/json");
        if status == 401 {
            assert!(headers["www-authenticate"].starts_with("Bearer realm=\"keygate\""));
        }
    }

    // The rate limit: one allowed, then 429 with Retry-After and RateLimit-*.
    let a = bearer(&read);
    let h = [("authorization", a.as_str())];
    let first = c
        .check(check_request("GET", "/v1/feeds", &h, "203.0.113.9"))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(first.status.as_ref().map(|s| s.code), Some(0));
    let Some(HttpResponse::OkResponse(ok)) = &first.http_response else {
        panic!("{first:?}")
    };
    let to_client = headers_of(&ok.response_headers_to_add);
    assert_eq!(to_client["ratelimit-limit"], "1");
    assert_eq!(to_client["ratelimit-remaining"], "0");
    let second = c
        .check(check_request("GET", "/v1/feeds", &h, "203.0.113.9"))
        .await
        .expect("Check")
        .into_inner();
    let (s, headers, body) = denied(&second);
    assert_eq!(s, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = headers["retry-after"].parse().expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn grpc_check_uses_the_source_address_for_ip_allow_lists() {
    let env = env().await;
    let key = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["198.51.100.0/24"] }))
        .await;
    let mut c = grpc(&env).await;
    let a = format!("Bearer {}", key.secret);
    // A client-sent X-Forwarded-For is not the source address.
    let h = [
        ("authorization", a.as_str()),
        ("x-forwarded-for", "198.51.100.7"),
    ];
    let r = c
        .check(check_request("GET", "/v1/feeds", &h, "203.0.113.9"))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(denied(&r).0, 403);
    let r = c
        .check(check_request("GET", "/v1/feeds", &h, "198.51.100.7"))
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "{r:?}");
}

/// A `/v1/authz` request as nginx's `auth_request` sends it.
async fn forward_auth(env: &Env, headers: &[(&str, &str)]) -> Reply {
    let addr = env.gw.authz.expect("authz listener");
    let mut rb = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{addr}/v1/authz"));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    Reply::from_reqwest(rb.send().await.expect("GET /v1/authz")).await
}

#[tokio::test]
async fn forward_auth_answers_and_never_lets_a_decision_be_cached() {
    let env = env().await;
    let key = env
        .key(json!({ "scopes": ["read"], "ip_allow": ["198.51.100.0/24"], "rate_limit": { "per_second": 100 } }))
        .await;
    let a = format!("Bearer {}", key.secret);
    let described = |client: &'static str| {
        vec![
            ("x-original-method", "GET"),
            ("x-original-uri", "/v1/feeds?x=1"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", client),
        ]
    };
    let mut h = described("198.51.100.7");
    h.push(("authorization", &a));
    let r = forward_auth(&env, &h).await;
    r.assert_status(200);
    assert_eq!(r.text(), "");
    assert_eq!(r.header("x-org-id").as_deref(), Some(ORG));
    assert_eq!(r.header("x-api-key-id").as_deref(), Some(key.id.as_str()));
    assert_eq!(r.header("x-keygate-status").as_deref(), Some("200"));
    assert_eq!(r.header("x-keygate-code").as_deref(), Some("allowed"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("ratelimit-limit").as_deref(), Some("100"));
    assert!(r.header("x-request-id").is_some());

    // Entries left of the right-most X-Forwarded-For entry came from the client.
    let mut h = described("198.51.100.7, 203.0.113.9");
    h.push(("authorization", &a));
    let r = forward_auth(&env, &h).await;
    r.assert_refusal(403, "ip_not_allowed");
    assert_eq!(r.header("x-keygate-status").as_deref(), Some("403"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body: Value = serde_json::from_str(&r.header("x-keygate-body").expect("X-Keygate-Body"))
        .expect("X-Keygate-Body is the JSON body");
    assert_eq!(body, r.json());

    // A missing description is a 400, never a guess.
    let r = forward_auth(&env, &[("authorization", &a), ("x-original-method", "GET")]).await;
    r.assert_refusal(400, "bad_request");
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn a_peer_outside_allow_from_is_refused_at_accept() {
    let env = Env::start_with(|b| b.authz(Some(&["192.0.2.0/24"]))).await;
    let addr = env.gw.authz.expect("authz listener");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the port accepts at TCP level");
    let _ = s
        .write_all(b"GET /v1/authz HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\nX-Original-URI: /v1/feeds\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) | Ok(Err(_)) => assert!(
            buf.is_empty(),
            "no answer to a peer outside allow_from: {:?}",
            String::from_utf8_lossy(&buf)
        ),
        Err(_) => panic!("the connection of a peer outside allow_from was left open"),
    }
    let m = env.gw.metrics().await;
    assert!(!m.contains("keygate_authz_requests_total{"), "{m}");
}

async fn verify(env: &Env, token: &str, body: Value) -> Reply {
    env.gw
        .admin_call_as(token, "POST", "/v1/verify", Some(body))
        .await
}

#[tokio::test]
async fn verify_answers_every_outcome_and_count_false_counts_nothing() {
    let env = env().await;
    let key = env
        .key(json!({ "scopes": ["read"], "rate_limit": { "per_minute": 2 } }))
        .await;
    // Every count in one minute.
    common::clock::fresh_minute(10.0).await;
    let token = env.gw.admin_token.clone();
    let s = key.secret.clone();

    // count: false looks but consumes nothing and records no use.
    for _ in 0..3 {
        let r = verify(
            &env,
            &token,
            json!({ "key": s, "path": "/v1/feeds", "count": false }),
        )
        .await;
        r.assert_status(200);
        let v = r.json();
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["code"], Value::Null);
        assert_eq!(v["key"]["id"], key.id.as_str());
        assert_eq!(v["key"]["org"], ORG);
        assert_eq!(v["key"]["scopes"], json!(["read"]));
        assert_eq!(v["key"]["environment"], "live");
        assert_eq!(v["rate_limit"]["limit"], 2);
        assert_eq!(
            v["rate_limit"]["remaining"], 2,
            "count: false consumed: {v}"
        );
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    }
    // Counting: 2 allowed, then rate_limited with retry_after.
    for remaining in [1, 0] {
        let v = verify(
            &env,
            &token,
            json!({ "key": s, "method": "GET", "path": "/v1/feeds" }),
        )
        .await
        .json();
        assert_eq!(
            (v["valid"].clone(), v["rate_limit"]["remaining"].clone()),
            (json!(true), json!(remaining)),
            "{v}"
        );
    }
    let v = verify(&env, &token, json!({ "key": s, "path": "/v1/feeds" }))
        .await
        .json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["code"], "rate_limited");
    assert!(
        v["retry_after"]
            .as_u64()
            .is_some_and(|r| (1..=60).contains(&r)),
        "{v}"
    );

    // The scope form, and the route form's refusals.
    let rows = [
        (
            json!({ "key": s, "scopes": ["read"], "count": false }),
            true,
            Value::Null,
        ),
        (
            json!({ "key": s, "scopes": ["read", "write"], "count": false }),
            false,
            json!("insufficient_scope"),
        ),
        (
            json!({ "key": s, "method": "POST", "path": "/v1/feeds/f/refresh", "count": false }),
            false,
            json!("insufficient_scope"),
        ),
        (
            json!({ "key": s, "path": "/nowhere", "count": false }),
            false,
            json!("no_route"),
        ),
        (
            json!({ "key": "kg_live_nope", "path": "/v1/feeds" }),
            false,
            json!("invalid_api_key"),
        ),
    ];
    for (body, valid, code) in rows {
        let v = verify(&env, &token, body.clone()).await.json();
        assert_eq!(
            (v["valid"].clone(), v["code"].clone()),
            (json!(valid), code),
            "{body}: {v}"
        );
    }
    // Malformed calls name the field.
    let r = verify(&env, &token, json!({ "key": s })).await;
    r.assert_status(422);
    assert_eq!(r.json()["error"]["field"], "path");
    // The key is never logged.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !env.gw.logs_text().contains(&s),
        "the key appears in keygate's output"
    );
    let m = env.gw.metrics().await;
    assert!(
        m.contains(r#"keygate_authz_requests_total{mode="verify",outcome="rate_limited"} 1"#),
        "{m}"
    );
    // Nothing reached the upstream.
    assert_eq!(env.up.count(), 0);
}

#[tokio::test]
async fn a_verifier_may_verify_and_nothing_else_and_only_its_orgs_keys() {
    let env = env().await;
    env.gw.create_org("other").await;
    let own = env.key(json!({ "scopes": ["read"] })).await;
    let foreign = env
        .gw
        .create_key("other", json!({ "scopes": ["read"] }))
        .await;
    env.gw.revoke_key("other", &foreign.id).await;
    let r = env
        .gw
        .admin_call(
            "POST",
            "/v1/principals",
            Some(json!({ "name": "svc", "role": "verifier", "orgs": [ORG] })),
        )
        .await;
    r.assert_status(201);
    let token = r.json()["token"].as_str().expect("token").to_string();

    let v = verify(
        &env,
        &token,
        json!({ "key": own.secret, "path": "/v1/feeds" }),
    )
    .await
    .json();
    assert_eq!(v["valid"], true, "{v}");
    // Another org's key is unknown to it: not "revoked", no key details.
    let v = verify(
        &env,
        &token,
        json!({ "key": foreign.secret, "path": "/v1/feeds" }),
    )
    .await
    .json();
    assert_eq!(
        (v["valid"].clone(), v["code"].clone(), v["key"].clone()),
        (json!(false), json!("invalid_api_key"), Value::Null),
        "{v}"
    );
    for (method, path) in [
        ("GET", "/v1/orgs".to_string()),
        ("GET", format!("/v1/orgs/{ORG}")),
        ("GET", format!("/v1/orgs/{ORG}/keys")),
        ("GET", format!("/v1/orgs/{ORG}/keys/{}", own.id)),
        ("GET", format!("/v1/orgs/{ORG}/keys/{}/usage", own.id)),
    ] {
        env.gw
            .admin_call_as(&token, method, &path, None)
            .await
            .assert_status(403);
    }
}
