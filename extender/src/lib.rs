//! derm-extender: a kube-scheduler HTTP extender that places a pod next to the services its
//! service calls most (call affinity from each DermApp's status), spreads a service's own
//! replicas, and favours nodes below the placement plan's count.
//!
//! ```text
//! derm-extender --listen 127.0.0.1:8888 --admin-listen 127.0.0.1:8081        # watches the cluster
//! derm-extender --listen 127.0.0.1:8888 --state-file state.json [--shadow]   # no cluster
//! ```
//!
//! kube-scheduler posts `ExtenderArgs` to `<urlPrefix>/filter` and `<urlPrefix>/prioritize`;
//! answers come from an immutable in-memory snapshot, never from an API call.
//!
//! # Module map
//!
//! | module | concept |
//! |---|---|
//! | [`cli`] | `Args` (clap derive), every flag with `--long` and env |
//! | [`wire`] | `k8s.io/kube-scheduler/extender/v1` types (PascalCase keys), request decoding |
//! | [`knowledge`] | the indexed snapshot: services, call rates, placement, node headroom |
//! | [`score`] | scores 0..=10 and hard limits for one pod |
//! | [`inflight`] | pods scored but not yet bound, so bursts spread |
//! | [`plan`] | the periodic placement plan (good_lp MILP, pure-Rust microlp solver) |
//! | [`state_file`] | `--state-file`: knowledge from a JSON document |
//! | [`cluster`] | knowledge from watches of DermApps, Pods and Nodes |
//! | [`api`] | the axum router: `POST /filter`, `POST /prioritize` |
//! | [`metrics`] | prometheus-client metrics, readiness, the admin router |
//!
//! The serving loop (timeouts, body limit, TLS, graceful drain) is derm-adapter's
//! [`derm_adapter::server`].

pub mod api;
pub mod cli;
pub mod cluster;
pub mod inflight;
pub mod knowledge;
pub mod metrics;
pub mod plan;
pub mod score;
pub mod state_file;
pub mod wire;

use std::sync::Arc;

use anyhow::Context as _;
use derm_adapter::server::shutdown::{signal, stopped};
use derm_adapter::server::tls::{self, Identity};
use derm_adapter::server::{Limits, Server};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cli::Args;
use crate::inflight::InFlight;
use crate::knowledge::Store;
use crate::metrics::{Admin, Health, Metrics};
use crate::plan::PlanStore;
use crate::score::{Config, Weights};

/// Runs the extender until the process is signalled.
pub async fn run(args: Args) -> anyhow::Result<()> {
    args.log.init()?;
    // Everything that can fail on bad input happens before anything is spawned.
    let s = &args.scoring;
    let weights = Weights::new(s.weight_affinity, s.weight_spread, s.weight_headroom, s.weight_plan)?;
    let config = Config { weights, max_per_node: s.max_replicas_per_node, max_age: Some(s.max_age) };
    let limits = Limits {
        body_limit: args.server.max_body_bytes,
        drain_timeout: args.server.drain_timeout,
        ..Limits::default()
    };
    let tls = match (&args.server.tls_cert, &args.server.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(Identity::from_pem_files(cert, key)?, None)?),
        _ => None,
    };
    let api_server = Server::bind(args.server.listen, tls, limits.clone()).await?;
    let admin_server = Server::bind(args.server.admin_listen, None, limits).await?;

    let store = Arc::new(Store::default());
    let health = Arc::new(Health::default());
    let inflight = Arc::new(InFlight::new(s.inflight_ttl));
    let mut _tasks = Vec::new();
    match &args.state_file {
        Some(path) => {
            _tasks.push(state_file::watch(path.clone(), store.clone(), args.state_poll)?);
            health.loaded();
        }
        None => {
            let client = kube::Client::try_default().await.context("no cluster: set KUBECONFIG or use --state-file")?;
            cluster::Watches::start(client, store.clone(), inflight.clone(), health.clone(), args.rebuild_interval);
        }
    }
    let plans = Arc::new(PlanStore::default());
    if !args.plan_interval.is_zero() {
        _tasks.push(plan::spawn(store.clone(), plans.clone(), args.plan_interval, plan::Config::default()));
    }

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ctx = Arc::new(api::Context {
        store: store.clone(),
        inflight: inflight.clone(),
        plans,
        config,
        shadow: args.shadow,
        max_nodes: args.server.max_nodes,
        metrics: metrics.clone(),
    });
    let admin =
        metrics::router(Admin { registry: Arc::new(registry), metrics, health: health.clone(), store, inflight });
    let (api_stop, api_stopped) = watch::channel(false);
    let (admin_stop, admin_stopped) = watch::channel(false);
    tracing::info!(
        listen = %api_server.local_addr()?, admin = %admin_server.local_addr()?,
        shadow = args.shadow, state_file = ?args.state_file, "serving"
    );
    let api_task =
        tokio::spawn(api_server.serve(api::router(ctx), stopped(api_stopped)).instrument(tracing::info_span!("api")));
    let admin_task =
        tokio::spawn(admin_server.serve(admin, stopped(admin_stopped)).instrument(tracing::info_span!("admin")));

    signal().await.context("cannot listen for signals")?;
    tracing::info!("shutdown: not ready, draining in-flight requests (signal again to abort)");
    health.shut_down();
    derm_adapter::server::shutdown::drain(&api_stop, api_task, &admin_stop, admin_task).await
}
