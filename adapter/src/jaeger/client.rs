//! The HTTP(S) client every Jaeger poller shares: hyper-util's pooled client over
//! hyper-rustls (ring provider, the system's CA certificates), with a connect timeout, a
//! timeout on the whole exchange and a limit on the body size.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_rustls::builderstates::WantsSchemes;
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Error;

/// Largest answer read from Jaeger (a poll asks for at most [`super::MAX_TRACES`] traces).
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Time allowed for connecting and for the whole request, body included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A cheap-to-clone GET client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Legacy<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Client {
    /// A client trusting the system's CA certificates. Without any (a bare container image),
    /// plain `http://` still works and `https://` sources fail verification (logged here).
    pub fn new(timeout: Duration) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system CA certificates: https Jaeger URLs will not verify");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        Ok(Self::build(timeout, builder))
    }

    /// A client trusting only `roots` (a private CA; tests).
    pub fn with_roots(timeout: Duration, roots: rustls::RootCertStore) -> Result<Self, rustls::Error> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::build(timeout, HttpsConnectorBuilder::new().with_tls_config(config)))
    }

    fn build(timeout: Duration, builder: HttpsConnectorBuilder<WantsSchemes>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Client { inner: Legacy::builder(TokioExecutor::new()).build(connector), timeout }
    }

    /// GETs `uri`; the status and the whole body (at most `MAX_BODY_BYTES`).
    pub async fn get(&self, uri: &str) -> Result<(StatusCode, Bytes), Error> {
        let url = || strip_query(uri);
        let parsed: Uri =
            uri.parse().map_err(|e| Error::Unreachable { url: url(), message: format!("bad URL: {e}") })?;
        let exchange = async {
            let response =
                self.inner.get(parsed).await.map_err(|e| Error::Unreachable { url: url(), message: chain(&e) })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| Error::Body { url: url(), message: e.to_string() })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout { url: url(), timeout: self.timeout })?
    }
}

/// The URL without its query (for messages and logs).
fn strip_query(uri: &str) -> String {
    uri.split('?').next().unwrap_or(uri).to_owned()
}

/// An error with its sources (hyper-util's errors say "client error (Connect)" at the top).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
