//! Server-side TLS: rustls with TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, the
//! certificate from PEM files (swapped in place on SIGHUP, so open connections are
//! untouched) or a development certificate made at start (`tls: self_signed`).

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsMode;

/// The one crypto provider keygate uses (aws-lc-rs), for servers, clients and rcgen.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serves the current certificate; [`ReloadableCert::reload`] swaps it.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
    mode: TlsMode,
}

impl ReloadableCert {
    /// Reads the PEM files again; `Ok(false)` for a self-signed certificate, which
    /// has no files. On error the old certificate stays in use.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let TlsMode::Files { cert, key } = &self.mode else {
            return Ok(false);
        };
        let fresh = load_files(cert, key)?;
        let mut guard = self
            .current
            .write()
            .map_err(|_| anyhow!("certificate lock poisoned"))?;
        *guard = Arc::new(fresh);
        Ok(true)
    }
}

impl ReloadableCert {
    /// Unix time at which the served certificate (the chain's first) expires.
    pub fn expires_at(&self) -> Option<i64> {
        let current = self.current.read().ok()?.clone();
        let der = current.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(cert.validity().not_after.timestamp())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A rustls server config for `mode`, or `None` for `tls: none`.
pub fn server_config(
    mode: &TlsMode,
) -> anyhow::Result<Option<(Arc<ServerConfig>, Arc<ReloadableCert>)>> {
    let certified = match mode {
        TlsMode::None => return Ok(None),
        TlsMode::Files { cert, key } => load_files(cert, key)?,
        TlsMode::SelfSigned => self_signed()?,
    };
    let resolver = Arc::new(ReloadableCert {
        current: RwLock::new(Arc::new(certified)),
        mode: mode.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's suite order (aws-lc-rs's: AEADs with forward secrecy, strongest
    // first), not the client's: a client cannot pick the weakest suite on offer.
    config.ignore_client_order = true;
    Ok(Some((Arc::new(config), resolver)))
}

fn load_files(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "{}: no certificate found in the PEM file",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading TLS private key {}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("{}: unsupported private key", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// A development certificate for localhost, 127.0.0.1 and ::1.
fn self_signed() -> anyhow::Result<CertifiedKey> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .context("loading the self-signed key")?;
    Ok(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signing,
    ))
}
