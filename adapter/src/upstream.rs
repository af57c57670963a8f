//! `serve --upstream URL`: the adapter Derm replaced keeps serving its metrics through Derm.
//!
//! Only one APIService per group-version exists, so installing Derm on
//! `external.metrics.k8s.io/v1beta1` or `custom.metrics.k8s.io/v1beta2` displaces KEDA or
//! prometheus-adapter. With an upstream, [`crate::api`] forwards GETs of metric names Derm
//! does not serve to it (after authenticating and authorizing the caller itself), returning
//! status, content type and body unchanged, and merges the upstream's discovery into its own.
//!
//! Derm cannot present kube-apiserver's front-proxy certificate, so it calls the upstream
//! with its own ServiceAccount token ([`token`]); the upstream authorizes Derm, not the user.
//! Failures (connection, timeout, oversized body) answer a 503 `Status` naming the upstream.

pub mod tls;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use self::tls::Trust;
use self::token::TokenFile;

/// The in-cluster ServiceAccount token, the default `--upstream-token-file`.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The in-cluster CA, the default `--upstream-ca-file`.
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Errors building the upstream client (at start, before anything is served).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse or is not `https://host[:port][/prefix]`.
    #[error("invalid --upstream {url:?}: {detail}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// The CA bundle could not be read.
    #[error("cannot read the upstream CA bundle {path}")]
    ReadCa {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle holds no usable certificate.
    #[error("upstream CA bundle {path}: {detail}")]
    BadCa {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("upstream TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// What the upstream client needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, `https://host[:port][/prefix]`.
    pub url: String,
    /// Bearer token file (re-read when it changes), or none.
    pub token_file: Option<PathBuf>,
    /// How the upstream's certificate is checked.
    pub trust: Trust,
    /// Whole-request limit: connect, headers and body.
    pub timeout: Duration,
    /// Largest upstream body accepted.
    pub max_body_bytes: usize,
    /// How long an upstream discovery document is reused.
    pub discovery_ttl: Duration,
}

impl Config {
    /// `url` with the defaults: 5 s timeout, 16 MiB bodies, discovery reused for 30 s.
    pub fn new(url: impl Into<String>, token_file: Option<PathBuf>, trust: Trust) -> Self {
        Self {
            url: url.into(),
            token_file,
            trust,
            timeout: Duration::from_secs(5),
            max_body_bytes: 16 << 20,
            discovery_ttl: Duration::from_secs(30),
        }
    }
}

/// What a forwarded call was for, as a bounded label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Kind {
    /// A metric GET.
    Metric,
    /// A discovery document (refreshes only; cached answers are not counted).
    Discovery,
}

/// How a forwarded call ended, as a bounded label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// The upstream answered 2xx.
    Success,
    /// The upstream answered with another status (passed on as it is).
    ErrorStatus,
    /// No complete answer within the timeout.
    Timeout,
    /// Connection or TLS failure, or a broken response.
    Unreachable,
    /// The body exceeded the limit.
    TooLarge,
    /// A discovery document that does not decode.
    Invalid,
}

/// Labels of [`Metrics`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    /// What the call was for.
    pub kind: Kind,
    /// How it ended.
    pub outcome: Outcome,
}

/// Upstream call counts. Clones share the same series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers `derm_adapter_upstream_requests_total{kind, outcome}`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        registry.sub_registry_with_prefix("derm_adapter").register(
            "upstream_requests",
            "Requests forwarded to the --upstream adapter by kind and outcome",
            this.requests.clone(),
        );
        this
    }

    fn inc(&self, kind: Kind, outcome: Outcome) {
        self.requests.get_or_create(&Labels { kind, outcome }).inc();
    }

    /// The count so far (tests, diagnostics).
    pub fn count(&self, kind: Kind, outcome: Outcome) -> u64 {
        self.requests.get_or_create(&Labels { kind, outcome }).get()
    }
}

/// A complete upstream answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// Why no answer came back.
#[derive(Debug)]
struct Failure {
    outcome: Outcome,
    detail: String,
}

#[derive(Debug)]
struct Cached {
    until: Instant,
    resources: Vec<APIResource>,
}

/// The upstream adapter: an HTTPS client with Derm's credentials.
#[derive(Debug)]
pub struct Upstream {
    /// `scheme://authority[/prefix]`, no trailing slash; shown in errors.
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    token: TokenFile,
    config: Config,
    metrics: Metrics,
    discovery: tokio::sync::Mutex<HashMap<String, Cached>>,
}

impl Upstream {
    /// Checks the URL and builds the client; the CA bundle is read here, so a bad one fails
    /// at start.
    pub fn new(config: Config, metrics: Metrics) -> Result<Self, Error> {
        let bad = |detail: &str| Error::Url { url: config.url.clone(), detail: detail.into() };
        let uri: Uri = config.url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the scheme must be https (the bearer token must not travel in clear)"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let base = format!("https://{authority}{}", uri.path().trim_end_matches('/'));
        if matches!(config.trust, Trust::InsecureSkipVerify) {
            tracing::warn!(
                upstream = %base,
                "--upstream-insecure-skip-tls-verify: the upstream's certificate is NOT verified and Derm's \
                 token is sent to whoever answers; for tests only"
            );
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(&config.trust)?)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        let token = TokenFile::new(config.token_file.clone());
        if token.path().is_none() {
            tracing::warn!(upstream = %base, "no upstream token file: requests to the upstream carry no credentials");
        }
        Ok(Self { base, client, token, config, metrics, discovery: tokio::sync::Mutex::default() })
    }

    /// The base URL, as shown in errors and logs.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Forwards a GET of `path_and_query` (the caller's, unchanged); `accept` is the caller's
    /// Accept header. The upstream's status, content type and body come back as they are.
    pub async fn forward(&self, path_and_query: &str, accept: Option<&HeaderValue>) -> Response {
        match self.get(path_and_query, accept).await {
            Ok(answer) => {
                let outcome = if answer.status.is_success() { Outcome::Success } else { Outcome::ErrorStatus };
                self.metrics.inc(Kind::Metric, outcome);
                let mut resp = (answer.status, answer.body).into_response();
                match answer.content_type {
                    Some(ct) => resp.headers_mut().insert(header::CONTENT_TYPE, ct),
                    None => resp.headers_mut().remove(header::CONTENT_TYPE),
                };
                resp
            }
            Err(failure) => {
                self.metrics.inc(Kind::Metric, failure.outcome);
                tracing::warn!(upstream = %self.base, path = path_and_query, detail = %failure.detail, "upstream failed");
                crate::api::Error::Unavailable(format!("upstream adapter {} failed: {}", self.base, failure.detail))
                    .into_response()
            }
        }
    }

    /// The upstream's resources on `group_version`, reused for the discovery TTL (a failure
    /// for a few seconds). Empty when the upstream is down or does not serve that version.
    pub async fn resources(&self, group_version: &str) -> Vec<APIResource> {
        let mut cache = self.discovery.lock().await;
        if let Some(c) = cache.get(group_version).filter(|c| c.until > Instant::now()) {
            return c.resources.clone();
        }
        let (resources, ttl) = match self.fetch_discovery(group_version).await {
            Ok(resources) => (resources, self.config.discovery_ttl),
            Err(failure) => {
                self.metrics.inc(Kind::Discovery, failure.outcome);
                tracing::warn!(
                    upstream = %self.base, group_version, detail = %failure.detail,
                    "upstream discovery failed: serving Derm's resources alone"
                );
                (Vec::new(), self.config.discovery_ttl.min(Duration::from_secs(5)))
            }
        };
        cache.insert(group_version.to_owned(), Cached { until: Instant::now() + ttl, resources: resources.clone() });
        resources
    }

    async fn fetch_discovery(&self, group_version: &str) -> Result<Vec<APIResource>, Failure> {
        let answer = self.get(&format!("/apis/{group_version}"), None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            // The upstream does not serve this group-version (KEDA has no custom metrics).
            self.metrics.inc(Kind::Discovery, Outcome::ErrorStatus);
            return Ok(Vec::new());
        }
        if !answer.status.is_success() {
            return Err(Failure { outcome: Outcome::ErrorStatus, detail: format!("answered {}", answer.status) });
        }
        let list: APIResourceList = serde_json::from_slice(&answer.body)
            .map_err(|e| Failure { outcome: Outcome::Invalid, detail: format!("not an APIResourceList: {e}") })?;
        self.metrics.inc(Kind::Discovery, Outcome::Success);
        Ok(list.resources)
    }

    async fn get(&self, path_and_query: &str, accept: Option<&HeaderValue>) -> Result<Answer, Failure> {
        let unreachable = |detail: String| Failure { outcome: Outcome::Unreachable, detail };
        let uri: Uri = format!("{}{path_and_query}", self.base)
            .parse()
            .map_err(|e: http::uri::InvalidUri| unreachable(format!("invalid path {path_and_query:?}: {e}")))?;
        let mut req = Request::get(uri);
        req = req.header(header::ACCEPT, accept.cloned().unwrap_or(HeaderValue::from_static("application/json")));
        if let Some(token) = self.token.get().await {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| unreachable("the token file holds characters not allowed in a header".into()))?;
            req = req.header(header::AUTHORIZATION, value);
        }
        let req = req.body(Empty::new()).map_err(|e| unreachable(e.to_string()))?;
        let limit = self.config.max_body_bytes;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Failure { outcome: Outcome::TooLarge, detail: format!("response body over {limit} bytes") }
                } else {
                    unreachable(format!("reading the body: {e}"))
                }
            })?;
            Ok(Answer {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.config.timeout, call).await.unwrap_or_else(|_| {
            Err(Failure { outcome: Outcome::Timeout, detail: format!("no answer within {:?}", self.config.timeout) })
        })
    }
}

/// `e` and its sources, `: `-joined (hyper's top-level message alone says only "client error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Derm's resources, then the upstream's whose names Derm does not use.
pub fn merge(mut own: Vec<APIResource>, upstream: Vec<APIResource>) -> Vec<APIResource> {
    let taken: std::collections::HashSet<String> = own.iter().map(|r| r.name.clone()).collect();
    own.extend(upstream.into_iter().filter(|r| !taken.contains(&r.name)));
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str, kind: &str) -> APIResource {
        APIResource { name: name.into(), kind: kind.into(), ..APIResource::default() }
    }

    #[test]
    fn derm_wins_name_clashes() {
        let merged = merge(
            vec![resource("derm_desired_replicas", "Derm")],
            vec![resource("derm_desired_replicas", "Other"), resource("queue_depth", "Other")],
        );
        let got: Vec<(&str, &str)> = merged.iter().map(|r| (r.name.as_str(), r.kind.as_str())).collect();
        assert_eq!(got, [("derm_desired_replicas", "Derm"), ("queue_depth", "Other")]);
    }

    #[test]
    fn outcomes_are_exposed_on_the_admin_registry() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.inc(Kind::Metric, Outcome::Timeout);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"derm_adapter_upstream_requests_total{kind="Metric",outcome="Timeout"} 1"#), "{text}");
    }

    #[test]
    fn urls_are_checked() {
        let config = |url: &str| Config::new(url, None, Trust::InsecureSkipVerify);
        for bad in ["http://keda.svc", "keda.svc:443", "https://keda.svc/?x=1", "not a url"] {
            assert!(Upstream::new(config(bad), Metrics::default()).is_err(), "{bad}");
        }
        let up = Upstream::new(config("https://keda-metrics.keda.svc:443/"), Metrics::default()).unwrap();
        assert_eq!(up.base(), "https://keda-metrics.keda.svc:443");
    }

    #[test]
    fn a_ca_file_without_certificates_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not pem").unwrap();
        let err = Upstream::new(Config::new("https://x", None, Trust::CaFile(path)), Metrics::default()).unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
        let missing = Config::new("https://x", None, Trust::CaFile(dir.path().join("nope")));
        assert!(matches!(Upstream::new(missing, Metrics::default()), Err(Error::ReadCa { .. })));
    }
}
