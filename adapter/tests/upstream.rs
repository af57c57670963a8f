//! `serve --upstream`: Derm in front of a fake upstream adapter, both over real TLS
//! (certificates from rcgen), driven by a real hyper client.

// clippy.toml allows unwrap in #[test] functions; the helpers below are test code too.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::get;
use derm_adapter::admin::{Health, Metrics};
use derm_adapter::api::{self, AppState};
use derm_adapter::auth::{self, ClientCa, Delegated, Policy, RequestHeader, User};
use derm_adapter::authz::{self, Attributes, Authorizer, Decide, Decision};
use derm_adapter::metrics::{Key, Snapshot, Staleness, Store, Value};
use derm_adapter::server::tls::{self, Identity};
use derm_adapter::server::{Limits, Server};
use derm_adapter::upstream::{self, Kind, Outcome, Trust, Upstream};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value as Json, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

#[path = "../src/test_pki.rs"]
mod test_pki;
use test_pki::{Issuer, ca};
const FRONT_PROXY_CN: &str = "front-proxy-client";
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const EXTERNAL: &str = "/apis/external.metrics.k8s.io/v1beta1";
const CUSTOM: &str = "/apis/custom.metrics.k8s.io/v1beta2";
/// The upstream's own metric, with a body Derm could not have produced.
const QUEUE_BODY: &str = r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":[{"metricName":"queue_depth","metricLabels":{"from":"upstream"},"timestamp":"2024-01-01T00:00:00Z","value":"42"}]}"#;

/// A serving identity for localhost/127.0.0.1 signed by `issuer`.
fn serving(issuer: &Issuer) -> Identity {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), "cert", "key").unwrap()
}

/// Serves `router` over TLS on 127.0.0.1:0 until the sender is dropped or fired.
async fn serve(
    router: axum::Router,
    identity: Identity,
    client_ca: Option<&ClientCa>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let config = tls::server_config(identity, client_ca).unwrap();
    let server = Server::bind(([127, 0, 0, 1], 0).into(), Some(config), Limits::default()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(server.serve(router, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// What the fake upstream saw: the Authorization header and the path+query of each call.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A fake KEDA: one external metric `queue_depth`, its discovery (with a clashing
/// `derm_desired_replicas` entry), an oversized metric, node metrics, and no custom discovery.
fn fake_upstream(seen: Seen) -> axum::Router {
    let record = move |headers: &HeaderMap, uri: &http::Uri| {
        let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push((auth, uri.to_string()));
    };
    let r1 = record.clone();
    let r2 = record.clone();
    axum::Router::new()
        .route(
            EXTERNAL,
            get(move |headers: HeaderMap, uri: http::Uri| async move {
                record(&headers, &uri);
                axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "external.metrics.k8s.io/v1beta1",
                    "resources": [
                        {"name": "queue_depth", "singularName": "", "namespaced": true,
                         "kind": "ExternalMetricValueList", "verbs": ["get"]},
                        {"name": "derm_desired_replicas", "singularName": "", "namespaced": true,
                         "kind": "FromUpstream", "verbs": ["get"]}]}))
            }),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}",
            get(move |Path((_, metric)): Path<(String, String)>, headers: HeaderMap, uri: http::Uri| async move {
                r1(&headers, &uri);
                match metric.as_str() {
                    "queue_depth" => {
                        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], QUEUE_BODY.to_owned())
                    }
                    "huge" => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "x".repeat(64 * 1024)),
                    _ => (
                        StatusCode::NOT_FOUND,
                        [(header::CONTENT_TYPE, "text/plain; charset=upstream")],
                        format!("no metric {metric}"),
                    ),
                }
            }),
        )
        .route(
            "/apis/custom.metrics.k8s.io/v1beta2/nodes/{name}/{metric}",
            get(move |Path((name, metric)): Path<(String, String)>, headers: HeaderMap, uri: http::Uri| async move {
                r2(&headers, &uri);
                axum::Json(json!({"node": name, "metric": metric}))
            }),
        )
}

struct Derm {
    addr: SocketAddr,
    server_ca: CertificateDer<'static>,
    front_ca: Issuer,
    upstream_metrics: upstream::Metrics,
    _stop: oneshot::Sender<()>,
}

/// Derm with front-proxy authentication and an authorizer allowing only the HPA, forwarding
/// to `config`.
async fn derm(config: upstream::Config) -> Derm {
    let store = Arc::new(Store::default());
    store.publish(Snapshot::new([(
        Key::new("shop", "shop", "cart"),
        Value { replicas: 5, timestamp: SystemTime::now(), staleness: Staleness::NEVER, scale_target: None },
    )]));
    let decide: Decide = Arc::new(|user: User, _: Attributes| {
        Box::pin(async move { Ok(if user.name == HPA_USER { Decision::Allow } else { Decision::Deny(String::new()) }) })
    });
    let front_ca = ca("front-proxy-ca");
    let client_ca = ClientCa::from_pem(front_ca.pem().as_bytes()).unwrap();
    let rh = RequestHeader::new(client_ca.clone(), vec![FRONT_PROXY_CN.into()]);
    let mut delegated = Delegated::new(auth::Trust::new(Some(rh), None));
    delegated.authorizer = Some(Arc::new(Authorizer::new(decide, authz::Config::default())));
    let mut registry = Registry::default();
    let upstream_metrics = upstream::Metrics::register(&mut registry);
    let state = AppState {
        store: store.clone(),
        health: Arc::new(Health::new(store)),
        policy: Arc::new(Policy::Delegated(delegated)),
        metrics: Metrics::register(&mut registry),
        upstream: Some(Arc::new(Upstream::new(config, upstream_metrics.clone()).unwrap())),
    };
    let server_ca = ca("derm-serving-ca");
    let (addr, stop) = serve(api::router(state), serving(&server_ca), Some(&client_ca)).await;
    Derm { addr, server_ca: server_ca.der().clone(), front_ca, upstream_metrics, _stop: stop }
}

impl Derm {
    /// GET `path` through the front proxy as `user`: status, content type, body.
    async fn get_as(&self, path: &str, user: &str) -> (StatusCode, String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, FRONT_PROXY_CN);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.front_ca).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()).into())
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let stream = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "localhost")
            .header("x-remote-user", user)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let ct = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, String, String) {
        self.get_as(path, HPA_USER).await
    }
}

fn names(body: &str) -> Vec<(String, String)> {
    let json: Json = serde_json::from_str(body).unwrap();
    json["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["kind"].as_str().unwrap().to_owned()))
        .collect()
}

fn status_of(body: &str) -> Json {
    let json: Json = serde_json::from_str(body).unwrap();
    assert_eq!(json["kind"], "Status", "{json}");
    json
}

/// A running fake upstream, its CA file and token file.
struct Fake {
    addr: SocketAddr,
    seen: Seen,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Fake {
    async fn start() -> Self {
        let upstream_ca = ca("upstream-ca");
        let seen = Seen::default();
        let (addr, stop) = serve(fake_upstream(seen.clone()), serving(&upstream_ca), None).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), upstream_ca.pem()).unwrap();
        std::fs::write(dir.path().join("token"), "token-one\n").unwrap();
        Self { addr, seen, dir, _stop: stop }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    fn config(&self) -> upstream::Config {
        let trust = Trust::CaFile(self.dir.path().join("ca.crt"));
        upstream::Config::new(format!("https://localhost:{}", self.addr.port()), Some(self.token_file()), trust)
    }

    fn seen(&self) -> Vec<(Option<String>, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn forwards_other_metrics_and_merges_discovery() {
    let fake = Fake::start().await;
    let derm = derm(fake.config()).await;

    // Discovery: Derm's entry first and winning the clash, then the upstream's.
    let (code, _, body) = derm.get(EXTERNAL).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        names(&body),
        [
            ("derm_desired_replicas".to_owned(), "ExternalMetricValueList".to_owned()),
            ("queue_depth".to_owned(), "ExternalMetricValueList".to_owned())
        ]
    );
    // The upstream has no custom metrics (404): Derm's list alone.
    let (code, _, body) = derm.get(CUSTOM).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(names(&body).len(), 3, "{body}");

    // The upstream's metric, byte for byte, with its query, and Derm's token.
    let path = format!("{EXTERNAL}/namespaces/shop/queue_depth?labelSelector=queue%3Dorders");
    let (code, ct, body) = derm.get(&path).await;
    assert_eq!((code, ct.as_str(), body.as_str()), (StatusCode::OK, "application/json", QUEUE_BODY));
    let last = fake.seen().last().cloned().unwrap();
    assert_eq!(last, (Some("Bearer token-one".to_owned()), path.clone()));

    // Upstream errors pass through as they are.
    let (code, ct, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/nothing")).await;
    assert_eq!(
        (code, ct.as_str(), body.as_str()),
        (StatusCode::NOT_FOUND, "text/plain; charset=upstream", "no metric nothing")
    );

    // Root-scoped object metrics are forwarded too.
    let (code, _, body) = derm.get(&format!("{CUSTOM}/nodes/n1/cpu_usage")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Json>(&body).unwrap(), json!({"node": "n1", "metric": "cpu_usage"}));

    // Derm's own metric is Derm's, though the upstream lists the name too.
    let before = fake.seen().len();
    let (code, _, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/derm_desired_replicas")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let json: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(json["items"][0]["value"], "5");
    assert_eq!(fake.seen().len(), before, "Derm's metric never reaches the upstream");

    // A user Derm does not authorize never reaches the upstream either.
    let (code, _, body) = derm.get_as(&format!("{EXTERNAL}/namespaces/shop/queue_depth"), "mallory").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(fake.seen().len(), before);

    // Token rotation: the next forward carries the new token.
    std::fs::write(fake.token_file(), "token-two-rotated").unwrap();
    let (code, _, _) = derm.get(&path).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(fake.seen().last().unwrap().0.as_deref(), Some("Bearer token-two-rotated"));

    // Discovery is cached: a second call does not ask the upstream again.
    let discoveries = |seen: &[(Option<String>, String)]| seen.iter().filter(|(_, p)| p == EXTERNAL).count();
    assert_eq!(discoveries(&fake.seen()), 1);
    let _ = derm.get(EXTERNAL).await;
    assert_eq!(discoveries(&fake.seen()), 1);

    let m = &derm.upstream_metrics;
    assert_eq!(m.count(Kind::Metric, Outcome::Success), 3, "queue_depth twice, nodes");
    assert_eq!(m.count(Kind::Metric, Outcome::ErrorStatus), 1, "nothing");
    assert_eq!(m.count(Kind::Discovery, Outcome::Success), 1);
    assert_eq!(m.count(Kind::Discovery, Outcome::ErrorStatus), 1, "no custom metrics upstream");
}

#[tokio::test]
async fn upstream_down_answers_503_and_derm_keeps_serving() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let url = format!("https://127.0.0.1:{}", closed.port());
    let derm = derm(upstream::Config::new(url.clone(), None, Trust::InsecureSkipVerify)).await;

    let (code, _, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/queue_depth")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let status = status_of(&body);
    assert_eq!((status["code"].as_u64(), status["reason"].as_str()), (Some(503), Some("ServiceUnavailable")));
    assert!(status["message"].as_str().unwrap().contains(&url), "names the upstream: {status}");

    let (code, _, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/derm_desired_replicas")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _, body) = derm.get(EXTERNAL).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(names(&body), [("derm_desired_replicas".to_owned(), "ExternalMetricValueList".to_owned())]);

    assert_eq!(derm.upstream_metrics.count(Kind::Metric, Outcome::Unreachable), 1);
    assert_eq!(derm.upstream_metrics.count(Kind::Discovery, Outcome::Unreachable), 1);
}

#[tokio::test]
async fn silent_upstreams_time_out_and_huge_bodies_are_refused() {
    // Accepts TCP (the kernel completes the handshake) but never answers TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = upstream::Config::new(
        format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port()),
        None,
        Trust::InsecureSkipVerify,
    );
    config.timeout = Duration::from_millis(300);
    let derm_silent = derm(config).await;
    let (code, _, body) = derm_silent.get(&format!("{EXTERNAL}/namespaces/shop/queue_depth")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(status_of(&body)["message"].as_str().unwrap().contains("no answer within"), "{body}");
    assert_eq!(derm_silent.upstream_metrics.count(Kind::Metric, Outcome::Timeout), 1);

    let fake = Fake::start().await;
    let mut config = fake.config();
    config.max_body_bytes = 16 * 1024;
    let derm = derm(config).await;
    let (code, _, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/huge")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(status_of(&body)["message"].as_str().unwrap().contains("over 16384 bytes"), "{body}");
    assert_eq!(derm.upstream_metrics.count(Kind::Metric, Outcome::TooLarge), 1);
    drop(silent);
}

#[tokio::test]
async fn a_wrong_upstream_ca_is_a_503_not_a_forward() {
    let fake = Fake::start().await;
    let other = ca("someone-else");
    std::fs::write(fake.dir.path().join("other.crt"), other.pem()).unwrap();
    let mut config = fake.config();
    config.trust = Trust::CaFile(fake.dir.path().join("other.crt"));
    let derm = derm(config).await;
    let (code, _, body) = derm.get(&format!("{EXTERNAL}/namespaces/shop/queue_depth")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(fake.seen().is_empty(), "no request reached an upstream Derm does not trust");
}
