//! `derm solve`: profiles + graph mix + load + SLA -> plan.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::optimize::{self, Bounds, Input, Plan, Policy, Problem, Start};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelFiles,
    /// Total entry load W, requests/s.
    #[arg(long)]
    load_rps: f64,
    /// SLA on E2E latency, ms.
    #[arg(long)]
    sla_ms: f64,
    /// Target weighted share of requests within the SLA.
    #[arg(long, default_value_t = 0.95)]
    percentile: f64,
    /// Graphs with a smaller share leave the constraint.
    #[arg(long, default_value_t = 0.02)]
    rare_threshold: f64,
    /// Highest container utilisation allowed (queue stability margin).
    #[arg(long, default_value_t = 0.9)]
    max_utilization: f64,
    #[arg(long, default_value = "derm", value_parser = ["derm", "uniform"])]
    policy: String,
    /// KKT starting point.
    #[arg(long, default_value = "paired", value_parser = ["paired", "erms", "flat"])]
    start: String,
    /// JSON: service -> {"min": N, "max": M}.
    #[arg(long)]
    bounds: Option<PathBuf>,
    /// Write plan.json here (default: stdout).
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// Solve this many more times and print the solve times (stderr): a process's first solve
    /// also pays its warm-up, a long-running one (the adapter's) does not.
    #[arg(long, default_value_t = 0)]
    repeat: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (profiles, graphs) = args.model.load()?;
    let bounds: BTreeMap<String, Bounds> = match &args.bounds {
        Some(p) => super::read_json(p)?,
        None => BTreeMap::new(),
    };
    let input = Input {
        profiles: &profiles,
        graphs: &graphs.graphs,
        load_rps: args.load_rps,
        sla_ms: args.sla_ms,
        percentile: args.percentile,
        rare_threshold: args.rare_threshold,
        bounds,
        max_utilization: args.max_utilization,
    };
    let problem = Problem::new(&input)?;
    for w in &problem.warnings {
        tracing::warn!("{w}");
    }
    let start = match args.start.as_str() {
        "erms" => Start::Erms,
        "flat" => Start::Flat,
        _ => Start::Paired,
    };
    let policy = if args.policy == "uniform" { Policy::Uniform } else { Policy::Derm };
    let plan = optimize::solve(&problem, policy, start)?;
    if args.repeat > 0 {
        let mut times = Vec::with_capacity(args.repeat as usize);
        for _ in 0..args.repeat {
            times.push(optimize::solve(&problem, policy, start)?.solve_ms);
        }
        eprintln!("{}", repeat_summary(plan.solve_ms, &mut times));
    }
    let baseline = match policy {
        Policy::Derm => optimize::solve(&problem, Policy::Uniform, start).ok(),
        Policy::Uniform => None,
    };
    match &args.out {
        Some(path) => {
            super::write_json(path, &plan)?;
            print!("{}", table(&plan, baseline.as_ref()));
        }
        None => println!("{}", serde_json::to_string_pretty(&plan)?),
    }
    Ok(())
}

/// The first solve's time and the repeated ones' min / median / max.
fn repeat_summary(first_ms: f64, times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    let (min, max) = (times[0], times[times.len() - 1]);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 1 { times[mid] } else { 0.5 * (times[mid - 1] + times[mid]) };
    format!("solve_ms: first {first_ms:.2}; {} more: min {min:.2}, median {median:.2}, max {max:.2}", times.len())
}

/// Human tables: services, graphs, and the saving against `uniform`.
pub fn table(plan: &Plan, uniform: Option<&Plan>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<24} {:>9} {:>12} {:>12} {:>10}", "service", "replicas", "w_rps", "demand_rps", "rate/ms");
    for (name, p) in &plan.services {
        let _ = writeln!(
            s,
            "{:<24} {:>9} {:>12.2} {:>12.2} {:>10.4}",
            name, p.replicas, p.per_container_load_rps, p.demand_rps, p.rate_per_ms
        );
    }
    let _ = writeln!(s, "{:<14} {:>8} {:>10} {:>9}", "graph", "share", "P(<=SLA)", "frequent");
    for (id, g) in &plan.graphs {
        let _ = writeln!(s, "{:<14} {:>8.4} {:>10.5} {:>9}", id, g.share, g.sla_probability, g.frequent);
    }
    let _ = writeln!(
        s,
        "total replicas {} (continuous {:.2}), predicted P = {:.5}, {} iterations, {:.2} ms",
        plan.total_replicas, plan.continuous_containers, plan.predicted_sla_probability, plan.iterations, plan.solve_ms
    );
    if let Some(u) = uniform {
        let saving = 1.0 - plan.total_replicas as f64 / u.total_replicas.max(1) as f64;
        let _ = writeln!(s, "uniform policy: {} replicas; derm saves {:.1}%", u.total_replicas, 100.0 * saving);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeat_summary_orders_and_takes_the_median() {
        let line = super::repeat_summary(9.5, &mut [3.0, 1.0, 2.0, 10.0]);
        assert_eq!(line, "solve_ms: first 9.50; 4 more: min 1.00, median 2.50, max 10.00");
        let line = super::repeat_summary(1.0, &mut [4.0, 2.0, 3.0]);
        assert!(line.ends_with("min 2.00, median 3.00, max 4.00"), "{line}");
    }
}
