//! Test certificates (rcgen): a self-signed CA to sign leaves with. Used by the unit tests and,
//! through `#[path]`, by the integration tests, so every test builds its CA the same way.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA that can sign certificates.
pub type Issuer = CertifiedIssuer<'static, KeyPair>;

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("self-signed CA")
}
