//! Metrics (SPEC §6): `keygate_requests_total` labels requests with their outcome, and
//! labels come from route names and fixed sets, never from paths or keys.

mod common;

use std::time::Duration;

use common::*;

/// Lines of `name` (samples, not comments) in the exposition text.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn has_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    samples(text, name).iter().any(|l| {
        labels
            .iter()
            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })
}

#[tokio::test]
async fn requests_total_counts_outcomes() {
    let env = Env::start().await;
    let key = env.read_key().await;
    env.gw
        .get("/v1/feeds", Some(&key.secret))
        .await
        .assert_status(200);
    env.gw
        .get("/v1/feeds", None)
        .await
        .assert_refusal(401, "missing_api_key");
    env.gw
        .get("/v1/feeds", Some(&unknown_token("kg", "live")))
        .await
        .assert_refusal(401, "invalid_api_key");
    env.gw
        .call("POST", "/v1/feeds/abc/refresh", Some(&key.secret))
        .await
        .assert_refusal(403, "insufficient_scope");
    env.gw
        .get("/nowhere/secret-path", None)
        .await
        .assert_refusal(404, "no_route");
    env.gw
        .call("PROPFIND", "/v1/feeds", Some(&key.secret))
        .await
        .assert_refusal(404, "no_route");

    let expected: [&[(&str, &str)]; 6] = [
        &[
            ("route", "list-feeds"),
            ("method", "GET"),
            ("status", "200"),
            ("outcome", "allowed"),
        ],
        &[
            ("route", "list-feeds"),
            ("status", "401"),
            ("outcome", "missing_api_key"),
        ],
        &[
            ("route", "list-feeds"),
            ("status", "401"),
            ("outcome", "invalid_api_key"),
        ],
        &[
            ("route", "refresh-feed"),
            ("method", "POST"),
            ("status", "403"),
            ("outcome", "insufficient_scope"),
        ],
        &[("status", "404"), ("outcome", "no_route")],
        &[("method", "OTHER"), ("outcome", "no_route")],
    ];
    // Counters may be updated just after the response is sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = env.gw.metrics().await;
        if expected
            .iter()
            .all(|l| has_sample(&text, "keygate_requests_total", l))
        {
            break text;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = expected
                .iter()
                .filter(|l| !has_sample(&text, "keygate_requests_total", l))
                .collect();
            panic!(
                "keygate_requests_total lacks {missing:?}; samples:\n{}",
                samples(&text, "keygate_requests_total").join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert!(
        text.contains("# TYPE keygate_requests_total counter"),
        "keygate_requests_total is a counter"
    );
    assert!(
        !samples(&text, "keygate_build_info").is_empty(),
        "keygate_build_info"
    );
    assert!(!text.contains("secret-path"), "a raw path became a label");
    assert!(!text.contains(&key.secret), "a token reached the metrics");
    assert!(!text.contains(&key.id), "a key id became a label");
}

#[tokio::test]
async fn metrics_need_no_token() {
    let env = Env::start().await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(env.gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    for name in ["keygate_build_info", "keygate_store_up"] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn metric_families_are_exposed_after_traffic() {
    let env = Env::start().await;
    let key = env.read_key().await;
    for _ in 0..2 {
        env.gw
            .get("/v1/feeds", Some(&key.secret))
            .await
            .assert_status(200);
    }
    env.gw
        .get("/v1/feeds", Some(&unknown_token("kg", "live")))
        .await
        .assert_refusal(401, "invalid_api_key");

    let families = [
        "keygate_requests_total",
        "keygate_request_duration_seconds",
        "keygate_upstream_duration_seconds",
        "keygate_auth_cache_total",
        "keygate_store_operations_total",
        "keygate_store_latency_seconds",
        "keygate_store_up",
        "keygate_connections_active",
        "keygate_build_info",
        // The test gateway serves a self-signed certificate.
        "keygate_tls_certificate_expiry_seconds",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = env.gw.metrics().await;
        let missing: Vec<_> = families
            .iter()
            .filter(|f| !text.contains(&format!("# TYPE {f} ")))
            .collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "families missing from /metrics: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(has_sample(
        &text,
        "keygate_upstream_duration_seconds_count",
        &[("upstream", "feeds")]
    ));
    assert!(has_sample(
        &text,
        "keygate_request_duration_seconds_count",
        &[("route", "list-feeds")]
    ));
    assert!(has_sample(&text, "keygate_store_up", &[]));
    assert!(
        samples(&text, "keygate_auth_cache_total")
            .iter()
            .any(|l| l.contains("result=\"hit\"") || l.contains("result=\"miss\""))
    );

    // Every sample line is `name{labels} value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "not a sample line: {line:?}"
        );
        assert!(
            line.starts_with("keygate_") || line.starts_with("process_"),
            "{line:?}"
        );
    }
}
