//! Authentication of requests as kube-apiserver expects of an aggregated API server.
//!
//! kube-apiserver proxies requests with mTLS, presenting its front-proxy client certificate,
//! and names the user in `X-Remote-User`, `X-Remote-Group` and `X-Remote-Extra-*`. What the
//! adapter trusts is a [`Trust`]: the request-header CA with its allowed names and header names
//! ([`RequestHeader`]), and optionally the cluster's client CA (certificates signed by it are
//! users: CN = name, O = groups). It comes from `--requestheader-client-ca` or from ConfigMap
//! kube-system/extension-apiserver-authentication ([`config`], watched and swapped while
//! serving). TLS accepts connections with or without a client certificate; a certificate, when
//! presented, must verify against the current trust or the handshake fails ([`verifier`]).
//!
//! Per request, [`Policy::authenticate`] checks the connection's certificate against the
//! current trust (memoized per connection and trust generation, so a CA swap also applies to
//! open connections): a request-header certificate with an allowed common name (any, when the
//! list is empty) makes the `X-Remote-*` headers the identity; a client-CA certificate is the
//! identity itself; otherwise `Authorization: Bearer` is asked of kube-apiserver with a
//! TokenReview ([`token`], cached). Everything else is 401 (no credentials), 403 (a
//! certificate not allowed to assert identities) or 503 (TokenReview unavailable).
//!
//! Authorization of the user named here is [`crate::authz`] (SubjectAccessReview, cached),
//! when [`Delegated::authorizer`] is set; without it every authenticated user is allowed.

pub mod config;
pub mod token;
pub mod verifier;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderMap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

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

/// A CA bundle trusted for client certificates (the request-header CA or the client CA).
#[derive(Debug, Clone)]
pub struct ClientCa {
    roots: Arc<RootCertStore>,
    /// Verifies chains against `roots` alone (which CA signed a certificate decides its meaning).
    check: Arc<dyn ClientCertVerifier>,
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
        let roots = Arc::new(roots);
        let check = WebPkiClientVerifier::builder_with_provider(roots.clone(), crate::server::tls::provider())
            .build()
            .map_err(Error::Verifier)?;
        Ok(Self { roots, check })
    }

    /// Whether `chain` (leaf first) verifies against this bundle now.
    pub fn verifies(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else { return false };
        self.check.verify_client_cert(leaf, intermediates, UnixTime::now()).is_ok()
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
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote address.
    pub remote: SocketAddr,
    /// The client certificate, present only if rustls verified its chain during the handshake.
    pub client: Option<Arc<ClientCert>>,
}

/// A connection's client certificate chain and what the current [`Trust`] makes of it.
#[derive(Debug)]
pub struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Subject organizations (groups, for client-CA certificates).
    pub organizations: Vec<String>,
    /// The verdict under a trust generation: a swap re-checks open connections once.
    verdict: Mutex<Option<(u64, Verdict)>>,
}

/// Which CA of a [`Trust`] signed a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request-header CA: the front proxy.
    RequestHeader,
    /// The client CA: the certificate names the user.
    ClientCa,
    /// Neither (any more).
    Untrusted,
}

impl ClientCert {
    /// The chain a client presented, leaf first.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        let parsed = chain.first().and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok());
        let (common_name, organizations) = match &parsed {
            Some((_, cert)) => {
                let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_owned);
                (
                    cert.subject().iter_common_name().next().and_then(text),
                    cert.subject().iter_organization().filter_map(text).collect(),
                )
            }
            None => (None, Vec::new()),
        };
        Self { chain, common_name, organizations, verdict: Mutex::new(None) }
    }

    /// What `trust` makes of this certificate (verified once per trust generation).
    pub fn verdict(&self, trust: &Trust) -> Verdict {
        let mut memo = self.verdict.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((generation, verdict)) = *memo
            && generation == trust.generation
        {
            return verdict;
        }
        let verdict = trust.classify(&self.chain);
        *memo = Some((trust.generation, verdict));
        verdict
    }
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
    /// No certificate from a trusted CA and no bearer token (answered 401).
    #[error("no client certificate signed by a trusted CA and no bearer token were presented")]
    NoCredentials,
    /// kube-apiserver's TokenReview did not authenticate the bearer token (answered 401).
    #[error("invalid bearer token{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    InvalidToken(String),
    /// The TokenReview could not be made (answered 503, never cached).
    #[error("cannot review the bearer token: {0}")]
    Unavailable(String),
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
    /// No trust configured: every request is served as `system:anonymous`.
    /// For `demo` and local use only; `serve` warns at start.
    Open,
    /// Authentication delegated to kube-apiserver's CAs and TokenReview.
    Delegated(Delegated),
}

/// Delegated authentication (and authorization) settings.
#[derive(Debug, Clone)]
pub struct Delegated {
    /// The current trust; swapped by the ConfigMap watch.
    pub trust: SharedTrust,
    /// Bearer tokens via TokenReview; `None` refuses tokens.
    pub tokens: Option<Arc<token::TokenAuthenticator>>,
    /// Who may do what once authenticated; `None` allows every authenticated user.
    pub authorizer: Option<Arc<Authorizer>>,
}

impl Delegated {
    /// `trust` only: no tokens, no authorizer.
    pub fn new(trust: Trust) -> Self {
        Self { trust: Arc::new(ArcSwap::from_pointee(trust)), tokens: None, authorizer: None }
    }
}

/// The trust swapped while serving.
pub type SharedTrust = Arc<ArcSwap<Trust>>;

/// The CAs and request-header settings in force (the fields of extension-apiserver-authentication).
#[derive(Debug)]
pub struct Trust {
    /// Front-proxy authentication, if configured.
    pub request_header: Option<RequestHeader>,
    /// The cluster's client CA, if configured: its certificates name users directly.
    pub client_ca: Option<ClientCa>,
    generation: u64,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Trust {
    /// A trust with a fresh generation number.
    pub fn new(request_header: Option<RequestHeader>, client_ca: Option<ClientCa>) -> Self {
        Self { request_header, client_ca, generation: GENERATIONS.fetch_add(1, Ordering::Relaxed) }
    }

    /// Which CA signed `chain`; the request-header CA first, as kube-apiserver orders them.
    pub fn classify(&self, chain: &[CertificateDer<'_>]) -> Verdict {
        if self.request_header.as_ref().is_some_and(|rh| rh.ca.verifies(chain)) {
            Verdict::RequestHeader
        } else if self.client_ca.as_ref().is_some_and(|ca| ca.verifies(chain)) {
            Verdict::ClientCa
        } else {
            Verdict::Untrusted
        }
    }

    /// Whether any CA is configured (client certificates are requested only then).
    pub fn has_ca(&self) -> bool {
        self.request_header.is_some() || self.client_ca.is_some()
    }
}

/// Front-proxy authentication: the CA, allowed names and header names (lower case).
#[derive(Debug, Clone)]
pub struct RequestHeader {
    /// The CA signing the front proxy's client certificate.
    pub ca: ClientCa,
    /// Common names allowed to assert identities; empty means any certificate from the CA.
    pub allowed_names: Vec<String>,
    /// Headers naming the user; the first present one counts.
    pub username_headers: Vec<String>,
    /// Headers naming groups (each repeated).
    pub group_headers: Vec<String>,
    /// Prefixes of extra-attribute headers.
    pub extra_prefixes: Vec<String>,
}

impl RequestHeader {
    /// Kubernetes' default header names with the given CA and allowed names.
    pub fn new(ca: ClientCa, allowed_names: Vec<String>) -> Self {
        Self {
            ca,
            allowed_names,
            username_headers: vec!["x-remote-user".into()],
            group_headers: vec!["x-remote-group".into()],
            extra_prefixes: vec!["x-remote-extra-".into()],
        }
    }

    /// The identity the front proxy asserts, if `cert` may assert one.
    fn user(&self, cert: &ClientCert, headers: &HeaderMap) -> Result<User, Rejection> {
        let cn = cert.common_name.as_deref().unwrap_or_default();
        if !self.allowed_names.is_empty() && !self.allowed_names.iter().any(|n| n == cn) {
            return Err(Rejection::NameNotAllowed { cn: cn.into() });
        }
        let text = |v: &http::HeaderValue| v.to_str().ok().map(str::to_owned);
        let name = self
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()).and_then(text).filter(|n| !n.is_empty()))
            .ok_or_else(|| Rejection::NoUser { header: self.username_headers.join(", ") })?;
        let groups =
            self.group_headers.iter().flat_map(|h| headers.get_all(h.as_str()).iter().filter_map(text)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in headers {
            let key = self.extra_prefixes.iter().find_map(|p| key.as_str().strip_prefix(p.as_str()));
            if let (Some(k), Some(v)) = (key, text(value)) {
                // The front proxy percent-escapes keys that are not valid in a header name
                // (kube-apiserver unescapes them; an invalid escape is kept as it is).
                let k = percent_encoding::percent_decode_str(k)
                    .decode_utf8()
                    .map_or_else(|_| k.to_owned(), |d| d.into_owned());
                extra.entry(k).or_default().push(v);
            }
        }
        Ok(User { name, groups, extra })
    }
}

impl Policy {
    /// The authorizer, if requests are authorized beyond authentication.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        match self {
            Self::Open => None,
            Self::Delegated(d) => d.authorizer.as_deref(),
        }
    }

    /// Authenticates a request from `peer` with `headers`.
    pub async fn authenticate(&self, peer: Option<&Peer>, headers: &HeaderMap) -> Result<User, Rejection> {
        let d = match self {
            Self::Open => {
                return Ok(User {
                    name: "system:anonymous".into(),
                    groups: vec!["system:unauthenticated".into()],
                    ..User::default()
                });
            }
            Self::Delegated(d) => d,
        };
        let trust = d.trust.load();
        if let Some(cert) = peer.and_then(|p| p.client.as_deref()) {
            match (cert.verdict(&trust), &trust.request_header) {
                (Verdict::RequestHeader, Some(rh)) => return rh.user(cert, headers),
                (Verdict::ClientCa, _) => {
                    let name = cert.common_name.clone().filter(|n| !n.is_empty()).ok_or(Rejection::NoCredentials)?;
                    let mut groups = cert.organizations.clone();
                    groups.push("system:authenticated".into());
                    return Ok(User { name, groups, ..User::default() });
                }
                // Signed by a CA no longer trusted (the connection predates a swap): as if absent.
                _ => {}
            }
        }
        match (&d.tokens, token::bearer(headers)) {
            (Some(tokens), Some(bearer)) => tokens.authenticate(bearer).await,
            _ => Err(Rejection::NoCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;
    use crate::test_pki::{Issuer, ca};

    fn bundle(issuer: &Issuer) -> ClientCa {
        ClientCa::from_pem(issuer.pem().as_bytes()).unwrap()
    }

    fn peer(issuer: &Issuer, cn: &str, orgs: &[&str]) -> Peer {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&KeyPair::generate().unwrap(), issuer).unwrap();
        Peer { remote: ([127, 0, 0, 1], 1).into(), client: Some(Arc::new(ClientCert::new(vec![cert.der().clone()]))) }
    }

    fn anonymous_peer() -> Peer {
        Peer { remote: ([127, 0, 0, 1], 1).into(), client: None }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    fn delegated(rh: Option<RequestHeader>, client_ca: Option<ClientCa>) -> Policy {
        Policy::Delegated(Delegated::new(Trust::new(rh, client_ca)))
    }

    #[test]
    fn front_proxy_identity_is_trusted_only_with_an_allowed_certificate() {
        let front = ca("front-proxy-ca");
        let policy = delegated(Some(RequestHeader::new(bundle(&front), vec!["front-proxy-client".into()])), None);
        let h = headers(&[
            ("x-remote-user", "system:kube-controller-manager"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-group", "ops"),
            ("x-remote-extra-scopes", "a"),
            ("x-remote-extra-example.org%2fteam", "b"),
            ("x-remote-extra-bad%zz", "c"),
        ]);
        rt().block_on(async {
            let user = policy.authenticate(Some(&peer(&front, "front-proxy-client", &[])), &h).await.unwrap();
            assert_eq!(user.name, "system:kube-controller-manager");
            assert_eq!(user.groups, ["system:authenticated", "ops"]);
            assert_eq!(user.extra["scopes"], ["a"]);
            assert_eq!(user.extra["example.org/team"], ["b"]);
            assert_eq!(user.extra["bad%zz"], ["c"]);
            assert_eq!(policy.authenticate(Some(&anonymous_peer()), &h).await, Err(Rejection::NoCredentials));
            assert_eq!(policy.authenticate(None, &h).await, Err(Rejection::NoCredentials));
            assert_eq!(
                policy.authenticate(Some(&peer(&front, "mallory", &[])), &h).await,
                Err(Rejection::NameNotAllowed { cn: "mallory".into() })
            );
            let rogue = peer(&ca("rogue"), "front-proxy-client", &[]);
            assert_eq!(policy.authenticate(Some(&rogue), &h).await, Err(Rejection::NoCredentials));
            assert!(matches!(
                policy.authenticate(Some(&peer(&front, "front-proxy-client", &[])), &HeaderMap::new()).await,
                Err(Rejection::NoUser { .. })
            ));
        });
    }

    #[test]
    fn header_names_come_from_the_trust_and_any_of_them_counts() {
        let front = ca("front-proxy-ca");
        let mut rh = RequestHeader::new(bundle(&front), vec![]);
        rh.username_headers = vec!["x-user".into(), "x-remote-user".into()];
        rh.group_headers = vec!["x-group".into()];
        rh.extra_prefixes = vec!["x-extra-".into()];
        let policy = delegated(Some(rh), None);
        let h =
            headers(&[("x-remote-user", "alice"), ("x-group", "g"), ("x-remote-group", "ignored"), ("x-extra-k", "v")]);
        let user = rt().block_on(policy.authenticate(Some(&peer(&front, "anyone", &[])), &h)).unwrap();
        assert_eq!((user.name.as_str(), user.groups.as_slice()), ("alice", ["g".to_owned()].as_slice()));
        assert_eq!(user.extra["k"], ["v"]);
    }

    #[test]
    fn client_ca_certificates_name_the_user_and_ignore_remote_headers() {
        let front = ca("front-proxy-ca");
        let cluster = ca("kubernetes-ca");
        let policy = delegated(Some(RequestHeader::new(bundle(&front), vec![])), Some(bundle(&cluster)));
        let h = headers(&[("x-remote-user", "system:admin")]);
        let user = rt().block_on(policy.authenticate(Some(&peer(&cluster, "jane", &["devs"])), &h)).unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, ["devs", "system:authenticated"]);
    }

    #[test]
    fn a_swapped_trust_re_checks_open_connections() {
        let old = ca("old-front-proxy-ca");
        let new = ca("new-front-proxy-ca");
        let Policy::Delegated(d) = delegated(Some(RequestHeader::new(bundle(&old), vec![])), None) else {
            unreachable!()
        };
        let policy = Policy::Delegated(d.clone());
        let h = headers(&[("x-remote-user", "alice")]);
        let (from_old, from_new) = (peer(&old, "p", &[]), peer(&new, "p", &[]));
        rt().block_on(async {
            assert!(policy.authenticate(Some(&from_old), &h).await.is_ok());
            assert_eq!(policy.authenticate(Some(&from_new), &h).await, Err(Rejection::NoCredentials));
            d.trust.store(Arc::new(Trust::new(Some(RequestHeader::new(bundle(&new), vec![])), None)));
            assert_eq!(policy.authenticate(Some(&from_old), &h).await, Err(Rejection::NoCredentials));
            assert!(policy.authenticate(Some(&from_new), &h).await.is_ok());
        });
    }

    #[test]
    fn bad_bundles_are_named() {
        assert!(matches!(ClientCa::from_pem(b"not pem"), Err(Error::NoCertificate { .. })));
        let err = ClientCa::from_pem_file(Path::new("/nonexistent/ca.crt")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.crt"));
    }
}
