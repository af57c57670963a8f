//! Serving certificates and the rustls server configuration.
//!
//! [`server_config`] is static (demo, extender, tests). `serve` uses [`live_server_config`]:
//! the certificate comes from a [`ServingCert`] (a `ResolvesServerCert` over an `ArcSwap`,
//! [`ServingCert::reload`] re-reads `--tls-cert`/`--tls-key` when their bytes change, as a
//! Secret volume update swaps them; a bad pair keeps the old one) and client certificates are
//! checked by [`crate::auth::verifier::TrustVerifier`] against the swappable trust.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Error;
use crate::admin::{ReloadMetrics, ReloadResult, ReloadSource};
use crate::auth::ClientCa;
use crate::auth::SharedTrust;
use crate::auth::verifier::TrustVerifier;

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads PEM files (chain first, leaf first in it; key PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        let read = |p: &Path| std::fs::read(p).map_err(|source| Error::Read { path: p.display().to_string(), source });
        Self::from_pem(&read(cert)?, &read(key)?, &cert.display().to_string(), &key.display().to_string())
    }

    /// Parses PEM held in memory; `cert_origin` and `key_origin` name them in errors.
    pub fn from_pem(cert: &[u8], key: &[u8], cert_origin: &str, key_origin: &str) -> Result<Self, Error> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(cert).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(Error::NoCertificate { path: cert_origin.into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| Error::NoKey { path: key_origin.into() })?;
        Ok(Self { certs, key })
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> Result<Self, Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).map_err(Error::SelfSigned)?;
        let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
        Ok(Self { certs: vec![generated.cert.der().clone()], key: key.into() })
    }

    /// The certificate chain, leaf first.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

/// The crypto provider the servers use (ring), independent of any process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration serving `identity` over HTTP/2 and HTTP/1.1. With `client_ca`,
/// client certificates are requested (not required) and verified against it.
pub fn server_config(identity: Identity, client_ca: Option<&ClientCa>) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca.verifier(provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(identity.certs, identity.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The serving certificate of `serve`, swapped when its files change.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
    /// `None`: a fixed (self-signed) certificate.
    files: Option<Files>,
    metrics: ReloadMetrics,
}

/// The certificate and key files, and the bytes last applied.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    last: Mutex<(Vec<u8>, Vec<u8>)>,
}

fn certified(identity: Identity, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let key = provider.key_provider.load_private_key(identity.key)?;
    let certified = CertifiedKey::new(identity.certs, key);
    // A key from another pair would fail every handshake: refuse it here instead.
    certified.keys_match()?;
    Ok(certified)
}

impl ServingCert {
    /// A certificate that never changes (e.g. self-signed).
    pub fn fixed(identity: Identity) -> Result<Self, Error> {
        let current = ArcSwap::from_pointee(certified(identity, &provider())?);
        Ok(Self { current, files: None, metrics: ReloadMetrics::default() })
    }

    /// Reads `cert` and `key` now (errors fail the start) and on each [`Self::reload`].
    pub fn from_files(cert: &Path, key: &Path, metrics: ReloadMetrics) -> Result<Self, Error> {
        let (cert_pem, key_pem) = read_pair(cert, key)?;
        let identity =
            Identity::from_pem(&cert_pem, &key_pem, &cert.display().to_string(), &key.display().to_string())?;
        let current = ArcSwap::from_pointee(certified(identity, &provider())?);
        let files =
            Some(Files { cert: cert.to_path_buf(), key: key.to_path_buf(), last: Mutex::new((cert_pem, key_pem)) });
        Ok(Self { current, files, metrics })
    }

    /// Re-reads the files; swaps the certificate in if they changed and form a valid pair.
    /// Returns whether it swapped. On error the current certificate stays.
    pub fn reload(&self) -> Result<bool, Error> {
        let Some(Files { cert, key, last }) = &self.files else { return Ok(false) };
        let result = read_pair(cert, key).and_then(|(cert_pem, key_pem)| {
            let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.0 == cert_pem && last.1 == key_pem {
                return Ok(false);
            }
            let identity =
                Identity::from_pem(&cert_pem, &key_pem, &cert.display().to_string(), &key.display().to_string())?;
            let next = certified(identity, &provider())?;
            // Counted before it is served: a client that gets the new certificate also sees the
            // count (CI once read /metrics between the two).
            self.metrics.record(ReloadSource::ServingCertificate, ReloadResult::Applied);
            self.current.store(Arc::new(next));
            *last = (cert_pem, key_pem);
            Ok(true)
        });
        if result.is_err() {
            self.metrics.record(ReloadSource::ServingCertificate, ReloadResult::Rejected);
        }
        result
    }

    /// Calls [`Self::reload`] every `period`, logging the outcome; runs until dropped.
    pub async fn poll(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!("serving certificate reloaded"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "serving certificate not reloaded; keeping the current one"),
            }
        }
    }

    /// The leaf certificate being served.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| Error::Read { path: p.display().to_string(), source });
    Ok((read(cert)?, read(key)?))
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS server configuration serving `cert` over HTTP/2 and HTTP/1.1. With `trust`, client
/// certificates are requested (not required) and verified against the trust of the moment.
pub fn live_server_config(cert: Arc<ServingCert>, trust: Option<SharedTrust>) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match trust {
        Some(trust) => builder.with_client_cert_verifier(Arc::new(TrustVerifier::new(trust, provider))),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
