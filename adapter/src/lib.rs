//! derm-adapter: Derm's aggregated metrics API server for Kubernetes.
//!
//! Stock HPAs scale on the external metric `derm_desired_replicas` (labels `app`, `service`;
//! value = desired replicas), served on `external.metrics.k8s.io/v1beta1`, and as an object
//! metric on each scale target on `custom.metrics.k8s.io/v1beta2`. Requests are answered from
//! an in-memory snapshot; values too old answer 503 so the HPA keeps its count.
//!
//! ```text
//! derm-adapter crd > manifests/crd-dermapp.yaml
//! derm-adapter serve --listen 127.0.0.1:6443 [--tls-cert F --tls-key F]
//!     [--requestheader-client-ca F [--requestheader-allowed-names N,...] | --authentication-configmap]
//!     [--token-review] [--authorize]
//!     [--static-values F] --admin-listen 127.0.0.1:8080
//! kubectl --server https://127.0.0.1:6443 --insecure-skip-tls-verify get --raw \
//!     /apis/external.metrics.k8s.io/v1beta1/namespaces/default/derm_desired_replicas
//! ```
//!
//! # Module map
//!
//! | module | concept |
//! |---|---|
//! | [`cli`] | `Args` (clap derive): server, auth, admin and log flags, each with `--long` and env |
//! | [`crd`] | the `DermApp` custom resource (derm.dev/v1alpha1) and its validation |
//! | [`status`] | DermApp status -> published values (timestamped by the solve time) |
//! | [`demo`] | `derm-adapter demo`: the online loop on the simulated `trainticket` app, served live |
//! | [`jaeger`] | the Jaeger trace source: a poller per Jaeger-sourced DermApp (api v3 or v1) |
//! | [`prometheus`] | the call-count source: a Prometheus poller per DermApp with `callCounts` |
//! | [`tasks`] | the pollers' tasks, one per app, restarted when its source changes |
//! | [`leader`] | leader election on a coordination.k8s.io Lease |
//! | [`state`] | each app's learned state in a ConfigMap (restored by a restarted or new leader) |
//! | [`dermapps`] | the DermApp watch every replica runs (kube-runtime reflector) |
//! | [`metrics`] | published values: immutable snapshots behind `ArcSwap`, freshness, `--static-values` |
//! | [`selector`] | Kubernetes label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`, `>`, `<`) |
//! | [`api`] | the axum router of the aggregated API; wire types; errors as `Status` objects |
//! | [`audit`] | the controller's HPA audit: Events on HPAs that would miss Derm's count, condition `HPAsExact` |
//! | [`auth`] | front-proxy, client-CA and TokenReview authentication; the watched trust |
//! | [`cache`] | the bounded TTL cache of TokenReview and SubjectAccessReview answers |
//! | [`authz`] | SubjectAccessReview authorization with a decision cache |
//! | [`server`] | the hyper serving loop: TLS, timeouts, limits, graceful drain; certificates |
//! | [`admin`] | plain-HTTP `/livez`, `/readyz`, `/metrics` (prometheus-client) |
//! | [`upstream`] | `--upstream`: forwarding other metric names to the adapter Derm replaced |
//!
//! # State of this crate
//!
//! Values come from the DermApps' status (watched in every namespace, or `--watch-namespace`),
//! or from `--static-values FILE` (polled, reloaded when it changes) without a cluster; the
//! status is written by the online loop (`serve --controller`: OTLP receiver, Jaeger pollers,
//! profiles, trend-forecast mix, solve). SubjectAccessReview authorization is [`authz`]
//! (`serve --authorize`); the trust comes from kube-system/extension-apiserver-authentication
//! (watched) or `--requestheader-client-ca`; bearer tokens by TokenReview; serving certificates
//! are reloaded when their files change. Not yet written: the LSTM in the online loop.

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod cli;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod demo;
pub mod dermapps;
pub mod jaeger;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod online;
pub mod prometheus;
pub mod selector;
pub mod server;
pub mod state;
pub mod status;
pub mod tasks;
pub mod telemetry;
#[cfg(test)]
mod test_pki;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::Instrument;

use crate::admin::Health;
use crate::auth::{ClientCa, Delegated, Policy, RequestHeader, Trust};
use crate::cli::{Args, Command, ServeArgs, UpstreamArgs};
use crate::metrics::{StaticWatcher, Store};
use crate::server::shutdown::{signal, stopped};
use crate::server::tls::{self, Identity, ServingCert};
use crate::server::{Limits, Server};

/// Runs the command in `args` until it finishes or the process is signalled.
pub async fn run(args: Args) -> anyhow::Result<()> {
    args.log.init()?;
    match args.command {
        Command::Serve(serve) => run_serve(*serve).await,
        Command::Demo(demo) => demo::run(demo).await,
        Command::Crd => {
            print!("{}", crd::yaml().context("cannot render the CRD as YAML")?);
            Ok(())
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    // Everything that can fail on bad input happens before anything is spawned.
    let store = Arc::new(Store::default());
    let static_values = match &args.static_values {
        Some(path) => Some(StaticWatcher::start(path, store.clone())?),
        None => None,
    };
    let mut registry = Registry::default();
    let reload_metrics = admin::ReloadMetrics::register(&mut registry);
    let serving_cert = Arc::new(match (&args.server.tls_cert, &args.server.tls_key) {
        (Some(cert), Some(key)) => ServingCert::from_files(cert, key, reload_metrics.clone())?,
        _ => {
            tracing::info!("no --tls-cert: serving a self-signed certificate");
            ServingCert::fixed(Identity::self_signed(&["localhost", "127.0.0.1", "::1"])?)?
        }
    });
    let (policy, trust_watch) = delegated_auth(&args.auth, reload_metrics).await?;
    let limits = Limits {
        handshake_timeout: args.server.handshake_timeout,
        header_read_timeout: args.server.header_read_timeout,
        max_header_bytes: args.server.max_header_bytes,
        drain_timeout: args.server.drain_timeout,
        ..Limits::default()
    };
    let trust = match &policy {
        Policy::Delegated(d) => Some(d.trust.clone()),
        Policy::Open => None,
    };
    let api_config = tls::live_server_config(serving_cert.clone(), trust)?;
    let api_server = Server::bind(args.server.listen, Some(api_config), limits.clone()).await?;
    let admin_server = Server::bind(args.admin.admin_listen, None, limits.clone()).await?;

    let metrics = admin::Metrics::register(&mut registry);
    let loop_metrics = telemetry::LoopMetrics::register(&mut registry);
    let source_metrics = jaeger::Metrics::register(&mut registry, loop_metrics.clone());
    let count_metrics = prometheus::register(&mut registry);
    let upstream = match upstream_config(&args.upstream)? {
        Some(config) => {
            let up = upstream::Upstream::new(config, upstream::Metrics::register(&mut registry))?;
            tracing::info!(upstream = up.base(), "forwarding other metric names to the upstream adapter");
            Some(Arc::new(up))
        }
        None => None,
    };
    let health = Arc::new(Health::new(store.clone()));
    let api = api::router(api::AppState {
        store: store.clone(),
        health: health.clone(),
        policy: Arc::new(policy),
        metrics: metrics.clone(),
        upstream,
    });
    let admin = admin::router(Arc::new(registry), metrics, store.clone(), health.clone());

    let dermapp_watch = match &static_values {
        Some(_) => {
            health.mark_synced();
            None
        }
        None => {
            let client = kube::Client::try_default().await.context(
                "no cluster to watch DermApps in (in-cluster config or KUBECONFIG); or pass --static-values",
            )?;
            Some(tokio::spawn(dermapps::run(client, args.watch_namespace.clone(), store.clone(), health.clone())))
        }
    };
    let controller = if args.controller {
        let client = kube::Client::try_default().await.context("--controller needs a cluster")?;
        let apps = controller::Apps::new(model::load_all(&args.predictor_models)?, loop_metrics);
        let receiver = Server::bind(args.otlp_listen, None, limits.clone())
            .await
            .with_context(|| format!("--otlp-listen {}", args.otlp_listen))?;
        tracing::info!(otlp = %receiver.local_addr()?, "controller: OTLP/HTTP receiver");
        let (_stop, stopped_rx) = watch::channel(false);
        let serve = tokio::spawn(receiver.serve(controller::receiver(apps.clone()), stopped(stopped_rx)));
        let lease = args.leader_elect.then(|| {
            leader::Lease::new(
                client.clone(),
                &args.leader_election_namespace,
                "derm-adapter-controller",
                &args.leader_election_identity,
                args.lease_duration,
            )
        });
        let http = jaeger::Client::new(jaeger::REQUEST_TIMEOUT).context("Jaeger client TLS configuration")?;
        let pollers = controller::Sources {
            jaeger: jaeger::Pollers::new(http.clone(), source_metrics),
            counts: prometheus::Pollers::new(http, count_metrics),
        };
        let tick = tokio::spawn(controller::run(client, apps, std::time::Duration::from_secs(1), lease, pollers));
        Some((serve, tick, _stop))
    } else {
        None
    };
    let (api_stop, api_stopped) = watch::channel(false);
    let (admin_stop, admin_stopped) = watch::channel(false);
    tracing::info!(listen = %api_server.local_addr()?, admin = %admin_server.local_addr()?, "serving");
    // Dropping the handle detaches the task; it ends with the runtime.
    let _static_reload = static_values.map(|watcher| watcher.spawn(args.static_values_poll));
    let cert_reload = tokio::spawn(serving_cert.poll(args.server.tls_reload_interval));
    let trust_watch = trust_watch.map(tokio::spawn);
    let api_task = tokio::spawn(api_server.serve(api, stopped(api_stopped)).instrument(tracing::info_span!("api")));
    let admin_task =
        tokio::spawn(admin_server.serve(admin, stopped(admin_stopped)).instrument(tracing::info_span!("admin")));

    signal().await.context("cannot listen for signals")?;
    if let Some(task) = dermapp_watch {
        task.abort();
    }
    cert_reload.abort();
    if let Some(task) = trust_watch {
        task.abort();
    }
    if let Some((receiver, tick, _stop)) = controller {
        receiver.abort();
        tick.abort();
    }
    tracing::info!("shutdown: not ready, draining in-flight requests (signal again to abort)");
    health.shut_down();
    server::shutdown::drain(&api_stop, api_task, &admin_stop, admin_task).await
}

/// The authentication policy `args` ask for, and the ConfigMap watch to spawn (if any).
///
/// Trust: `--requestheader-client-ca` (read once), or the ConfigMap when
/// `--authentication-configmap` is true (default: in a pod without a CA file). TokenReview:
/// `--token-review`, default as the ConfigMap. Neither: [`Policy::Open`].
async fn delegated_auth(
    args: &cli::AuthArgs,
    reload_metrics: admin::ReloadMetrics,
) -> anyhow::Result<(Policy, Option<impl Future<Output = ()> + Send + 'static>)> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let configmap = args.authentication_configmap.unwrap_or(in_cluster && args.requestheader_client_ca.is_none());
    if configmap && args.requestheader_client_ca.is_some() {
        anyhow::bail!("--authentication-configmap and --requestheader-client-ca are alternatives: pass one");
    }
    let token_review = args.token_review.unwrap_or(configmap);
    let client = if configmap || token_review || args.authorize {
        let client = kube::Client::try_default().await.context(
            "--authentication-configmap, --token-review and --authorize need a cluster (in-cluster config or KUBECONFIG)",
        )?;
        Some(client)
    } else {
        None
    };
    let (trust, watch) = match (&args.requestheader_client_ca, &client) {
        (Some(path), _) => {
            let rh = RequestHeader::new(ClientCa::from_pem_file(path)?, args.requestheader_allowed_names.clone());
            (Some(Trust::new(Some(rh), None)), None)
        }
        (None, Some(client)) if configmap => {
            let (trust, data) = auth::config::load(client.clone()).await?;
            tracing::info!(
                request_header = trust.request_header.is_some(),
                client_ca = trust.client_ca.is_some(),
                "trust from {}/{} (watched)",
                auth::config::NAMESPACE,
                auth::config::NAME
            );
            (Some(trust), Some((client.clone(), data)))
        }
        _ => (None, None),
    };
    if trust.is_none() && !token_review {
        if args.authorize {
            anyhow::bail!(
                "--authorize needs authenticated users: pass --requestheader-client-ca, --authentication-configmap or --token-review"
            );
        }
        tracing::warn!(
            "no request-header CA, ConfigMap or TokenReview: every request is served anonymously (local use only)"
        );
        return Ok((Policy::Open, None));
    }
    let mut delegated = Delegated::new(trust.unwrap_or_else(|| Trust::new(None, None)));
    if let (true, Some(client)) = (token_review, &client) {
        let config = auth::token::Config {
            allow_ttl: args.token_review_ttl,
            deny_ttl: args.token_review_ttl,
            ..auth::token::Config::default()
        };
        delegated.tokens = Some(Arc::new(auth::token::TokenAuthenticator::token_review(client.clone(), config)));
        tracing::info!("authenticating bearer tokens with TokenReviews");
    }
    if let (true, Some(client)) = (args.authorize, &client) {
        let config = authz::Config {
            allow_ttl: args.authorization_allow_ttl,
            deny_ttl: args.authorization_deny_ttl,
            ..authz::Config::default()
        };
        delegated.authorizer = Some(Arc::new(authz::Authorizer::subject_access_review(client.clone(), config)));
        tracing::info!("authorizing metric requests with SubjectAccessReviews");
    }
    let watch = watch.map(|(client, data)| {
        let reloader = auth::config::Reloader::new(delegated.trust.clone(), reload_metrics, Some(data));
        auth::config::watch(client, reloader)
    });
    Ok((Policy::Delegated(delegated), watch))
}

/// The upstream client's configuration, with the in-cluster token and CA as defaults.
fn upstream_config(args: &UpstreamArgs) -> anyhow::Result<Option<upstream::Config>> {
    let Some(url) = &args.upstream else { return Ok(None) };
    let in_cluster = |path: &str| Some(std::path::PathBuf::from(path)).filter(|p| p.exists());
    let token_file = args.upstream_token_file.clone().or_else(|| in_cluster(upstream::IN_CLUSTER_TOKEN));
    let trust = if args.upstream_insecure_skip_tls_verify {
        upstream::Trust::InsecureSkipVerify
    } else {
        let ca = args.upstream_ca_file.clone().or_else(|| in_cluster(upstream::IN_CLUSTER_CA)).context(
            "--upstream needs --upstream-ca-file (the CA of the upstream's serving certificate, e.g. the caBundle \
             of the APIService it had) outside a cluster",
        )?;
        upstream::Trust::CaFile(ca)
    };
    let mut config = upstream::Config::new(url.clone(), token_file, trust);
    config.timeout = args.upstream_timeout;
    Ok(Some(config))
}
