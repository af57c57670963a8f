//! Command-line arguments: one [`Args`] for the binary, flattened by concern. Every flag has a
//! long form and an environment variable.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// derm-adapter: Derm's aggregated metrics API server.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io and custom.metrics.k8s.io over TLS, plus the admin port.
    Serve(Box<ServeArgs>),
    /// Print the DermApp CustomResourceDefinition (YAML) generated from the Rust type.
    Crd,
    /// Derm's whole loop on a simulated app, served on https://127.0.0.1:6443; no cluster needed.
    Demo(crate::demo::DemoArgs),
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The metrics API server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Front-proxy authentication.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The admin port.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Forwarding to the adapter Derm replaced.
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// JSON file of values to publish: `[{"namespace","app","service","replicas"}]`. Replaces
    /// the DermApp watch (no cluster access needed).
    #[arg(long, env = "DERM_STATIC_VALUES")]
    pub static_values: Option<PathBuf>,
    /// Watch DermApps in this namespace only (default: every namespace). The cluster comes
    /// from the in-cluster service account or `KUBECONFIG`.
    #[arg(long, env = "DERM_WATCH_NAMESPACE", conflicts_with = "static_values")]
    pub watch_namespace: Option<String>,
    /// Run the online loop: receive traces on `--otlp-listen`, solve every DermApp's
    /// interval and write its status and learned state (ConfigMap `derm-state-<app>`).
    #[arg(long, env = "DERM_CONTROLLER", conflicts_with = "static_values")]
    pub controller: bool,
    /// Address of the OTLP/HTTP trace receiver (`POST /v1/traces`) of `--controller`.
    #[arg(long, env = "DERM_OTLP_LISTEN", default_value = "0.0.0.0:4318")]
    pub otlp_listen: SocketAddr,
    /// With `--controller`: predict DermApp NAMESPACE/NAME's graph mix with a model from
    /// `derm train` (`NAMESPACE/NAME=PATH`, repeatable), hedged against the trend forecast.
    /// Needs a derm-adapter built with the `lstm` feature (libtorch).
    #[arg(long = "predictor-model", env = "DERM_PREDICTOR_MODELS", value_delimiter = ',', value_parser = crate::model::parse, requires = "controller")]
    pub predictor_models: Vec<crate::model::ModelArg>,
    /// With `--controller`: only the holder of the Lease `derm-adapter-controller` runs the loop.
    #[arg(long, env = "DERM_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "DERM_POD_NAMESPACE", default_value = "derm-system")]
    pub leader_election_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "DERM_POD_NAME", default_value = "derm-adapter")]
    pub leader_election_identity: String,
    /// How long the Lease holds without renewal, e.g. `15s`.
    #[arg(long, env = "DERM_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often to check `--static-values` for changes (modification time and size), e.g. `1s`.
    /// A changed file replaces the published values; a bad one is logged and the previous
    /// values are kept.
    #[arg(long, env = "DERM_STATIC_VALUES_POLL", default_value = "1s", value_parser = parse_duration)]
    pub static_values_poll: Duration,
}

/// The TLS metrics API server.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of the metrics API.
    #[arg(long, env = "DERM_LISTEN", default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM); without it a self-signed certificate is generated.
    #[arg(long, env = "DERM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM).
    #[arg(long, env = "DERM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Time allowed for a TLS handshake, e.g. `10s`.
    #[arg(long, env = "DERM_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Time allowed to receive request headers, e.g. `10s`.
    #[arg(long, env = "DERM_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    #[arg(long, env = "DERM_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Time allowed for in-flight requests after the first shutdown signal, e.g. `20s`.
    #[arg(long, env = "DERM_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How often `--tls-cert`/`--tls-key` are re-read; changed files replace the serving
    /// certificate for new connections (a bad pair is logged and the current one kept).
    #[arg(long, env = "DERM_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
}

/// Delegated authentication (front proxy, client CA, TokenReview) and authorization.
///
/// Where the trust comes from: `--requestheader-client-ca FILE` (with
/// `--requestheader-allowed-names`), or ConfigMap kube-system/extension-apiserver-authentication
/// (`--authentication-configmap`, watched: CA, allowed names, header names and the client CA
/// are swapped while serving). The ConfigMap is the default in a pod (`KUBERNETES_SERVICE_HOST`
/// set) when no CA file is given; elsewhere it is opt-in. With neither, every request is
/// anonymous (local use only).
#[derive(Debug, clap::Args)]
pub struct AuthArgs {
    /// CA bundle (PEM) that signs kube-apiserver's front-proxy client certificate (read once).
    #[arg(long, env = "DERM_REQUESTHEADER_CLIENT_CA")]
    pub requestheader_client_ca: Option<PathBuf>,
    /// Common names allowed to assert identities; empty allows any certificate from the CA.
    /// Only with `--requestheader-client-ca` (the ConfigMap has its own list).
    #[arg(long, env = "DERM_REQUESTHEADER_ALLOWED_NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Read and watch kube-system/extension-apiserver-authentication (`true`/`false`; default:
    /// true in a pod without `--requestheader-client-ca`). Needs `get`/`list`/`watch` on it
    /// (Role kube-system/extension-apiserver-authentication-reader).
    #[arg(long, env = "DERM_AUTHENTICATION_CONFIGMAP", num_args = 0..=1, default_missing_value = "true")]
    pub authentication_configmap: Option<bool>,
    /// Authenticate `Authorization: Bearer` tokens with TokenReviews (`true`/`false`; default:
    /// as `--authentication-configmap`). Needs `create tokenreviews` (`system:auth-delegator`).
    #[arg(long, env = "DERM_TOKEN_REVIEW", num_args = 0..=1, default_missing_value = "true")]
    pub token_review: Option<bool>,
    /// How long a TokenReview answer (authenticated or not) is reused, e.g. `10s`.
    #[arg(long, env = "DERM_TOKEN_REVIEW_TTL", default_value = "10s", value_parser = parse_duration)]
    pub token_review_ttl: Duration,
    /// Authorize each metric request with a SubjectAccessReview to kube-apiserver (cluster from
    /// the in-cluster service account or `KUBECONFIG`; needs `create subjectaccessreviews`,
    /// e.g. the `system:auth-delegator` role). Unreachable kube-apiserver: 503. Needs a trust
    /// source or `--token-review`.
    #[arg(long, env = "DERM_AUTHORIZE")]
    pub authorize: bool,
    /// How long an allowed decision is reused, e.g. `5m` (keep it above the HPA sync period).
    #[arg(long, env = "DERM_AUTHORIZATION_ALLOW_TTL", default_value = "5m", value_parser = parse_duration)]
    pub authorization_allow_ttl: Duration,
    /// How long a denied decision is reused, e.g. `30s`.
    #[arg(long, env = "DERM_AUTHORIZATION_DENY_TTL", default_value = "30s", value_parser = parse_duration)]
    pub authorization_deny_ttl: Duration,
}

/// `--upstream`: the adapter that served these API groups before Derm.
#[derive(Debug, clap::Args)]
pub struct UpstreamArgs {
    /// URL of the adapter Derm replaced, e.g. `https://keda-operator-metrics-apiserver.keda:443`:
    /// metric names other than `derm_desired_replicas` are forwarded to it, and its discovery
    /// is merged into Derm's.
    #[arg(long, env = "DERM_UPSTREAM")]
    pub upstream: Option<String>,
    /// Bearer token file Derm presents to the upstream, re-read when it changes (default: the
    /// in-cluster ServiceAccount token, if present).
    #[arg(long, env = "DERM_UPSTREAM_TOKEN_FILE", requires = "upstream")]
    pub upstream_token_file: Option<PathBuf>,
    /// CA bundle (PEM) that signs the upstream's serving certificate (default: the in-cluster
    /// CA, if present).
    #[arg(long, env = "DERM_UPSTREAM_CA_FILE", requires = "upstream")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Do not verify the upstream's certificate (tests only: the token goes to whoever answers).
    #[arg(
        long,
        env = "DERM_UPSTREAM_INSECURE_SKIP_TLS_VERIFY",
        requires = "upstream",
        conflicts_with = "upstream_ca_file"
    )]
    pub upstream_insecure_skip_tls_verify: bool,
    /// Limit per forwarded request (connect, headers and body), e.g. `5s`.
    #[arg(long, env = "DERM_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
}

/// The plain-HTTP admin port.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Address of /livez, /readyz and /metrics.
    #[arg(long, env = "DERM_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
}

/// Log output.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// `plain` or `json`.
    #[arg(long, env = "DERM_LOG_FORMAT", default_value = "plain", global = true)]
    pub log_format: LogFormat,
    /// Filter directives, e.g. `info,derm_adapter=debug`.
    #[arg(long, env = "DERM_LOG", default_value = "info", global = true)]
    pub log: String,
}

impl LogArgs {
    /// Installs the global log subscriber (stdout). Colours only on a terminal: a pod's
    /// output is a file, where escape codes would garble `kubectl logs`.
    pub fn init(&self) -> anyhow::Result<()> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(&self.log).with_context(|| format!("--log {:?}", self.log))?;
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stdout().is_terminal());
        let result = match self.log_format {
            LogFormat::Plain => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
    }
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Parses `250ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 250ms, 5m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse() {
        let args = Args::try_parse_from([
            "derm-adapter",
            "serve",
            "--listen",
            "127.0.0.1:6443",
            "--requestheader-allowed-names",
            "front-proxy-client,aggregator",
            "--admin-listen",
            "127.0.0.1:8080",
            "--drain-timeout",
            "1500ms",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("not serve") };
        assert_eq!(serve.server.listen.port(), 6443);
        assert_eq!(serve.auth.requestheader_allowed_names, ["front-proxy-client", "aggregator"]);
        assert_eq!(serve.server.drain_timeout, Duration::from_millis(1500));
        assert_eq!(serve.static_values_poll, Duration::from_secs(1));
        assert!(!serve.auth.authorize);
        assert_eq!(serve.auth.authorization_allow_ttl, Duration::from_secs(300));
        assert_eq!((serve.auth.authentication_configmap, serve.auth.token_review), (None, None), "decided at start");
        assert_eq!(serve.auth.token_review_ttl, Duration::from_secs(10));
        assert_eq!(serve.server.tls_reload_interval, Duration::from_secs(5));
        let explicit = |flags: &[&str]| {
            let args = Args::try_parse_from(["derm-adapter", "serve"].iter().chain(flags)).unwrap();
            let Command::Serve(serve) = args.command else { panic!("not serve") };
            (serve.auth.authentication_configmap, serve.auth.token_review)
        };
        assert_eq!(explicit(&["--authentication-configmap", "--token-review=false"]), (Some(true), Some(false)));
        assert_eq!(explicit(&["--authentication-configmap=false"]), (Some(false), None));
        assert!(Args::try_parse_from(["derm-adapter", "serve", "--tls-cert", "c.pem"]).is_err(), "cert needs key");
        assert_eq!(serve.upstream.upstream, None);
        assert!(
            Args::try_parse_from(["derm-adapter", "serve", "--upstream-ca-file", "ca.crt"]).is_err(),
            "upstream flags need --upstream"
        );
    }

    #[test]
    fn upstream_flags_parse() {
        let args = Args::try_parse_from([
            "derm-adapter",
            "serve",
            "--upstream",
            "https://keda-operator-metrics-apiserver.keda:443",
            "--upstream-token-file",
            "/t",
            "--upstream-insecure-skip-tls-verify",
            "--upstream-timeout",
            "2s",
        ])
        .unwrap();
        let Command::Serve(serve) = args.command else { panic!("not serve") };
        assert_eq!(serve.upstream.upstream.as_deref(), Some("https://keda-operator-metrics-apiserver.keda:443"));
        assert_eq!(serve.upstream.upstream_token_file, Some(PathBuf::from("/t")));
        assert!(serve.upstream.upstream_insecure_skip_tls_verify);
        assert_eq!(serve.upstream.upstream_timeout, Duration::from_secs(2));
        let both = [
            "derm-adapter",
            "serve",
            "--upstream",
            "https://x",
            "--upstream-ca-file",
            "c",
            "--upstream-insecure-skip-tls-verify",
        ];
        assert!(Args::try_parse_from(both).is_err(), "a CA and skipping verification contradict");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
