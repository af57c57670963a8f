//! In-process tests of live authentication changes over real TLS (certificates from rcgen):
//! the trust swapped from ConfigMap data (CA, allowed names), bearer tokens by a stand-in
//! TokenReview, and the serving certificate reloaded from its files.

// clippy.toml allows unwrap in #[test] functions; the helpers below are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use derm_adapter::admin::{self, Health, ReloadMetrics, ReloadResult, ReloadSource};
use derm_adapter::api::{self, AppState};
use derm_adapter::auth::config::{Reloader, trust_from};
use derm_adapter::auth::token::{Review, TokenAuthenticator, TokenDecision};
use derm_adapter::auth::{Delegated, Policy, SharedTrust, User, token};
use derm_adapter::authz::{self, Attributes, Authorizer, Decide, Decision};
use derm_adapter::metrics::{Key, Snapshot, Staleness, Store, Value};
use derm_adapter::server::tls::{self, ServingCert};
use derm_adapter::server::{Limits, Server};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
mod common;
use common::ClientCert;

#[path = "../src/test_pki.rs"]
mod test_pki;
use test_pki::{Issuer, ca};
const FRONT_PROXY_CN: &str = "front-proxy-client";
const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/derm_desired_replicas";

/// PEM certificate and key of a leaf signed by `issuer`.
fn leaf_pem(issuer: &Issuer, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client_cert(issuer: &Issuer, cn: &str) -> ClientCert {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()).into())
}

/// ConfigMap data as kube-apiserver writes it, with `ca` as the request-header CA.
fn configmap(ca: &Issuer, allowed: &str) -> BTreeMap<String, String> {
    [
        ("requestheader-client-ca-file", ca.pem()),
        ("requestheader-allowed-names", allowed.to_owned()),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#.to_owned()),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#.to_owned()),
        ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

struct Served {
    addr: SocketAddr,
    server_ca: CertificateDer<'static>,
    _stop: oneshot::Sender<()>,
}

/// Serves the API with `policy` and `cert`, verifying client certificates against `trust`.
async fn serve(policy: Policy, cert: Arc<ServingCert>, server_ca: &Issuer) -> Served {
    let store = Arc::new(Store::default());
    store.publish(Snapshot::new([(
        Key::new("shop", "shop", "cart"),
        Value { replicas: 5, timestamp: std::time::SystemTime::now(), staleness: Staleness::NEVER, scale_target: None },
    )]));
    let trust = match &policy {
        Policy::Delegated(d) => Some(d.trust.clone()),
        Policy::Open => None,
    };
    let mut registry = Registry::default();
    let state = AppState {
        store: store.clone(),
        health: Arc::new(Health::new(store)),
        policy: Arc::new(policy),
        metrics: admin::Metrics::register(&mut registry),
        upstream: None,
    };
    let config = tls::live_server_config(cert, trust).unwrap();
    let server = Server::bind(([127, 0, 0, 1], 0).into(), Some(config), Limits::default()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(api::router(state), async {
        let _ = stopped.await;
    }));
    Served { addr, server_ca: server_ca.der().clone(), _stop: stop }
}

/// A serving certificate for derm-adapter from files in a fresh directory (kept alive by the
/// caller).
fn serving_cert(issuer: &Issuer) -> (tempfile::TempDir, Arc<ServingCert>) {
    let dir = tempfile::tempdir().unwrap();
    serving_files(dir.path(), issuer, "derm-adapter");
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let cert = Arc::new(ServingCert::from_files(&crt, &key, ReloadMetrics::default()).unwrap());
    (dir, cert)
}

fn serving_files(dir: &std::path::Path, issuer: &Issuer, cn: &str) {
    let (cert, key) = leaf_pem(issuer, cn, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

/// A connection as `client` (or without a certificate): the request sender and the server's leaf.
async fn connect(
    s: &Served,
    client: Option<ClientCert>,
) -> Result<(SendRequest<Empty<Bytes>>, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(s.addr).await.map_err(|e| e.to_string())?;
    let stream = common::connector(&s.server_ca, client)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, leaf))
}

/// GET [`PATH`] on `sender` with `headers`: the status code, or the error (a refused certificate
/// surfaces at the first read with TLS 1.3).
async fn get(sender: &mut SendRequest<Empty<Bytes>>, headers: &[(&str, &str)]) -> Result<(StatusCode, String), String> {
    let mut req = Request::get(PATH).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Empty::new()).unwrap()).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A fresh connection as `client`, one GET as user `alice` through the front proxy.
async fn once(s: &Served, client: Option<ClientCert>) -> Result<StatusCode, String> {
    let (mut sender, _) = connect(s, client).await?;
    get(&mut sender, &[("x-remote-user", "alice")]).await.map(|(code, _)| code)
}

#[tokio::test]
async fn configmap_changes_swap_the_ca_and_allowed_names_without_restart() {
    let (old, new) = (ca("front-proxy-ca-1"), ca("front-proxy-ca-2"));
    let server_ca = ca("serving-ca");
    let (_dir, cert) = serving_cert(&server_ca);
    let first = configmap(&old, r#"["front-proxy-client"]"#);
    let delegated = Delegated::new(trust_from(&first).unwrap());
    let trust: SharedTrust = delegated.trust.clone();
    let metrics = ReloadMetrics::default();
    let mut reloader = Reloader::new(trust, metrics.clone(), Some(first));
    let s = serve(Policy::Delegated(delegated), cert, &server_ca).await;

    // Before: the old CA's certificate is served, the new CA's refused.
    assert_eq!(once(&s, Some(client_cert(&old, FRONT_PROXY_CN))).await, Ok(StatusCode::OK));
    assert!(once(&s, Some(client_cert(&new, FRONT_PROXY_CN))).await.is_err(), "new CA before the swap");
    assert_eq!(once(&s, None).await, Ok(StatusCode::UNAUTHORIZED));
    // A connection opened under the old CA, kept across the swap.
    let (mut kept, _) = connect(&s, Some(client_cert(&old, FRONT_PROXY_CN))).await.unwrap();
    assert_eq!(get(&mut kept, &[("x-remote-user", "alice")]).await.unwrap().0, StatusCode::OK);

    // A malformed update changes nothing.
    let mut bad = configmap(&new, r#"["front-proxy-client"]"#);
    bad.insert(
        "requestheader-client-ca-file".into(),
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
    );
    assert!(!reloader.apply(bad));
    assert_eq!(metrics.count(ReloadSource::AuthenticationConfigMap, ReloadResult::Rejected), 1);
    assert_eq!(once(&s, Some(client_cert(&old, FRONT_PROXY_CN))).await, Ok(StatusCode::OK));

    // The CA rotates: new connections and the kept one follow.
    assert!(reloader.apply(configmap(&new, r#"["front-proxy-client"]"#)));
    assert_eq!(once(&s, Some(client_cert(&new, FRONT_PROXY_CN))).await, Ok(StatusCode::OK));
    assert!(once(&s, Some(client_cert(&old, FRONT_PROXY_CN))).await.is_err(), "old CA after the swap");
    let (code, body) = get(&mut kept, &[("x-remote-user", "alice")]).await.unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED, "the open connection's certificate is re-checked: {body}");

    // The allowed names change.
    assert!(reloader.apply(configmap(&new, r#"["aggregator"]"#)));
    assert_eq!(once(&s, Some(client_cert(&new, FRONT_PROXY_CN))).await, Ok(StatusCode::FORBIDDEN));
    assert_eq!(once(&s, Some(client_cert(&new, "aggregator"))).await, Ok(StatusCode::OK));
    assert_eq!(metrics.count(ReloadSource::AuthenticationConfigMap, ReloadResult::Applied), 2);
}

#[tokio::test]
async fn the_serving_certificate_is_reloaded_from_its_files() {
    let server_ca = ca("serving-ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    serving_files(dir.path(), &server_ca, "first");
    let metrics = ReloadMetrics::default();
    let cert = Arc::new(ServingCert::from_files(&cert_file, &key_file, metrics.clone()).unwrap());
    let s = serve(Policy::Open, cert.clone(), &server_ca).await;
    let served_cn = |leaf: &CertificateDer<'_>| derm_adapter::auth::common_name(leaf).unwrap();

    assert_eq!(served_cn(&connect(&s, None).await.unwrap().1), "first");
    assert!(!cert.reload().unwrap(), "unchanged files are not a reload");

    serving_files(dir.path(), &server_ca, "second");
    assert!(cert.reload().unwrap());
    let (mut sender, leaf) = connect(&s, None).await.unwrap();
    assert_eq!(served_cn(&leaf), "second");
    assert_eq!(get(&mut sender, &[]).await.unwrap().0, StatusCode::OK);

    // A key from another pair (a half-written Secret update) keeps the current certificate.
    let (_, other_key) = leaf_pem(&server_ca, "third", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(&key_file, other_key).unwrap();
    assert!(cert.reload().is_err());
    std::fs::write(&cert_file, "not a certificate").unwrap();
    let err = cert.reload().unwrap_err();
    assert!(err.to_string().contains("tls.crt"), "{err}");
    assert_eq!(served_cn(&connect(&s, None).await.unwrap().1), "second");
    assert_eq!(metrics.count(ReloadSource::ServingCertificate, ReloadResult::Applied), 1);
    assert_eq!(metrics.count(ReloadSource::ServingCertificate, ReloadResult::Rejected), 2);
}

#[tokio::test]
async fn bearer_tokens_are_reviewed_cached_and_authorized() {
    // The stand-in kube-apiserver: token `hpa-token` is the HPA's service account, `intruder`
    // a user without RBAC, `down` cannot be reviewed; only the HPA is authorized.
    let reviews = Arc::new(AtomicUsize::new(0));
    let counter = reviews.clone();
    let review: Review = Arc::new(move |t: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let user = |name: &str| User { name: name.into(), ..User::default() };
            match t.as_str() {
                "hpa-token" => Ok(TokenDecision::Authenticated(user("system:serviceaccount:kube-system:hpa"))),
                "intruder-token" => Ok(TokenDecision::Authenticated(user("intruder"))),
                "down" => Err("connection refused".into()),
                _ => Ok(TokenDecision::Unauthenticated("invalid token".into())),
            }
        })
    });
    let decide: Decide = Arc::new(|user: User, _: Attributes| {
        Box::pin(async move {
            Ok(if user.name.ends_with(":hpa") { Decision::Allow } else { Decision::Deny(String::new()) })
        })
    });
    let front = ca("front-proxy-ca");
    let mut delegated = Delegated::new(trust_from(&configmap(&front, "[]")).unwrap());
    let tokens = Arc::new(TokenAuthenticator::new(review, token::Config::default()));
    delegated.tokens = Some(tokens.clone());
    delegated.authorizer = Some(Arc::new(Authorizer::new(decide, authz::Config::default())));
    let server_ca = ca("serving-ca");
    let (_dir, cert) = serving_cert(&server_ca);
    let s = serve(Policy::Delegated(delegated), cert, &server_ca).await;
    let (mut sender, _) = connect(&s, None).await.unwrap();
    let mut as_token = async |t: &str| get(&mut sender, &[("authorization", &format!("Bearer {t}"))]).await.unwrap();

    for _ in 0..3 {
        let (code, body) = as_token("hpa-token").await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(reviews.load(Ordering::SeqCst), 1, "one TokenReview for a repeated token");
    let (code, body) = as_token("intruder-token").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "authenticated, then refused by the SubjectAccessReview: {body}");
    assert!(body.contains("\\\"intruder\\\" cannot list"), "{body}");
    for _ in 0..2 {
        let (code, body) = as_token("forged").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("invalid bearer token"), "{body}");
    }
    assert_eq!(reviews.load(Ordering::SeqCst), 3, "the negative answer is cached");
    for _ in 0..2 {
        let (code, body) = as_token("down").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("connection refused"), "{body}");
    }
    assert_eq!(reviews.load(Ordering::SeqCst), 5, "an unavailable review is not cached");
    assert_eq!(tokens.cached(), 3);
    // X-Remote-User without the front-proxy certificate is not an identity, token or not.
    let (code, _) = get(&mut sender, &[("x-remote-user", "system:serviceaccount:kube-system:hpa")]).await.unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}
