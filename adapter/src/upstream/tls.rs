//! The rustls client configuration for the upstream adapter (ring provider): trust a CA
//! bundle, or, for tests only, any certificate.

use std::path::Path;
use std::sync::Arc;

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
        Trust::CaFile(path) => builder.with_root_certificates(roots(path)?).with_no_client_auth(),
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
