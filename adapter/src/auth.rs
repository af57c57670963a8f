//! Authentication of requests as kube-apiserver expects of an aggregated API server.
//!
//! kube-apiserver proxies requests with mTLS, presenting its front-proxy client certificate,
//! and names the user in `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*`. TLS accepts
//! connections with or without a client certificate ([`ClientCa::verifier`]: a chain, when
//! presented, must verify against the request-header CA, or the handshake fails). Per request,
//! [`Policy::authenticate`] trusts the `X-Remote-*` headers only when the connection's verified
//! certificate has a common name in the allowed names (any name when the list is empty, as in
//! kube-apiserver). Everything else is 401 (no credentials) or 403 (a certificate not allowed
//! to assert identities).
//!
//! Authorization of the user named here is [`crate::authz`] (SubjectAccessReview, cached),
//! when [`RequestHeader::authorizer`] is set; without it every authenticated user is allowed.
//!
//! TODO(next slice): read the CA bundle, allowed names and header names from ConfigMap
//! kube-system/extension-apiserver-authentication and reload them when it changes; bearer
//! tokens via TokenReview. Until then the CA comes from `--requestheader-client-ca`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::authz::Authorizer;

/// Errors building the request-header trust.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file could not be read.
    #[error("cannot read request-header CA {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM held no usable CA certificate.
    #[error("request-header CA {origin}: no usable PEM CERTIFICATE")]
    NoCertificate {
        /// File name or `memory`.
        origin: String,
    },
    /// A certificate in the bundle was rejected as a trust anchor.
    #[error("request-header CA {origin}: bad certificate")]
    BadCertificate {
        /// File name or `memory`.
        origin: String,
        /// Why rustls rejected it.
        #[source]
        source: rustls::Error,
    },
    /// rustls could not build the client verifier.
    #[error("cannot build the client-certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// The request-header (front-proxy) CA bundle.
#[derive(Debug, Clone)]
pub struct ClientCa {
    roots: Arc<RootCertStore>,
}

impl ClientCa {
    /// Parses a PEM bundle held in memory (e.g. from the ConfigMap).
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::parse(pem, "memory")
    }

    /// Reads a PEM bundle from a file.
    pub fn from_pem_file(path: &Path) -> Result<Self, Error> {
        let origin = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| Error::Read { path: origin.clone(), source })?;
        Self::parse(&pem, &origin)
    }

    fn parse(pem: &[u8], origin: &str) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem).filter_map(Result::ok) {
            roots.add(cert).map_err(|source| Error::BadCertificate { origin: origin.into(), source })?;
        }
        if roots.is_empty() {
            return Err(Error::NoCertificate { origin: origin.into() });
        }
        Ok(Self { roots: Arc::new(roots) })
    }

    /// A verifier that accepts connections without a client certificate, and verifies any
    /// certificate presented against this bundle.
    pub fn verifier(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<dyn ClientCertVerifier>, Error> {
        WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider)
            .allow_unauthenticated()
            .build()
            .map_err(Error::Verifier)
    }
}

/// What the serving loop knows of a connection; inserted into every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Remote address.
    pub remote: SocketAddr,
    /// Common name of the client certificate, present only if rustls verified its chain.
    pub client_cn: Option<String>,
}

/// The common name of a DER certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

/// An authenticated user, as asserted by the front proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// User name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (`X-Remote-Extra-<key>`), keys lower-cased.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No verified front-proxy certificate (answered 401).
    #[error("no client certificate signed by the request-header CA was presented")]
    NoCertificate,
    /// The certificate is verified but its name may not assert identities (answered 403).
    #[error("client certificate common name {cn:?} is not in the allowed request-header names")]
    NameNotAllowed {
        /// The certificate's common name.
        cn: String,
    },
    /// A front-proxy request without a user header (answered 401).
    #[error("the front proxy sent no {header} header")]
    NoUser {
        /// The expected header.
        header: String,
    },
}

/// Who may call the API.
#[derive(Debug, Clone)]
pub enum Policy {
    /// No request-header CA configured: every request is served as `system:anonymous`.
    /// For `demo` and local use only; `serve` warns at start.
    Open,
    /// Front-proxy authentication.
    RequestHeader(RequestHeader),
}

/// Settings of front-proxy authentication (the fields of extension-apiserver-authentication).
#[derive(Debug, Clone)]
pub struct RequestHeader {
    /// Common names allowed to assert identities; empty means any certificate from the CA.
    pub allowed_names: Vec<String>,
    /// Header naming the user.
    pub username_header: String,
    /// Header naming groups (repeated).
    pub group_header: String,
    /// Prefix of extra-attribute headers.
    pub extra_prefix: String,
    /// Who may do what once authenticated; `None` allows every authenticated user.
    pub authorizer: Option<Arc<Authorizer>>,
}

impl RequestHeader {
    /// Kubernetes' default header names with the given allowed names.
    pub fn new(allowed_names: Vec<String>) -> Self {
        Self {
            allowed_names,
            username_header: "x-remote-user".into(),
            group_header: "x-remote-group".into(),
            extra_prefix: "x-remote-extra-".into(),
            authorizer: None,
        }
    }
}

impl Policy {
    /// The authorizer, if requests are authorized beyond authentication.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        match self {
            Self::Open => None,
            Self::RequestHeader(rh) => rh.authorizer.as_deref(),
        }
    }

    /// Authenticates a request from `peer` with `headers`.
    pub fn authenticate(&self, peer: Option<&Peer>, headers: &HeaderMap) -> Result<User, Rejection> {
        let rh = match self {
            Self::Open => {
                return Ok(User {
                    name: "system:anonymous".into(),
                    groups: vec!["system:unauthenticated".into()],
                    ..User::default()
                });
            }
            Self::RequestHeader(rh) => rh,
        };
        let cn = peer.and_then(|p| p.client_cn.as_deref()).ok_or(Rejection::NoCertificate)?;
        if !rh.allowed_names.is_empty() && !rh.allowed_names.iter().any(|n| n == cn) {
            return Err(Rejection::NameNotAllowed { cn: cn.into() });
        }
        let text = |v: &http::HeaderValue| v.to_str().ok().map(str::to_owned);
        let name = headers
            .get(&rh.username_header)
            .and_then(text)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Rejection::NoUser { header: rh.username_header.clone() })?;
        let groups = headers.get_all(&rh.group_header).iter().filter_map(text).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in headers {
            if let (Some(k), Some(v)) = (key.as_str().strip_prefix(rh.extra_prefix.as_str()), text(value)) {
                extra.entry(k.to_owned()).or_default().push(v);
            }
        }
        Ok(User { name, groups, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(cn: Option<&str>) -> Peer {
        Peer { remote: ([127, 0, 0, 1], 1).into(), client_cn: cn.map(Into::into) }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn front_proxy_identity_is_trusted_only_with_an_allowed_certificate() {
        let policy = Policy::RequestHeader(RequestHeader::new(vec!["front-proxy-client".into()]));
        let h = headers(&[
            ("x-remote-user", "system:kube-controller-manager"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-group", "ops"),
            ("x-remote-extra-scopes", "a"),
        ]);
        let user = policy.authenticate(Some(&peer(Some("front-proxy-client"))), &h).unwrap();
        assert_eq!(user.name, "system:kube-controller-manager");
        assert_eq!(user.groups, ["system:authenticated", "ops"]);
        assert_eq!(user.extra["scopes"], ["a"]);
        assert_eq!(policy.authenticate(Some(&peer(None)), &h), Err(Rejection::NoCertificate));
        assert_eq!(policy.authenticate(None, &h), Err(Rejection::NoCertificate));
        assert_eq!(
            policy.authenticate(Some(&peer(Some("mallory"))), &h),
            Err(Rejection::NameNotAllowed { cn: "mallory".into() })
        );
        assert!(matches!(
            policy.authenticate(Some(&peer(Some("front-proxy-client"))), &HeaderMap::new()),
            Err(Rejection::NoUser { .. })
        ));
    }

    #[test]
    fn empty_allowed_names_accepts_any_certificate_from_the_ca() {
        let policy = Policy::RequestHeader(RequestHeader::new(vec![]));
        let h = headers(&[("x-remote-user", "alice")]);
        assert_eq!(policy.authenticate(Some(&peer(Some("anyone"))), &h).unwrap().name, "alice");
    }

    #[test]
    fn bad_bundles_are_named() {
        assert!(matches!(ClientCa::from_pem(b"not pem"), Err(Error::NoCertificate { .. })));
        let err = ClientCa::from_pem_file(Path::new("/nonexistent/ca.crt")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.crt"));
    }
}
