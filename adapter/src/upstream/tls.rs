//! The rustls client configuration for the upstream adapter (ring provider): trust a CA
//! bundle, or, for tests only, any certificate.
//!
//! The CA file is usually a mounted ConfigMap, which the kubelet updates in place when the
//! upstream's CA rotates. [`ReloadingCa`] looks at the file at most every [`CHECK_EVERY`] on a
//! new handshake and rebuilds its verifier when the file changed; a file that no longer
//! parses keeps the last good bundle (logged). Pooled connections keep the certificate they
//! verified.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::Error;
use crate::server::tls::provider;

/// How the upstream's serving certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Against the CA certificates in this PEM file.
    CaFile(std::path::PathBuf),
    /// Not at all (tests only).
    InsecureSkipVerify,
}

/// A client configuration per `trust`.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?;
    let config = match trust {
        Trust::CaFile(path) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingCa::new(path.clone(), provider, CHECK_EVERY)?))
            .with_no_client_auth(),
        Trust::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let pem = std::fs::read(path).map_err(|source| Error::ReadCa { path: path.display().to_string(), source })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::BadCa { path: path.display().to_string(), detail: e.to_string() })?;
        roots.add(cert).map_err(|e| Error::BadCa { path: path.display().to_string(), detail: e.to_string() })?;
    }
    if roots.is_empty() {
        return Err(Error::BadCa { path: path.display().to_string(), detail: "no CERTIFICATE block".into() });
    }
    Ok(roots)
}

/// How often the CA file is looked at (on a handshake).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// What identifies one version of a file without reading it.
fn stamp(path: &Path) -> Option<(Option<SystemTime>, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// Verifies against the CA bundle in a file, re-read when it changes (see the module docs).
#[derive(Debug)]
pub struct ReloadingCa {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    stamp: Option<(Option<SystemTime>, u64)>,
    checked: Instant,
    verifier: Arc<WebPkiServerVerifier>,
}

impl ReloadingCa {
    /// Reads the bundle now: a bad one is an error at start.
    pub fn new(path: PathBuf, provider: Arc<CryptoProvider>, check_every: Duration) -> Result<Self, Error> {
        let verifier = Self::build(&path, &provider)?;
        let current = Current { stamp: stamp(&path), checked: Instant::now(), verifier };
        Ok(Self { path, provider, check_every, current: Mutex::new(current) })
    }

    fn build(path: &Path, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, Error> {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(path)?), provider.clone())
            .build()
            .map_err(|e| Error::BadCa { path: path.display().to_string(), detail: e.to_string() })
    }

    /// The verifier for a new handshake, after looking at the file if it is time to.
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        // A panic elsewhere while holding the lock leaves a usable value: keep using it.
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.checked.elapsed() >= self.check_every {
            current.checked = Instant::now();
            let now = stamp(&self.path);
            if now != current.stamp {
                match Self::build(&self.path, &self.provider) {
                    Ok(v) => {
                        tracing::info!(ca = %self.path.display(), "upstream CA bundle changed: reloaded");
                        current.verifier = v;
                        current.stamp = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream CA bundle changed but cannot be used; keeping the last good one")
                    }
                }
            }
        }
        current.verifier.clone()
    }
}

impl ServerCertVerifier for ReloadingCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Accepts any certificate, but still checks the handshake signatures (so the connection is
/// at least encrypted to whoever holds the key it presented).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::test_pki::{Issuer, ca};

    fn leaf(issuer: &Issuer) -> CertificateDer<'static> {
        let params = CertificateParams::new(vec!["keda-metrics.keda.svc".to_owned()]).expect("params");
        params.signed_by(&KeyPair::generate().expect("key"), issuer).expect("signs").der().clone()
    }

    fn verifies(v: &ReloadingCa, cert: &CertificateDer<'static>) -> bool {
        let name = ServerName::try_from("keda-metrics.keda.svc").expect("name");
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn a_rotated_ca_file_is_picked_up_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.crt");
        let (old, new) = (ca("old upstream CA"), ca("new upstream CA"));
        std::fs::write(&path, old.pem()).expect("write");
        let v = ReloadingCa::new(path.clone(), crate::server::tls::provider(), Duration::ZERO).expect("bundle");
        let (by_old, by_new) = (leaf(&old), leaf(&new));
        assert!(verifies(&v, &by_old) && !verifies(&v, &by_new));

        // Rotation: both for a while (the new one longer, so the stamp differs), then new alone.
        std::fs::write(&path, format!("{}{}", old.pem(), new.pem())).expect("write");
        assert!(verifies(&v, &by_old) && verifies(&v, &by_new));
        std::fs::write(&path, format!("{}\n", new.pem())).expect("write");
        assert!(!verifies(&v, &by_old) && verifies(&v, &by_new));

        // A broken file keeps the last good bundle.
        std::fs::write(&path, "not a certificate").expect("write");
        assert!(verifies(&v, &by_new));
        // And a missing file at start is an error naming it.
        let missing = ReloadingCa::new(dir.path().join("nope"), crate::server::tls::provider(), CHECK_EVERY);
        assert!(missing.is_err_and(|e| e.to_string().contains("nope")));
    }
}
