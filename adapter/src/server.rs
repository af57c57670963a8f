//! The serving loop: hyper 1 + hyper-util, owned by the project, with an axum [`Router`] inside.
//!
//! [`Server::bind`] binds the port (and the caller has already loaded certificates, see
//! [`tls`]) before anything is spawned, so a bad address or certificate fails at start.
//! [`Server::serve`] accepts connections; each runs in its own task, in a span, where the TLS
//! handshake runs under [`Limits::handshake_timeout`]. HTTP/1 headers must arrive within
//! [`Limits::header_read_timeout`] and fit in [`Limits::max_header_bytes`] (else 431); bodies
//! are capped at [`Limits::body_limit`]. When the shutdown future completes the listener closes,
//! connections finish their in-flight requests (HTTP/1 keep-alive ends, HTTP/2 sends GOAWAY),
//! and serving returns once they are done or [`Limits::drain_timeout`] passes.

pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::auth::{self, Peer};

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No PEM certificate in the serving certificate input.
    #[error("{path}: no PEM CERTIFICATE found")]
    NoCertificate {
        /// The file.
        path: String,
    },
    /// No usable PEM private key.
    #[error("{path}: no PEM private key found")]
    NoKey {
        /// The file.
        path: String,
    },
    /// rustls rejected the configuration (e.g. key does not match certificate).
    #[error("TLS configuration rejected")]
    Tls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("cannot generate a self-signed certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// The client-certificate verifier could not be built.
    #[error(transparent)]
    Auth(#[from] auth::Error),
}

/// Timeouts and size limits of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to receive a request's headers (HTTP/1; also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1 read buffer, HTTP/2 header list), in bytes.
    pub max_header_bytes: usize,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Time allowed for in-flight requests after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            body_limit: 1024 * 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// A bound server, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
}

impl Server {
    /// Binds `addr`; with `tls`, connections are TLS (the config is built beforehand, see [`tls`]).
    pub async fn bind(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>, limits: Limits) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        Ok(Self { listener, tls, limits })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` until `shutdown` completes, then drains.
    pub async fn serve(self, router: Router, shutdown: impl Future<Output = ()> + Send) {
        let Self { listener, tls, limits } = self;
        let tls = tls.map(TlsAcceptor::from);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Usually EMFILE; back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let conn = Connection {
                tls: tls.clone(),
                builder: builder.clone(),
                router: router.clone(),
                limits: limits.clone(),
                watcher: graceful.watcher(),
            };
            let span = tracing::debug_span!("connection", %remote);
            tokio::spawn(conn.run(tcp, remote).instrument(span));
        }
        drop(listener);
        tracing::info!("draining connections");
        if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
            tracing::warn!(timeout = ?limits.drain_timeout, "connections still open after the drain timeout");
        }
    }
}

struct Connection {
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    limits: Limits,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, tcp: TcpStream, remote: SocketAddr) {
        let Some(acceptor) = self.tls.clone() else {
            return self.serve(TokioIo::new(tcp), Peer { remote, client: None }).await;
        };
        let stream = match tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        };
        // rustls has verified any presented chain against the trust of the moment; requests
        // re-check it against the trust current when they arrive (see auth::ClientCert).
        let client = stream
            .get_ref()
            .1
            .peer_certificates()
            .filter(|c| !c.is_empty())
            .map(|c| Arc::new(auth::ClientCert::new(c.iter().map(|c| c.clone().into_owned()).collect())));
        self.serve(TokioIo::new(stream), Peer { remote, client }).await;
    }

    async fn serve<I>(self, io: I, peer: Peer)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Self { builder, router, limits, watcher, .. } = self;
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(peer.clone());
            let req = req.map(|body| Limited::new(body, limits.body_limit));
            router.clone().oneshot(req)
        });
        if let Err(error) = watcher.watch(builder.serve_connection(io, service)).await {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}
