//! `derm latency`: P(E2E latency <= SLA) per graph, a debugging aid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::latency::Compiled;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelFiles,
    /// JSON object: service -> per-container load (requests/s).
    #[arg(long)]
    per_container_rps: PathBuf,
    /// SLA on E2E latency, ms.
    #[arg(long)]
    sla_ms: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.sla_ms.is_finite() && args.sla_ms > 0.0) {
        bail!("--sla-ms must be a positive number, got {}", args.sla_ms);
    }
    let (profiles, graphs) = args.model.load()?;
    let loads: BTreeMap<String, f64> = super::read_json(&args.per_container_rps)?;
    let names: Vec<&String> = profiles.services.keys().collect();
    let mut params = Vec::with_capacity(names.len());
    for name in &names {
        let w = *loads
            .get(*name)
            .with_context(|| format!("{}: no load for service `{name}`", args.per_container_rps.display()))?;
        if !(w.is_finite() && w >= 0.0) {
            bail!("{}: load of `{name}` must be >= 0, got {w}", args.per_container_rps.display());
        }
        params.push(profiles.services[*name].params(w));
    }
    println!("{:<14} {:>7} {:>6} {:>12} {:>12}", "graph", "share", "calls", "min_ms", "P(Z<=SLA)");
    let mut weighted = 0.0;
    for g in &graphs.graphs {
        let compiled = Compiled::new(&g.root, |s| names.iter().position(|n| n.as_str() == s))
            .with_context(|| format!("graph {}", g.id))?;
        let p = compiled.cdf(&params, args.sla_ms);
        weighted += g.share * p;
        println!(
            "{:<14} {:>7.4} {:>6} {:>12.3} {:>12.6}",
            g.id,
            g.share,
            g.root.size(),
            compiled.min_latency_ms(&params),
            p
        );
    }
    println!("weighted P(Z <= {} ms) = {weighted:.6}", args.sla_ms);
    Ok(())
}
