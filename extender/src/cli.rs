//! Command-line arguments of `derm-extender`; every flag has a long form and an environment
//! variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use derm_adapter::cli::{LogArgs, parse_duration};

/// derm-extender: kube-scheduler HTTP extender placing pods next to the services they call.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Serving.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Scoring.
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Run from this JSON snapshot (see the README's file formats) instead of watching a
    /// cluster; reloaded when it changes.
    #[arg(long, env = "DERM_EXTENDER_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// How often to look at `--state-file` for changes.
    #[arg(long, env = "DERM_EXTENDER_STATE_POLL", default_value = "1s", value_parser = parse_duration)]
    pub state_poll: Duration,
    /// Compute, log and count decisions without influencing scheduling (neutral scores, no
    /// node filtered).
    #[arg(long, env = "DERM_EXTENDER_SHADOW")]
    pub shadow: bool,
    /// How often the placement plan (MILP) is recomputed; 0 disables it. A solve costs about
    /// 0.2 s of one core per app of 10 services (see the README).
    #[arg(long, env = "DERM_EXTENDER_PLAN_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub plan_interval: Duration,
    /// In cluster mode: how often the knowledge snapshot is rebuilt from the watches (at most).
    #[arg(long, env = "DERM_EXTENDER_REBUILD_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub rebuild_interval: Duration,
}

/// The extender and admin servers.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of the extender API (kube-scheduler's urlPrefix points here).
    #[arg(long, env = "DERM_EXTENDER_LISTEN", default_value = "0.0.0.0:8888")]
    pub listen: SocketAddr,
    /// Address of /livez, /readyz and /metrics.
    #[arg(long, env = "DERM_EXTENDER_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,
    /// Serve the extender API over TLS with this certificate chain (PEM); `enableHTTPS: true`.
    #[arg(long, env = "DERM_EXTENDER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "DERM_EXTENDER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body in bytes (full-node mode sends whole Node objects).
    #[arg(long, env = "DERM_EXTENDER_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most candidate nodes accepted in one request.
    #[arg(long, env = "DERM_EXTENDER_MAX_NODES", default_value_t = 20_000)]
    pub max_nodes: usize,
    /// Time allowed for in-flight requests after the first shutdown signal.
    #[arg(long, env = "DERM_EXTENDER_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// Score weights and hard limits.
#[derive(Debug, clap::Args)]
pub struct ScoringArgs {
    /// Weight of call affinity (peers' replicas on the node, by call rate).
    #[arg(long, env = "DERM_EXTENDER_WEIGHT_AFFINITY", default_value_t = 1.0)]
    pub weight_affinity: f64,
    /// Weight of the spread penalty (the service's own replicas on the node).
    #[arg(long, env = "DERM_EXTENDER_WEIGHT_SPREAD", default_value_t = 0.5)]
    pub weight_spread: f64,
    /// Weight of pod headroom (free share of the node's allocatable pods).
    #[arg(long, env = "DERM_EXTENDER_WEIGHT_HEADROOM", default_value_t = 0.25)]
    pub weight_headroom: f64,
    /// Weight of the placement plan (nodes below their planned replica count).
    #[arg(long, env = "DERM_EXTENDER_WEIGHT_PLAN", default_value_t = 0.5)]
    pub weight_plan: f64,
    /// Hard limit: fail nodes already holding this many replicas of the pod's service.
    #[arg(long, env = "DERM_EXTENDER_MAX_REPLICAS_PER_NODE")]
    pub max_replicas_per_node: Option<u32>,
    /// DermApp status older than this (`status.lastSolveTime`) gets neutral scores.
    #[arg(long, env = "DERM_EXTENDER_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub max_age: Duration,
    /// How long a scored pod counts on its preferred node before the watch sees it bound.
    #[arg(long, env = "DERM_EXTENDER_INFLIGHT_TTL", default_value = "30s", value_parser = parse_duration)]
    pub inflight_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn args_are_consistent_and_parse() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "derm-extender",
            "--listen",
            "127.0.0.1:9000",
            "--state-file",
            "s.json",
            "--shadow",
            "--max-replicas-per-node",
            "2",
            "--weight-spread",
            "0",
        ])
        .unwrap();
        assert_eq!(a.server.listen.port(), 9000);
        assert!(a.shadow);
        assert_eq!(a.scoring.max_replicas_per_node, Some(2));
        assert_eq!(a.scoring.weight_spread, 0.0);
        assert_eq!(a.scoring.inflight_ttl, Duration::from_secs(30));
    }
}
