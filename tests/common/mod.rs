//! Harness for the integration tests: the real `keygate` binary ([`Gateway`]) in front
//! of real recording upstreams ([`RecordingUpstream`]), with a reqwest client, a raw
//! HTTP/1.1 client for exact bytes ([`RawConn`]), and the assertions every refusal must
//! pass ([`Reply::assert_refusal`]).
//!
//! Each test starts its own gateway and upstreams ([`Env`]): a start takes a fraction of
//! a second, and isolation keeps per-address counters (failed authentications) and
//! "nothing reached the upstream" checks exact.
//!
//! ```ignore
//! let env = Env::start_with(|b| b.limit("max_body_bytes", 1024)).await;
//! let key = env.read_key().await;
//! env.gw.get("/v1/feeds", Some(&key.secret)).await.assert_status(200);
//! env.gw.get("/v1/feeds", None).await.assert_refusal(401, "missing_api_key");
//! assert_eq!(env.up.last().header_one("x-org-id"), ORG);
//! ```
//!
//! Test files, one concern each: `credentials` (401s, query keys, revocation, guessing),
//! `permissions` (IP, environment, endpoint, resource, scope, order), `routes`,
//! `paths`, `headers`, `limits` (413/414/431, framing, slow clients, 100 Continue),
//! `forwarding` (502/504, streaming, pooling), `upstream_tls`, `tls`, `proxy_protocol`,
//! `persistence`, `reload`, `metrics`, `logs`, `edge` (h2 frames, floods, idle and
//! first-request deadlines, the admin and metrics ports' timeouts and cap, with the raw
//! h2 client [`h2raw`]), `cli` (the `keys`, `orgs` and `principals` commands as child
//! processes); `harness` checks this module itself.
#![allow(dead_code, unused_imports)]

pub mod clock;
pub mod gateway;
pub mod h2raw;
pub mod pki;
pub mod ports;
pub mod raw;
pub mod reply;
pub mod upstream;

use std::sync::Once;

pub use gateway::{Gateway, GatewayBuilder, Key};
pub use raw::{RawConn, RawEnd};
pub use reply::Reply;
pub use serde_json::{Value, json};
pub use upstream::{Mode, Recorded, RecordingUpstream};

/// rustls needs one process-wide provider; reqwest and the raw client share it.
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The org every [`Env`] creates.
pub const ORG: &str = "acme";

/// A gateway with its live upstream (`up`, behind both `feeds` and `flows`) and the
/// `flows` sandbox (`sandbox`, its `test_url`), and the org [`ORG`].
pub struct Env {
    pub gw: Gateway,
    pub up: RecordingUpstream,
    pub sandbox: RecordingUpstream,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|b| b).await
    }

    pub async fn start_with(f: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Env {
        init_crypto();
        let up = RecordingUpstream::start("live");
        let sandbox = RecordingUpstream::start("sandbox");
        let gw = f(GatewayBuilder::new(&up, &sandbox)).start().await;
        gw.create_org(ORG).await;
        Env { gw, up, sandbox }
    }

    /// A key of [`ORG`]; `body` needs at least `scopes`.
    pub async fn key(&self, body: Value) -> Key {
        self.gw.create_key(ORG, body).await
    }

    pub async fn read_key(&self) -> Key {
        self.key(json!({ "scopes": ["read"] })).await
    }

    pub async fn write_key(&self) -> Key {
        self.key(json!({ "scopes": ["write"] })).await
    }

    /// Asserts that no request reached either upstream.
    pub fn assert_nothing_forwarded(&self) {
        let live = self.up.requests();
        let sandbox = self.sandbox.requests();
        assert!(
            live.is_empty() && sandbox.is_empty(),
            "a refused request reached the upstream: live {live:?}, sandbox {sandbox:?}"
        );
    }

    /// Forgets what the upstreams recorded so far.
    pub fn clear(&self) {
        self.up.clear();
        self.sandbox.clear();
    }
}

/// A well-formed token (right shape and checksum) that no key has.
pub fn unknown_token(prefix: &str, env: &str) -> String {
    let format = keygate::key::KeyFormat::new(prefix).expect("prefix");
    let env = keygate::key::Environment::parse(env).expect("env");
    format.generate(env).token
}

/// `token` with its checksum broken (last character changed).
pub fn bad_checksum(token: &str) -> String {
    let mut t = token.to_string();
    let last = t.pop().expect("non-empty token");
    t.push(if last == 'A' { 'B' } else { 'A' });
    t
}

/// A raw HTTP/1.1 request: `head_lines` are full header lines without CRLF; a
/// `Host: localhost` line is added unless one is given.
pub fn raw_request(method: &str, target: &str, head_lines: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    if !head_lines
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("host:"))
    {
        out.push_str("Host: localhost\r\n");
    }
    for l in head_lines {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `Authorization: Bearer <token>` as a raw header line.
pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}
