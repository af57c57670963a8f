//! In-process tests of the metrics API: the real server over real TLS (certificates from
//! rcgen), driven by a real hyper client.

// clippy.toml allows unwrap in #[test] functions; the helpers below are test code too.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use derm_adapter::admin::{self, Health, Metrics};
use derm_adapter::api::{self, AppState};
use derm_adapter::auth::{ClientCa, Delegated, Policy, RequestHeader, Trust, User};
use derm_adapter::authz::{self, Attributes, Authorizer, Decide, Decision};
use derm_adapter::crd::ScaleTargetRef;
use derm_adapter::metrics::{Key, Snapshot, Staleness, Store, Value};
use derm_adapter::server::tls::{self, Identity};
use derm_adapter::server::{Limits, Server};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value as Json, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
mod common;
use common::ClientCert;

const FRONT_PROXY_CN: &str = "front-proxy-client";
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

type Issuer = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate and key, signed by `issuer`.
fn leaf(issuer: &Issuer, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert, key)
}

/// Client credentials signed by `issuer`.
fn client_cert(issuer: &Issuer, cn: &str) -> ClientCert {
    let (cert, key) = leaf(issuer, cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
    (vec![cert.der().clone()], PrivatePkcs8KeyDer::from(key.serialize_der()).into())
}

struct Harness {
    addr: SocketAddr,
    store: Arc<Store>,
    server_ca: CertificateDer<'static>,
    front_ca: Issuer,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Harness {
    /// The API served with front-proxy authentication (allowed name [`FRONT_PROXY_CN`]).
    async fn start(limits: Limits) -> Self {
        Self::start_with(limits, None).await
    }

    /// The API served with front-proxy authentication (allowed name [`FRONT_PROXY_CN`]) and
    /// `authorizer`, if any.
    async fn start_with(limits: Limits, authorizer: Option<Arc<Authorizer>>) -> Self {
        let store = Arc::new(Store::default());
        let mut registry = Registry::default();
        let front_ca = ca("front-proxy-ca");
        let client_ca = ClientCa::from_pem(front_ca.pem().as_bytes()).unwrap();
        let rh = RequestHeader::new(client_ca, vec![FRONT_PROXY_CN.into()]);
        let mut delegated = Delegated::new(Trust::new(Some(rh), None));
        delegated.authorizer = authorizer;
        let state = AppState {
            store: store.clone(),
            health: Arc::new(Health::new(store.clone())),
            policy: Arc::new(Policy::Delegated(delegated)),
            metrics: Metrics::register(&mut registry),
            upstream: None,
        };
        Self::start_router_with(api::router(state), store, limits, front_ca).await
    }

    async fn start_router(router: axum::Router, store: Arc<Store>, limits: Limits) -> Self {
        Self::start_router_with(router, store, limits, ca("front-proxy-ca")).await
    }

    async fn start_router_with(router: axum::Router, store: Arc<Store>, limits: Limits, front_ca: Issuer) -> Self {
        let server_ca = ca("derm-test-serving-ca");
        let (cert, key) =
            leaf(&server_ca, "derm-adapter", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let identity =
            Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), "cert", "key").unwrap();
        let client_ca = ClientCa::from_pem(front_ca.pem().as_bytes()).unwrap();
        let config = tls::server_config(identity, Some(&client_ca)).unwrap();
        let server = Server::bind(([127, 0, 0, 1], 0).into(), Some(config), limits).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.serve(router, async {
            let _ = stopped.await;
        }));
        Self { addr, store, server_ca: server_ca.der().clone(), front_ca, stop: Some(stop), task }
    }

    fn front_proxy(&self, cn: &str) -> ClientCert {
        client_cert(&self.front_ca, cn)
    }

    async fn connect(&self, client: Option<ClientCert>) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        common::connector(&self.server_ca, client).connect(ServerName::try_from("localhost").unwrap(), tcp).await
    }

    /// GET `path` as the HPA through the front proxy.
    async fn get(&self, path: &str) -> (StatusCode, Json) {
        let req = request(path).header("x-remote-user", HPA_USER).body(Empty::new()).unwrap();
        self.request(Some(self.front_proxy(FRONT_PROXY_CN)), req).await.unwrap()
    }

    async fn request(
        &self,
        client: Option<ClientCert>,
        req: Request<Empty<Bytes>>,
    ) -> Result<(StatusCode, Json), String> {
        let stream = self.connect(client).await.map_err(|e| e.to_string())?;
        send(TokioIo::new(stream), req).await
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("server drains").unwrap();
    }
}

fn request(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "localhost")
}

async fn send<I>(io: I, req: Request<Empty<Bytes>>) -> Result<(StatusCode, Json), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into()));
    Ok((status, json))
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

const T0: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

fn value(replicas: u32, target: Option<&str>) -> Value {
    Value {
        replicas,
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(T0),
        staleness: Staleness::NEVER,
        scale_target: target.map(|n| ScaleTargetRef { kind: "Deployment".into(), name: n.into() }),
    }
}

fn shop() -> Snapshot {
    Snapshot::new([
        (Key::new("shop", "shop", "frontend"), value(3, Some("frontend"))),
        (Key::new("shop", "shop", "cart"), value(5, Some("cart"))),
        (Key::new("shop", "other", "x"), value(2, None)),
        (Key::new("elsewhere", "shop", "frontend"), value(9, None)),
    ])
}

const EXTERNAL: &str = "/apis/external.metrics.k8s.io/v1beta1";

fn external(selector: &str) -> String {
    format!("{EXTERNAL}/namespaces/shop/derm_desired_replicas?labelSelector={}", enc(selector))
}

fn assert_status(body: &Json, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

#[tokio::test]
async fn discovery_documents_match_golden_json() {
    let h = Harness::start(Limits::default()).await;
    let (code, body) = h.get(EXTERNAL).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "external.metrics.k8s.io/v1beta1",
               "resources": [{"name": "derm_desired_replicas", "singularName": "", "namespaced": true,
                              "kind": "ExternalMetricValueList", "verbs": ["get"]}]})
    );
    let (code, body) = h.get("/apis/custom.metrics.k8s.io/v1beta2").await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = body["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "deployments.apps/derm_desired_replicas",
            "statefulsets.apps/derm_desired_replicas",
            "replicasets.apps/derm_desired_replicas"
        ]
    );
    assert_eq!(body["resources"][0]["kind"], "MetricValueList");
    for path in ["/openapi/v2", "/openapi/v3"] {
        assert_eq!(h.get(path).await.0, StatusCode::OK, "{path}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn metric_values_match_golden_json_and_selectors() {
    let h = Harness::start(Limits::default()).await;
    h.store.publish(shop());
    let (code, body) = h.get(&external("service=cart")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
               "items": [{"metricName": "derm_desired_replicas", "metricLabels": {"app": "shop", "service": "cart"},
                          "timestamp": "2023-11-14T22:13:20Z", "value": "5"}]})
    );
    let cases: &[(&str, &[&str])] = &[
        ("", &["x", "cart", "frontend"]),
        ("app=shop", &["cart", "frontend"]),
        ("app==shop,service!=cart", &["frontend"]),
        ("service notin (cart,x)", &["frontend"]),
        ("app in (other)", &["x"]),
        ("service", &["x", "cart", "frontend"]),
        ("!service", &[]),
        ("!tier", &["x", "cart", "frontend"]),
        ("tier notin (web)", &["x", "cart", "frontend"]),
    ];
    for (selector, want) in cases {
        let (code, body) = h.get(&external(selector)).await;
        assert_eq!(code, StatusCode::OK, "{selector}: {body}");
        let got: Vec<&str> =
            body["items"].as_array().unwrap().iter().map(|i| i["metricLabels"]["service"].as_str().unwrap()).collect();
        assert_eq!(&got, want, "selector {selector:?}");
    }
    // Other namespaces are separate.
    let (_, body) = h.get(&format!("{EXTERNAL}/namespaces/elsewhere/derm_desired_replicas")).await;
    assert_eq!(body["items"][0]["value"], "9");
    h.shutdown().await;
}

#[tokio::test]
async fn errors_are_status_objects() {
    let h = Harness::start(Limits::default()).await;
    h.store.publish(shop());
    let (code, body) = h.get(&external("app in shop")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&body, 400, "BadRequest");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("invalid labelSelector") && message.contains("'(' after 'in'"), "{message}");

    let (code, body) = h.get(&format!("{EXTERNAL}/namespaces/shop/cpu_usage")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");
    assert!(body["message"].as_str().unwrap().contains("cpu_usage"));

    for path in ["/apis", "/apis/external.metrics.k8s.io", "/nope"] {
        let (code, body) = h.get(path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_status(&body, 404, "NotFound");
    }

    let post = Request::post(EXTERNAL)
        .header("host", "localhost")
        .header("x-remote-user", HPA_USER)
        .body(Empty::new())
        .unwrap();
    let (code, body) = h.request(Some(h.front_proxy(FRONT_PROXY_CN)), post).await.unwrap();
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert_status(&body, 405, "MethodNotAllowed");
    h.shutdown().await;
}

#[tokio::test]
async fn object_metrics_on_scale_targets() {
    let h = Harness::start(Limits::default()).await;
    h.store.publish(shop());
    let base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop";
    for resource in ["deployments.apps", "deployments"] {
        let (code, body) = h.get(&format!("{base}/{resource}/cart/derm_desired_replicas")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2", "metadata": {},
                   "items": [{"describedObject": {"kind": "Deployment", "namespace": "shop", "name": "cart",
                                                  "apiVersion": "apps/v1"},
                              "metric": {"name": "derm_desired_replicas"},
                              "timestamp": "2023-11-14T22:13:20Z", "value": "5"}]})
        );
    }
    let (code, body) = h.get(&format!("{base}/deployments.apps/payment/derm_desired_replicas")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");
    let (code, _) = h.get(&format!("{base}/statefulsets.apps/cart/derm_desired_replicas")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

#[tokio::test]
async fn expired_values_answer_503_and_stale_ones_are_held() {
    let h = Harness::start(Limits::default()).await;
    let now = SystemTime::now();
    let staleness = Staleness { hold: Duration::from_secs(60), error_after: Duration::from_secs(600) };
    let aged =
        |replicas, age| Value { replicas, timestamp: now - Duration::from_secs(age), staleness, scale_target: None };
    h.store.publish(Snapshot::new([
        (Key::new("shop", "shop", "cart"), aged(4, 300)),
        (Key::new("shop", "shop", "ui"), aged(2, 700)),
    ]));
    // Stale but within the error threshold: the last good value is held.
    let (code, body) = h.get(&external("service=cart")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["items"][0]["value"], "4");
    // Past the threshold: 503, so the HPA keeps its current count.
    let (code, body) = h.get(&external("service=ui")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_status(&body, 503, "ServiceUnavailable");
    assert!(body["message"].as_str().unwrap().contains("stale"), "{body}");
    let (code, _) = h.get(&external("")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "any expired match fails the whole answer");
    h.shutdown().await;
}

#[tokio::test]
async fn front_proxy_certificate_is_required_and_checked() {
    let h = Harness::start(Limits::default()).await;
    h.store.publish(shop());
    let path = format!("{EXTERNAL}/namespaces/shop/derm_desired_replicas");
    let with_user = || request(&path).header("x-remote-user", HPA_USER).body(Empty::new()).unwrap();

    // No client certificate: the X-Remote-User header is not trusted.
    let (code, body) = h.request(None, with_user()).await.unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_status(&body, 401, "Unauthorized");

    // A certificate from the request-header CA with a name not allowed.
    let (code, body) = h.request(Some(h.front_proxy("mallory")), with_user()).await.unwrap();
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_status(&body, 403, "Forbidden");

    // A certificate from another CA fails the TLS handshake (or the first read after it).
    let rogue = client_cert(&ca("rogue-ca"), FRONT_PROXY_CN);
    assert!(h.request(Some(rogue), with_user()).await.is_err());

    // The allowed name without a user header.
    let (code, _) =
        h.request(Some(h.front_proxy(FRONT_PROXY_CN)), request(&path).body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // The allowed name with a user: served.
    let (code, body) = h.request(Some(h.front_proxy(FRONT_PROXY_CN)), with_user()).await.unwrap();
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 3);

    // Health probes need no credentials.
    let (code, _) = h.request(None, request("/livez").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(code, StatusCode::OK);
    h.shutdown().await;
}

/// GET `path` through the front proxy as `user`.
async fn get_as(h: &Harness, path: &str, user: &str) -> (StatusCode, Json) {
    let req = request(path).header("x-remote-user", user).body(Empty::new()).unwrap();
    h.request(Some(h.front_proxy(FRONT_PROXY_CN)), req).await.unwrap()
}

#[tokio::test]
async fn authorization_allows_the_hpa_and_forbids_others_with_a_status() {
    // The decision function stands in for kube-apiserver: the HPA may list external metrics
    // and get object metrics in `shop`; "down" makes kube-apiserver unreachable.
    let asked: Arc<std::sync::Mutex<Vec<(String, Attributes)>>> = Arc::default();
    let log = asked.clone();
    let decide: Decide = Arc::new(move |user: User, attrs: Attributes| {
        log.lock().unwrap().push((user.name.clone(), attrs.clone()));
        Box::pin(async move {
            match user.name.as_str() {
                "down" => Err("connection refused".to_owned()),
                HPA_USER if attrs.namespace == "shop" => Ok(Decision::Allow),
                _ => Ok(Decision::Deny(String::new())),
            }
        })
    });
    let authorizer = Arc::new(Authorizer::new(decide, authz::Config::default()));
    let h = Harness::start_with(Limits::default(), Some(authorizer)).await;
    h.store.publish(shop());

    for _ in 0..3 {
        let (code, body) = h.get(&external("app=shop,service=cart")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["items"][0]["value"], "5");
    }
    let (code, body) =
        h.get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/shop/deployments.apps/cart/derm_desired_replicas").await;
    assert_eq!(code, StatusCode::OK, "{body}");

    let (code, body) = get_as(&h, &external("app=shop"), "mallory").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_status(&body, 403, "Forbidden");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("\"mallory\" cannot list"), "{message}");
    assert!(message.contains("\"derm_desired_replicas\" in API group \"external.metrics.k8s.io\""), "{message}");
    let (code, _) = h.get(&format!("{EXTERNAL}/namespaces/elsewhere/derm_desired_replicas")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "the HPA is allowed in shop only");

    let (code, body) = get_as(&h, &external("app=shop"), "down").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["message"].as_str().unwrap().contains("connection refused"), "{body}");

    // Discovery needs authentication only.
    assert_eq!(get_as(&h, EXTERNAL, "mallory").await.0, StatusCode::OK);

    let asked = asked.lock().unwrap().clone();
    let hpa: Vec<&Attributes> = asked.iter().filter(|(u, _)| u == HPA_USER).map(|(_, a)| a).collect();
    assert_eq!(hpa.len(), 3, "three repeated GETs, one review each for three questions: {hpa:?}");
    assert_eq!(*hpa[0], Attributes::external("shop", "derm_desired_replicas"));
    assert_eq!(*hpa[1], Attributes::object("shop", "deployments.apps", "cart", "derm_desired_replicas"));
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_are_rejected() {
    let h = Harness::start(Limits { max_header_bytes: 16 * 1024, ..Limits::default() }).await;
    let big = "a".repeat(64 * 1024);
    let req = request(EXTERNAL).header("x-remote-user", HPA_USER).header("x-padding", big).body(Empty::new()).unwrap();
    let result = h.request(Some(h.front_proxy(FRONT_PROXY_CN)), req).await;
    assert!(matches!(result, Ok((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, _))), "{result:?}");
    // The server keeps serving.
    assert_eq!(h.get(EXTERNAL).await.0, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_completes_in_flight_requests() {
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let started = started_tx.lock().unwrap().take();
            async move {
                if let Some(tx) = started {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        }),
    );
    let h = Harness::start_router(router, Arc::new(Store::default()), Limits::default()).await;
    let stream = h.connect(None).await.unwrap();
    let in_flight = tokio::spawn(send(TokioIo::new(stream), request("/slow").body(Empty::new()).unwrap()));
    tokio::time::timeout(Duration::from_secs(5), started_rx).await.unwrap().unwrap();
    let addr = h.addr;
    h.shutdown().await;
    let (code, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, Json::String("done".into()));
    assert!(TcpStream::connect(addr).await.is_err(), "listener is closed after shutdown");
}

#[tokio::test]
async fn admin_port_reports_readiness_and_metrics() {
    let store = Arc::new(Store::default());
    let health = Arc::new(Health::new(store.clone()));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.observe_request(admin::Route::ExternalMetric, 200, Duration::from_millis(2));
    let router = admin::router(Arc::new(registry), metrics, store.clone(), health.clone());
    let server = Server::bind(([127, 0, 0, 1], 0).into(), None, Limits::default()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(router, async {
        let _ = stopped.await;
    }));
    let get = |path: &'static str| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        send(TokioIo::new(tcp), request(path).body(Empty::new()).unwrap()).await.unwrap()
    };
    assert_eq!(get("/livez").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await, (StatusCode::SERVICE_UNAVAILABLE, Json::String("no published values yet".into())));
    store.publish(shop());
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (code, text) = get("/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(text.contains(r#"derm_adapter_api_requests_total{route="ExternalMetric",code="200"} 1"#), "{text}");
    assert!(text.contains(r#"derm_adapter_published_series{freshness="Fresh"} 4"#), "{text}");
    health.shut_down();
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}
