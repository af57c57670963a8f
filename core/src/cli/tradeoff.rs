//! `derm tradeoff`: each policy's containers against its window violations as its safety
//! knob turns -> tradeoff.json, tradeoff.md and a plot.

use indicatif::{ProgressBar, ProgressStyle};

use super::simulate::{Sim, dedup, parse_policy, shortfall, unit_closed, unit_closed_open, unit_half_open};
use crate::sim::policy::Name;
use crate::sim::{plot, tradeoff};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    sim: Sim,
    /// Comma-separated seeds; each point is the mean over them.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    seeds: Vec<u64>,
    /// Comma-separated policies: derm, derm-oracle, derm-static, uniform, hpa-cpu.
    #[arg(long, value_delimiter = ',', default_value = "derm,derm-static,uniform,hpa-cpu", value_parser = parse_policy)]
    policies: Vec<Name>,
    /// Load headrooms of the profile-based policies (fractions of the forecast load; negative
    /// values, down to -0.5, plan for less).
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6", value_parser = shortfall, allow_negative_numbers = true)]
    load_headrooms: Vec<f64>,
    /// Tail margins of the profile-based policies, each run with every headroom (default:
    /// `--tail-margin` alone). A policy's best point is its cheapest over both knobs.
    #[arg(long, value_delimiter = ',', value_parser = unit_closed_open)]
    tail_margins: Option<Vec<f64>>,
    /// CPU utilisation targets of `hpa-cpu`.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.4,0.5,0.6,0.7", value_parser = unit_half_open)]
    hpa_targets: Vec<f64>,
    /// Share of windows whose P95 may exceed the SLA.
    #[arg(long, default_value_t = 0.05, value_parser = unit_closed)]
    goal: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let base = args.sim.config();
    let config = tradeoff::Config {
        tail_margins: args.tail_margins.unwrap_or_else(|| vec![base.tail_margin]),
        base,
        seeds: args.seeds,
        policies: dedup(args.policies),
        load_headrooms: args.load_headrooms,
        hpa_targets: args.hpa_targets,
        goal: args.goal,
    };
    #[cfg(feature = "lstm")]
    tch::set_num_threads(1);
    config.validate()?;
    let out_dir = args.sim.out_dir()?;
    let bar = ProgressBar::new(tradeoff::work_s(&config));
    bar.set_style(
        ProgressStyle::with_template("{spinner} trade-off [{bar:40}] {pos}/{len} simulated s ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = tradeoff::run(&config, &|s| bar.inc(s))?;
    bar.finish_and_clear();
    super::write_json(&out_dir.join("tradeoff.json"), &report)?;
    let md = tradeoff::markdown(&report);
    let md_path = out_dir.join("tradeoff.md");
    std::fs::write(&md_path, &md).map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", md_path.display()))?;
    if args.sim.plots() {
        plot::write_tradeoff(out_dir, &report)?;
    }
    print!("{md}");
    Ok(())
}
