//! `derm simulate`: scenario x policies -> results.json, results.md, series.json and plots.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::sim::eval::{self, Config};
use crate::sim::policy::Name;
use crate::sim::{Pattern, plot, scenario};
use crate::trace::{self, Trace};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in application.
    #[arg(long, value_parser = parse_scenario)]
    scenario: String,
    /// Comma-separated policies: derm, derm-oracle, derm-static, uniform, hpa-cpu, static-peak.
    #[arg(long, value_delimiter = ',', default_value = "derm,derm-oracle,derm-static,uniform,hpa-cpu,static-peak", value_parser = parse_policy)]
    policies: Vec<Name>,
    /// Measured duration, s (after the warm-up).
    #[arg(long, default_value_t = 3600.0, value_parser = positive, allow_negative_numbers = true)]
    duration_s: f64,
    /// SLA on E2E latency, ms (default: the scenario's rule SLA, printed at the start).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    sla_ms: Option<f64>,
    /// Percentile of the SLA: P(E2E <= SLA) >= this.
    #[arg(long, default_value_t = 0.95, value_parser = unit_open)]
    percentile: f64,
    /// Decision interval of the Derm family and measurement window, s.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    interval_s: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Unmeasured time before the run (rounded up to whole intervals), s.
    #[arg(long, default_value_t = 300)]
    warmup_s: u32,
    /// Container start-up delay, s.
    #[arg(long, default_value_t = 10.0, value_parser = non_negative)]
    startup_s: f64,
    /// Head-sampling probability of traces (default: the scenario's).
    #[arg(long, value_parser = unit_half_open)]
    sampling: Option<f64>,
    /// Load pattern: constant:RPS | steps:T=RPS,... | diurnal:MIN,MAX,PERIOD_S | csv:FILE
    /// (columns time_s,rps). Default: the scenario's.
    #[arg(long, value_parser = parse_pattern)]
    pattern: Option<Pattern>,
    /// Graph-mix predictor of `derm` and `uniform`: ewma, ma, last, trend (Holt's trend two
    /// windows ahead; `trend:ALPHA,BETA,PHI` sets its parameters) or lstm (the attention LSTM
    /// of --model, feature `lstm`).
    #[arg(long, default_value = "trend")]
    predictor: String,
    /// Model file of `--predictor lstm` (from `derm train -o`; its `.json` sidecar next to it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Load levels of the profiling sweep.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(3..))]
    profile_levels: u32,
    /// Seconds per profiling level.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    profile_level_s: u32,
    /// Refit profiles every this many intervals.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    refit_every: u32,
    /// Write the sampled traces of the first policy's run here.
    #[arg(long)]
    emit_traces: Option<PathBuf>,
    #[arg(long, default_value = "jaeger", value_parser = ["jaeger", "otlp"])]
    trace_format: String,
    /// Only write OUT_DIR/windows.json: this many windows of --interval-s sampled from the
    /// scenario's ground truth (load, graph and argument mix; no event simulation, no
    /// policies), e.g. to train and evaluate the graph-mix predictor; and OUT_DIR/truth.json,
    /// the true mixes they were drawn from (`derm predict --evaluate --truth`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    windows_only: Option<u64>,
    /// Skip the plots.
    #[arg(long)]
    no_plots: bool,
    /// Output directory.
    #[arg(long)]
    out_dir: PathBuf,
}

fn parse_scenario(s: &str) -> Result<String, String> {
    if scenario::NAMES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("unknown scenario `{s}` (expected one of: {})", scenario::NAMES.join(", ")))
    }
}

fn parse_policy(s: &str) -> Result<Name, String> {
    Name::parse(s.trim()).map_err(|_| {
        let all: Vec<&str> = Name::ALL.iter().map(|n| n.as_str()).collect();
        format!("unknown policy `{s}` (expected any of: {})", all.join(", "))
    })
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

fn unit_half_open(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 && x <= 1.0 { Ok(x) } else { Err(format!("{x} must be in (0, 1]")) }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        scenario: args.scenario.clone(),
        policies: dedup(args.policies),
        duration_s: args.duration_s,
        sla_ms: args.sla_ms,
        percentile: args.percentile,
        interval_s: args.interval_s,
        seed: args.seed,
        warmup_s: args.warmup_s,
        startup_s: args.startup_s,
        sampling: args.sampling,
        pattern: args.pattern,
        predictor: args.predictor,
        model: args.model,
        profile_levels: args.profile_levels,
        profile_level_s: args.profile_level_s,
        refit_every: args.refit_every,
    };
    // One libtorch thread: see `derm train --threads`.
    #[cfg(feature = "lstm")]
    tch::set_num_threads(1);
    config.validate()?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("{}: cannot create", args.out_dir.display()))?;
    let scenario = crate::sim::Scenario::named(&config.scenario)?;
    eprintln!("{}", scenario.describe());
    if let Some(n) = args.windows_only {
        let pattern = config.pattern.clone().unwrap_or_else(|| scenario.pattern.clone());
        let sampling = config.sampling.unwrap_or(scenario.sampling);
        let windows =
            crate::sim::windows::sample(&scenario, &pattern, n as usize, config.interval_s, sampling, config.seed)?;
        let path = args.out_dir.join("windows.json");
        super::write_json(&path, &crate::pipeline::WindowsFile { windows })?;
        let truth = crate::sim::windows::truth(&scenario, &pattern, n as usize, config.interval_s)?;
        let truth_path = args.out_dir.join("truth.json");
        super::write_json(&truth_path, &crate::pipeline::WindowsFile { windows: truth })?;
        eprintln!(
            "wrote {n} windows of {} s to {} and the mixes they were drawn from to {}",
            config.interval_s,
            path.display(),
            truth_path.display()
        );
        return Ok(());
    }

    let mut writer = match &args.emit_traces {
        Some(path) => {
            let f = std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
            Some((path.clone(), std::io::BufWriter::new(f), None::<std::io::Error>, 0u64))
        }
        None => None,
    };
    let otlp = args.trace_format == "otlp";
    let mut write_batch = |traces: &[Trace]| {
        if let Some((_, w, err, n)) = writer.as_mut() {
            if err.is_some() || traces.is_empty() {
                return;
            }
            // Batches are whole documents one after another, which both decoders accept.
            let r = if otlp { trace::otlp::write_json(&mut *w, traces) } else { trace::jaeger::write(&mut *w, traces) };
            match r {
                Ok(()) => *n += traces.len() as u64,
                Err(e) => *err = Some(e),
            }
        }
    };

    let bar = ProgressBar::new(eval::work_s(&config));
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulating [{bar:40}] {pos}/{len} simulated s ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |s: u64| bar.inc(s);
    let sink: Option<crate::sim::run::TraceSink<'_>> =
        if args.emit_traces.is_some() { Some(&mut write_batch) } else { None };
    let evaluation = eval::evaluate(&config, &progress, sink)?;
    bar.finish_and_clear();

    if let Some((path, mut w, err, n)) = writer.take() {
        if let Some(e) = err {
            return Err(e).with_context(|| format!("{}: cannot write traces", path.display()));
        }
        w.flush().with_context(|| format!("{}: cannot write traces", path.display()))?;
        eprintln!("wrote {n} sampled traces of `{}` to {}", evaluation.report.order[0], path.display());
    }
    super::write_json(&args.out_dir.join("results.json"), &evaluation.report)?;
    super::write_json(&args.out_dir.join("series.json"), &evaluation.series)?;
    let md = eval::markdown(&evaluation.report);
    std::fs::write(args.out_dir.join("results.md"), &md)
        .with_context(|| format!("{}: cannot write", args.out_dir.join("results.md").display()))?;
    if !args.no_plots {
        plot::write_all(&args.out_dir, &evaluation)?;
    }
    print!("{md}");
    Ok(())
}

fn dedup(policies: Vec<Name>) -> Vec<Name> {
    let mut out: Vec<Name> = Vec::new();
    for p in policies {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
