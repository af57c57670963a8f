//! Serving certificates and the rustls server configuration.
//!
//! TODO(next slice): reload certificate files on change (a `ResolvesServerCert` over an
//! `ArcSwap`), and reload the request-header CA from the ConfigMap.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Error;
use crate::auth::ClientCa;

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
