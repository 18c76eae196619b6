//! The YAML file as written: serde types that mirror SPEC §8 field for field.
//!
//! Every struct denies unknown fields, so a misspelt key is an error rather than a
//! silently ignored setting. Optional settings stay `Option` here, so validation can
//! tell "left out" (take the default) from "written" (check it, blame its line).
//! Only shape is checked here: durations, TLS modes and types. Meaning is checked in
//! `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::key::RateLimit;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub admin: RawAdmin,
    pub metrics: Option<RawMetrics>,
    pub authz: Option<RawAuthz>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub keys: RawKeys,
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub identity_headers: RawIdentityHeaders,
    pub scopes: Option<BTreeMap<String, Vec<String>>>,
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: Option<String>,
    /// Required, but checked in `validate` so the message can list the choices.
    pub tls: Option<RawTls>,
    pub proxy_protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
    pub bootstrap_token_file: Option<PathBuf>,
    pub tls: Option<RawTls>,
    pub insecure: Option<bool>,
    pub max_connections: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub address: String,
}

/// SPEC §9: the listener proxies ask for decisions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthz {
    pub address: String,
    pub allow_from: Option<Vec<String>>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: Option<String>,
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub ttl: Option<Dur>,
    pub negative_ttl: Option<Dur>,
    pub max_entries: Option<u64>,
    pub max_staleness: Option<Dur>,
    pub stale_if_error: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityHeaders {
    pub org: Option<String>,
    pub key_id: Option<String>,
    pub scopes: Option<String>,
    pub environment: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<u64>,
    pub max_uri_bytes: Option<u64>,
    pub header_read_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub tls_handshake_timeout: Option<Dur>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub h2_max_concurrent_streams: Option<u64>,
    pub auth_failures_per_ip: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub test_url: Option<String>,
    pub connect_timeout: Option<Dur>,
    pub timeout: Option<Dur>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub preserve_host: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub methods: Vec<String>,
    pub path: String,
    pub host: Option<String>,
    pub upstream: String,
    pub scope: String,
    pub resource: Option<String>,
    pub query_key: Option<bool>,
    pub environments: Option<Vec<String>>,
    pub rate_limit: Option<RateLimit>,
}

/// `listen.tls` / `admin.tls`: `{ cert, key }`, `self_signed` or `none`.
#[derive(Debug)]
pub enum RawTls {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

pub const TLS_CHOICES: &str = "{ cert: FILE, key: FILE } (PEM files), self_signed (a development certificate) \
     or none (plain HTTP, e.g. behind a TLS-terminating load balancer)";

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TlsVisitor;
        impl<'de> Visitor<'de> for TlsVisitor {
            type Value = RawTls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(TLS_CHOICES)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTls, E> {
                match v {
                    "self_signed" => Ok(RawTls::SelfSigned),
                    "none" => Ok(RawTls::None),
                    other => Err(E::custom(format!(
                        "unknown TLS mode {other:?}; expected {TLS_CHOICES}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTls, A::Error> {
                let files = RawTlsFiles::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawTls::Files {
                    cert: files.cert,
                    key: files.key,
                })
            }
        }
        d.deserialize_any(TlsVisitor)
    }
}

/// A duration written with its unit: `250ms`, `30s`, `5m`, `1h` (humantime syntax,
/// so `1h 30m` works too). A bare number is refused: `30` could mean seconds or
/// milliseconds, and guessing wrong would be silent.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

const DURATION_FORM: &str = "a duration with a unit, such as 250ms, 30s, 5m or 1h";

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_FORM)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                humantime::parse_duration(v.trim())
                    .map(Dur)
                    .map_err(|e| E::custom(format!("{v:?} is not {DURATION_FORM} ({e})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} has no unit; write e.g. {v}s or {v}ms (durations look like 250ms, 30s, 5m, 1h)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!("{v} is not {DURATION_FORM}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Err(E::custom(format!("{v} is not {DURATION_FORM}")))
            }
        }
        d.deserialize_any(DurVisitor)
    }
}
