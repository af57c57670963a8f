//! `derm-adapter demo`: the whole Derm loop on a simulated application, served as the real
//! metrics API, without a cluster.
//!
//! The simulator's `trainticket` app emits sampled traces and per-service call counters;
//! Derm's online loop (the `derm` policy of [`derm_core::sim`]: trace pipeline -> windows ->
//! profile refits -> the mix fitted to the counters and forecast -> KKT solve -> integer
//! plan, as a DermApp with `spec.callCounts`) decides replicas every interval; each decision is
//! published to the same [`Store`] the `serve` command answers from, on
//! `https://127.0.0.1:6443` (self-signed). Simulated time runs `--speed` times faster than
//! wall time. A live table (indicatif) shows load, the planned graph mix and replicas per
//! service. After the run the last values stay served until Ctrl-C (or exit with `--exit`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use derm_core::sim::eval::{self, Prepared};
use derm_core::sim::policy::Name;
use derm_core::sim::run::{self, Decision};
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::admin::{self, Health};
use crate::auth::Policy;
use crate::crd::ScaleTargetRef;
use crate::metrics::{Key, Snapshot, Staleness, Store, Value};
use crate::server::tls::{self, Identity};
use crate::server::{Limits, Server};

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the metrics API (HTTPS, self-signed).
    #[arg(long, env = "DERM_DEMO_LISTEN", default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Simulated seconds per wall-clock second.
    #[arg(long, env = "DERM_DEMO_SPEED", default_value_t = 60.0, value_parser = positive)]
    pub speed: f64,
    /// Simulated minutes to run (after a 5-minute warm-up and the profiling phase).
    #[arg(long, env = "DERM_DEMO_MINUTES", default_value_t = 60)]
    pub minutes: u32,
    /// Seed of the simulation.
    #[arg(long, env = "DERM_DEMO_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Namespace the values are published in.
    #[arg(long, env = "DERM_DEMO_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Exit when the run ends instead of serving the last values until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let store = Arc::new(Store::default());
    let health = Arc::new(Health::new(store.clone()));
    let tls = tls::server_config(Identity::self_signed(&["localhost", "127.0.0.1", "::1"])?, None)?;
    let server = Server::bind(args.listen, Some(tls), Limits::default())
        .await
        .with_context(|| format!("--listen {}: cannot serve the metrics API there", args.listen))?;
    let listen = server.local_addr()?;
    let mut registry = Registry::default();
    let metrics = admin::Metrics::register(&mut registry);
    let router = crate::api::router(crate::api::AppState {
        store: store.clone(),
        health: health.clone(),
        policy: Arc::new(Policy::Open),
        metrics,
        upstream: None,
    });
    let (stop, stopped) = watch::channel(false);
    let serving = tokio::spawn(server.serve(router, crate::server::shutdown::stopped(stopped)));

    println!("Derm demo: the metrics API is served on https://{listen} (self-signed). Try:");
    // `--token`: without any credentials kubectl prompts for a basic-auth user name (and
    // fails on EOF); the demo serves everyone, so any token does.
    println!(
        "  {} --server https://{listen} --insecure-skip-tls-verify --token demo get --raw \
         /apis/external.metrics.k8s.io/v1beta1/namespaces/{}/derm_desired_replicas",
        kubectl().unwrap_or_else(|| "kubectl".into()),
        args.namespace
    );
    if kubectl().is_none() {
        println!("  (no kubectl on PATH: `make cluster-build` builds one into ~/.cache/derm/bin/current/)");
    }
    println!("Profiling phase (simulated), then {} simulated minutes at {}x ...", args.minutes, args.speed);

    let config = eval::Config {
        scenario: "trainticket".into(),
        policies: vec![Name::Derm],
        duration_s: f64::from(args.minutes) * 60.0,
        seed: args.seed,
        ..eval::Config::default()
    };
    let namespace = args.namespace.clone();
    let speed = args.speed;
    let loop_store = store.clone();
    let loop_health = health.clone();
    let simulation = tokio::task::spawn_blocking(move || -> anyhow::Result<run::Summary> {
        let prepared = eval::prepare(&config, &|_| {}).context("demo scenario")?;
        let mut policy = prepared.derm_policy(Name::Derm, &config.predictor);
        println!(
            "app {}: {} services, {} call graphs; SLA {:.0} ms at P{:.0}; one decision per {} s",
            prepared.scenario.app.name,
            prepared.scenario.app.services.len(),
            prepared.scenario.app.graphs.len(),
            prepared.run.sla_ms,
            100.0 * config.percentile,
            config.interval_s
        );
        let mut live = Live::new(&prepared, namespace, speed, loop_store, loop_health);
        let mut observer = |d: &Decision<'_>| live.observe(d);
        let outcome = run::run_observed(
            &prepared.scenario,
            &prepared.pattern,
            &mut policy,
            &prepared.run,
            &|_| {},
            None,
            Some(&mut observer),
        );
        live.finish();
        Ok(outcome.summary)
    });
    let summary = tokio::select! {
        result = simulation => result.context("simulation task")??,
        result = crate::server::shutdown::signal() => {
            result.context("cannot listen for signals")?;
            stop.send_replace(true);
            return Ok(());
        }
    };
    println!(
        "Run done: {:.1} containers on average, window P95 above the SLA in {:.1}% of windows, {} solves.",
        summary.mean_containers,
        100.0 * summary.window_violation_rate,
        summary.stats.solves
    );
    if !args.exit {
        println!("Serving the last values on https://{listen} until Ctrl-C.");
        crate::server::shutdown::signal().await.context("cannot listen for signals")?;
    }
    health.shut_down();
    stop.send_replace(true);
    serving.await.context("API server task")?;
    Ok(())
}

/// Publishes each decision and keeps the live table.
struct Live {
    services: Vec<String>,
    graphs: BTreeMap<String, usize>,
    namespace: String,
    app: String,
    speed: f64,
    store: Arc<Store>,
    health: Arc<Health>,
    bar: ProgressBar,
    /// Wall time and scenario time of the first decision: pacing starts there.
    started: Option<(Instant, f64)>,
    end_s: f64,
}

impl Live {
    fn new(prepared: &Prepared, namespace: String, speed: f64, store: Arc<Store>, health: Arc<Health>) -> Self {
        let app = &prepared.scenario.app;
        let end_s = prepared.run.duration_s;
        let bar = if std::io::stdout().is_terminal() { ProgressBar::new(end_s as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg}\n[{bar:40}] {pos}/{len} simulated s")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Live {
            services: app.services.iter().map(|s| s.name.clone()).collect(),
            graphs: app.ids.iter().cloned().zip(app.graphs.iter().map(|g| g.calls().len())).collect(),
            namespace,
            app: app.name.clone(),
            speed,
            store,
            health,
            bar,
            started: None,
            end_s,
        }
    }

    fn observe(&mut self, d: &Decision<'_>) {
        // Accelerated time: wait until the wall clock catches up with the scenario clock
        // (pacing for people watching, not synchronisation; the warm-up runs at full speed).
        if d.now_s >= 0.0 {
            let (wall0, sim0) = *self.started.get_or_insert((Instant::now(), d.now_s));
            let due = wall0 + Duration::from_secs_f64((d.now_s - sim0) / self.speed);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let now = SystemTime::now();
        self.store.publish(Snapshot::new(self.services.iter().zip(d.replicas).map(|(s, &n)| {
            let value = Value {
                replicas: n,
                timestamp: now,
                staleness: Staleness::NEVER,
                scale_target: Some(ScaleTargetRef { kind: "Deployment".into(), name: s.clone() }),
            };
            (Key::new(self.namespace.as_str(), self.app.as_str(), s.as_str()), value)
        })));
        self.health.mark_synced();
        let table = self.table(d);
        if self.bar.is_hidden() {
            println!("{table}");
        } else {
            self.bar.set_position(d.now_s.clamp(0.0, self.end_s) as u64);
            self.bar.set_message(table);
        }
    }

    fn table(&self, d: &Decision<'_>) -> String {
        let mut out = String::new();
        let total: u32 = d.replicas.iter().sum();
        let _ = write!(out, "t = {:>6.0} s   load {:>6.1} req/s   containers {:>4}", d.now_s, d.arrivals_rps, total);
        if let Some(i) = &d.insight {
            let _ = write!(out, "   planned for {:.1} req/s, P(SLA) {:.4}", i.load_rps, i.predicted_sla_probability);
            let mut mix: Vec<_> = i.mix.iter().collect();
            mix.sort_by(|a, b| b.1.total_cmp(a.1));
            let _ = write!(out, "\n  graph mix:");
            for (id, share) in mix.iter().take(6) {
                let calls = self.graphs.get(*id).copied().unwrap_or(0);
                let _ = write!(out, "  {}({calls} svc) {:.0}%", &id[..id.len().min(8)], 100.0 * *share);
            }
        }
        for (k, (s, n)) in self.services.iter().zip(d.replicas).enumerate() {
            if k % 4 == 0 {
                out.push_str("\n ");
            }
            let _ = write!(out, " {:<22} {:>3}", truncate(s, 22), n);
        }
        out
    }

    fn finish(&self) {
        self.bar.finish();
    }
}

/// `kubectl` when it is on PATH, else the one `make cluster-build` builds, if present.
fn kubectl() -> Option<String> {
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()));
    if on_path {
        return Some("kubectl".into());
    }
    let built = std::path::Path::new(&std::env::var_os("HOME")?).join(".cache/derm/bin/current/kubectl");
    built.is_file().then(|| built.display().to_string())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
