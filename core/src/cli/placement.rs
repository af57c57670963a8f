//! `derm placement`: the same static deployment placed by kube-scheduler-like spreading and by
//! Derm's extender, simulated with a per-hop network cost (see [`crate::sim::placement`]).

use std::path::PathBuf;

use crate::sim::placement::{self, Cluster, Config};
use crate::sim::{Pattern, Scenario, scenario};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in application.
    #[arg(long, value_parser = parse_scenario)]
    scenario: String,
    /// Cluster nodes.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    nodes: u32,
    /// Pod limit per node (default: 1.25x the pods per node, rounded up).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pods_per_node: Option<u32>,
    /// Delay of a cross-node call in each direction, ms.
    #[arg(long, env = "DERM_HOP_MS", default_value_t = 0.5, value_parser = non_negative)]
    hop_ms: f64,
    /// Utilisation the static deployment is sized for at each service's peak demand.
    #[arg(long, default_value_t = 0.6, value_parser = unit_open)]
    utilisation: f64,
    /// The extender's weight in the KubeSchedulerConfiguration.
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    extender_weight: f64,
    /// Measured duration, s.
    #[arg(long, default_value_t = 600.0, value_parser = positive)]
    duration_s: f64,
    /// Unmeasured time before the run, s.
    #[arg(long, default_value_t = 60.0, value_parser = non_negative)]
    warmup_s: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Load pattern (as `derm simulate --pattern`). Default: the scenario's.
    #[arg(long, value_parser = |s: &str| Pattern::parse(s).map_err(|e| e.to_string()))]
    pattern: Option<Pattern>,
    /// Also write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_scenario(s: &str) -> Result<String, String> {
    if scenario::NAMES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("unknown scenario `{s}` (expected one of: {})", scenario::NAMES.join(", ")))
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("`{s}` is not a finite number"))
}

fn positive(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 { Ok(x) } else { Err(format!("{x} must be > 0")) }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x >= 0.0 { Ok(x) } else { Err(format!("{x} must be >= 0")) }
}

fn unit_open(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 && x < 1.0 { Ok(x) } else { Err(format!("{x} must be in (0, 1)")) }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::named(&args.scenario)?;
    eprintln!("{}", scenario.describe());
    let pattern = args.pattern.unwrap_or_else(|| scenario.pattern.clone());
    let pods_per_node = match args.pods_per_node {
        Some(n) => n,
        None => {
            let replicas = placement::static_replicas(&scenario.app, &pattern, args.duration_s, args.utilisation);
            let pods: u32 = replicas.iter().sum();
            (f64::from(pods) * 1.25 / f64::from(args.nodes)).ceil() as u32
        }
    };
    let config = Config {
        cluster: Cluster { nodes: args.nodes, pods_per_node },
        hop_ms: args.hop_ms,
        utilisation: args.utilisation,
        extender_weight: args.extender_weight,
        duration_s: args.duration_s,
        warmup_s: args.warmup_s,
        seed: args.seed,
    };
    let study = placement::study(&scenario, &pattern, &config)?;
    if let Some(path) = &args.out {
        super::write_json(path, &study)?;
    }
    print!("{}", placement::markdown(&study));
    Ok(())
}
