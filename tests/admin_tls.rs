//! The admin port over TLS (`admin.tls`) and a separate metrics port
//! (`metrics.address`), through the real binary.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

#[tokio::test]
async fn admin_over_tls_and_metrics_on_their_own_port() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin, metrics) = (free_port(), free_port(), free_port());
    let config = format!(
        "listen: {{ address: 127.0.0.1:{listen}, tls: none }}\n\
         admin: {{ address: 127.0.0.1:{admin}, tls: self_signed, bootstrap_token_file: {token} }}\n\
         metrics: {{ address: 127.0.0.1:{metrics} }}\n\
         store: {{ backend: embedded, path: {db} }}\n\
         upstreams: {{ u: {{ url: \"http://127.0.0.1:9\" }} }}\n\
         routes: [ {{ name: r, methods: [GET], path: /x, upstream: u, scope: read }} ]\n",
        token = dir.path().join("admin-token").display(),
        db = dir.path().join("keygate.db").display(),
    );
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, config).unwrap();
    let _gw = Running(
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let https = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = https
            .get(format!("https://127.0.0.1:{admin}/readyz"))
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin port never ready over TLS: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The admin API answers over TLS, with the bootstrap token.
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let orgs = https
        .get(format!("https://127.0.0.1:{admin}/v1/orgs"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(orgs.status(), 200);

    // Plain HTTP to the TLS admin port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() != 200),
        "{plain:?}"
    );

    // The metrics port serves /metrics in plain HTTP, and only that.
    let text = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("keygate_tls_certificate_expiry_seconds{listener=\"admin\"}"),
        "{text}"
    );
    let api = reqwest::get(format!("http://127.0.0.1:{metrics}/v1/orgs"))
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
}
