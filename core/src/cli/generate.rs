//! `derm generate`: synthetic traces with known parameters.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::generate::Scenario;
use crate::trace;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in scenario.
    #[arg(long, default_value = "acceptance", value_parser = ["acceptance"])]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output format: Jaeger JSON, OTLP JSON or OTLP protobuf.
    #[arg(long, default_value = "jaeger", value_parser = ["jaeger", "otlp", "otlp-protobuf"])]
    format: String,
    /// Multiply every load level by this factor (bigger files).
    #[arg(long, default_value_t = 1.0)]
    load_scale: f64,
    /// Sampling probability of the emitted traces, in (0, 1].
    #[arg(long)]
    sampling: Option<f64>,
    /// Unix time of the first span (default: a fixed, window-aligned time in 2023).
    #[arg(long, default_value_t = 1_699_999_980)]
    origin_s: i64,
    /// Seconds per load level (default: the scenario's 240).
    #[arg(long)]
    level_s: Option<u32>,
    /// Output file.
    #[arg(long, short = 'o', required_unless_present = "instance")]
    out: Option<PathBuf>,
    /// Instead of traces: one of the optimizer benchmark's instances (profiles.json and
    /// graphs.json into `--out-dir`, for `derm solve`).
    #[arg(
        long,
        value_parser = clap::builder::PossibleValuesParser::new(crate::generate::instance::benchmarks().map(|b| b.0)),
        requires = "out_dir",
        conflicts_with = "out"
    )]
    instance: Option<String>,
    /// Output directory of `--instance`.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Also write the true parameters as JSON here.
    #[arg(long)]
    truth: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let (Some(name), Some(dir)) = (&args.instance, &args.out_dir) {
        return instance(name, dir);
    }
    let out = args.out.as_ref().context("--out is required")?;
    if !(args.load_scale.is_finite() && args.load_scale > 0.0) {
        anyhow::bail!("--load-scale must be > 0, got {}", args.load_scale);
    }
    let mut scenario = Scenario::acceptance(args.seed);
    if let Some(p) = args.sampling {
        if !(p > 0.0 && p <= 1.0) {
            anyhow::bail!("--sampling must be in (0, 1], got {p}");
        }
        scenario.sampling = p;
    }
    if let Some(l) = args.level_s {
        if l == 0 {
            anyhow::bail!("--level-s must be > 0");
        }
        scenario.level_s = l;
    }
    for w in &mut scenario.levels_rps {
        *w *= args.load_scale;
    }
    for s in &mut scenario.services {
        // Keep every service below capacity at the scaled load.
        s.a /= args.load_scale;
    }
    // The default origin is a multiple of 60 s, so windows never straddle two load levels.
    let traces = scenario.traces(args.origin_s);
    let file = std::fs::File::create(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    match args.format.as_str() {
        "otlp" => trace::otlp::write_json(&mut w, &traces)?,
        // A request per 5 s of traces back to back, as a collector batches them: protobuf
        // merges repeated fields, so the file is one request with all their `resourceSpans`.
        "otlp-protobuf" => {
            let batch = |t: &trace::Trace| t.spans.iter().map(|s| s.start_us).min().unwrap_or(0).div_euclid(5_000_000);
            for chunk in traces.chunk_by(|a, b| batch(a) == batch(b)) {
                w.write_all(&trace::otlp::encode_protobuf(chunk))?;
            }
        }
        _ => trace::jaeger::write(&mut w, &traces)?,
    }
    w.flush()?;
    if let Some(path) = &args.truth {
        let services: serde_json::Map<String, serde_json::Value> = scenario
            .services
            .iter()
            .map(|s| {
                (s.name.clone(), serde_json::json!({"l0_ms": s.l0_ms, "a": s.a, "b": s.b, "containers": s.containers}))
            })
            .collect();
        super::write_json(path, &serde_json::json!({ "services": services }))?;
    }
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    eprintln!("wrote {} traces, {spans} spans to {}", traces.len(), out.display());
    Ok(())
}

/// Writes a benchmark instance and prints the `derm solve` command that solves it as the
/// benchmark does.
fn instance(name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let (_, spec, load) = crate::generate::instance::benchmarks()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .with_context(|| format!("--instance: unknown instance {name}"))?;
    let inst = spec.generate();
    std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}: cannot create", dir.display()))?;
    let (profiles, graphs) = (dir.join("profiles.json"), dir.join("graphs.json"));
    super::write_json(&profiles, &inst.profiles)?;
    super::write_json(&graphs, &crate::graph::catalog::Graphs { graphs: inst.graphs })?;
    println!(
        "derm solve --profiles {} --graphs {} --load-rps {load} --sla-ms {} -o {}",
        profiles.display(),
        graphs.display(),
        inst.sla_ms,
        dir.join("plan.json").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::generate::instance::benchmarks;
    use crate::graph::catalog::Graphs;
    use crate::profile::Profiles;

    /// `derm solve` on the files must solve the benchmark's own instance: every float read
    /// back bit for bit (the 2,500-service solve takes another path for an ulp's difference).
    #[test]
    fn benchmark_instances_round_trip_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, spec, _) in benchmarks().into_iter().take(2) {
            let out = dir.path().join(name);
            super::instance(name, &out).expect("writes");
            let inst = spec.generate();
            let profiles: Profiles = crate::cli::read_json(&out.join("profiles.json")).expect("profiles.json");
            let graphs: Graphs = crate::cli::read_json(&out.join("graphs.json")).expect("graphs.json");
            assert_eq!(profiles, inst.profiles, "{name}: profiles");
            assert_eq!(graphs.graphs, inst.graphs, "{name}: graphs");
        }
        let err = super::instance("9svc", dir.path()).expect_err("unknown instance");
        assert!(err.to_string().contains("--instance"), "{err}");
    }
}
