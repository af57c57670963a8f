//! The TLS client-certificate verifier over the swappable [`Trust`](super::Trust).
//!
//! rustls builds its verifier into the `ServerConfig`; [`TrustVerifier`] reads the current
//! trust on every handshake instead, so a CA swapped by the ConfigMap watch applies to the next
//! connection without rebuilding anything. A certificate must chain to the request-header CA
//! or the client CA; connections without one are accepted (tokens, health probes).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::{SharedTrust, Verdict};

/// Verifies client certificates against whatever trust is current.
#[derive(Debug)]
pub struct TrustVerifier {
    trust: SharedTrust,
    provider: Arc<CryptoProvider>,
}

impl TrustVerifier {
    /// A verifier reading `trust` per handshake.
    pub fn new(trust: SharedTrust, provider: Arc<CryptoProvider>) -> Self {
        Self { trust, provider }
    }
}

impl ClientCertVerifier for TrustVerifier {
    fn offer_client_auth(&self) -> bool {
        self.trust.load().has_ca()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients (curl, Go, rustls) then send the certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        match self.trust.load().classify(&chain) {
            Verdict::Untrusted => Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            Verdict::RequestHeader | Verdict::ClientCa => Ok(ClientCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
