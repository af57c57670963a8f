//! `derm simulate`: scenario x policies -> results.json, results.md, series.json,
//! decisions.json and plots.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::sim::eval::{self, Config};
use crate::sim::policy::Name;
use crate::sim::{Pattern, plot, scenario};
use crate::trace::{self, Trace};

/// The settings `derm simulate` and `derm tradeoff` share.
#[derive(Debug, clap::Args)]
pub(crate) struct Sim {
    /// Built-in application.
    #[arg(long, value_parser = parse_scenario)]
    scenario: String,
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
    /// windows ahead; `trend:ALPHA,BETA,PHI` sets its parameters), loadmix (shares log-linear
    /// in the load, fitted on every window) or lstm (the attention LSTM of --model, feature
    /// `lstm`).
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
    /// Share of the allowed tail 1 - p that the profile-based policies remove from their
    /// target (0.4: p = 0.95 is solved as 0.97).
    #[arg(long, default_value_t = crate::sim::policy::derm::TAIL_MARGIN, value_parser = unit_closed_open)]
    tail_margin: f64,
    /// Graphs below this predicted share leave the SLA constraint of `derm`, `derm-oracle`
    /// and `derm-static` (0: every graph counts with its share; the paper's 0.02 for
    /// ablations). `uniform` always holds only graphs of >= 0.02 to the target.
    #[arg(long, default_value_t = crate::sim::policy::derm::DERM_RARE_THRESHOLD, value_parser = unit_closed_open)]
    rare_threshold: f64,
    /// Where `derm` and `uniform` learn each interval's graph mix: `counters` (fitted to the
    /// per-service call counters of the interval that just ended, forecast one interval
    /// ahead) or `traces` (the sampled traces' windows, one interval older, forecast two
    /// ahead; the policy before session 18).
    #[arg(long, default_value = "counters")]
    mix_source: crate::sim::policy::derm::MixSource,
    /// Plan `derm` and `uniform` on the forecast mix alone, without raising any service to
    /// what the long-run mean mix needs (the long-run floor; for ablations).
    #[arg(long)]
    no_long_run_floor: bool,
    /// Skip the plots.
    #[arg(long)]
    no_plots: bool,
    /// Output directory.
    #[arg(long)]
    out_dir: PathBuf,
}

impl Sim {
    /// The evaluation settings (policies, seed, headroom and HPA target at their defaults).
    pub(crate) fn config(&self) -> Config {
        Config {
            scenario: self.scenario.clone(),
            duration_s: self.duration_s,
            sla_ms: self.sla_ms,
            percentile: self.percentile,
            interval_s: self.interval_s,
            warmup_s: self.warmup_s,
            startup_s: self.startup_s,
            sampling: self.sampling,
            pattern: self.pattern.clone(),
            predictor: self.predictor.clone(),
            model: self.model.clone(),
            profile_levels: self.profile_levels,
            profile_level_s: self.profile_level_s,
            refit_every: self.refit_every,
            tail_margin: self.tail_margin,
            long_run_floor: !self.no_long_run_floor,
            rare_threshold: self.rare_threshold,
            mix_source: self.mix_source,
            ..Config::default()
        }
    }

    /// The output directory, created.
    pub(crate) fn out_dir(&self) -> anyhow::Result<&std::path::Path> {
        std::fs::create_dir_all(&self.out_dir).with_context(|| format!("{}: cannot create", self.out_dir.display()))?;
        Ok(&self.out_dir)
    }

    pub(crate) fn plots(&self) -> bool {
        !self.no_plots
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    sim: Sim,
    /// Comma-separated policies: derm, derm-oracle, derm-static, uniform, hpa-cpu, static-peak.
    #[arg(long, value_delimiter = ',', default_value = "derm,derm-oracle,derm-static,uniform,hpa-cpu,static-peak", value_parser = parse_policy)]
    policies: Vec<Name>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra load the profile-based policies plan for, as a fraction of the forecast (0.1:
    /// 10%; negative plans for less, down to -0.5, for trade-off curves).
    #[arg(long, default_value_t = crate::sim::policy::derm::LOAD_HEADROOM, value_parser = shortfall, allow_negative_numbers = true)]
    load_headroom: f64,
    /// CPU utilisation target of `hpa-cpu`.
    #[arg(long, default_value_t = 0.5, value_parser = unit_half_open)]
    hpa_target: f64,
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
}

pub(crate) fn parse_scenario(s: &str) -> Result<String, String> {
    if scenario::NAMES.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!("unknown scenario `{s}` (expected one of: {})", scenario::NAMES.join(", ")))
    }
}

pub(crate) fn parse_policy(s: &str) -> Result<Name, String> {
    Name::parse(s.trim()).map_err(|_| {
        let all: Vec<&str> = Name::ALL.iter().map(|n| n.as_str()).collect();
        format!("unknown policy `{s}` (expected any of: {})", all.join(", "))
    })
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("`{s}` is not a finite number"))
}

pub(crate) fn positive(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 { Ok(x) } else { Err(format!("{x} must be > 0")) }
}

pub(crate) fn non_negative(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x >= 0.0 { Ok(x) } else { Err(format!("{x} must be >= 0")) }
}

fn unit_open(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 && x < 1.0 { Ok(x) } else { Err(format!("{x} must be in (0, 1)")) }
}

pub(crate) fn unit_closed_open(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if (0.0..1.0).contains(&x) { Ok(x) } else { Err(format!("{x} must be in [0, 1)")) }
}

/// A load headroom: above -[`crate::sim::eval::MAX_SHORTFALL`].
pub(crate) fn shortfall(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    let min = -crate::sim::eval::MAX_SHORTFALL;
    if x > min { Ok(x) } else { Err(format!("{x} must be > {min}")) }
}

pub(crate) fn unit_closed(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if (0.0..=1.0).contains(&x) { Ok(x) } else { Err(format!("{x} must be in [0, 1]")) }
}

pub(crate) fn unit_half_open(s: &str) -> Result<f64, String> {
    let x = number(s)?;
    if x > 0.0 && x <= 1.0 { Ok(x) } else { Err(format!("{x} must be in (0, 1]")) }
}

fn parse_pattern(s: &str) -> Result<Pattern, String> {
    Pattern::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config {
        policies: dedup(args.policies),
        seed: args.seed,
        load_headroom: args.load_headroom,
        hpa_target: args.hpa_target,
        ..args.sim.config()
    };
    // One libtorch thread: see `derm train --threads`.
    #[cfg(feature = "lstm")]
    tch::set_num_threads(1);
    config.validate()?;
    let out_dir = args.sim.out_dir()?;
    let scenario = crate::sim::Scenario::named(&config.scenario)?;
    eprintln!("{}", scenario.describe());
    if let Some(n) = args.windows_only {
        let pattern = config.pattern.clone().unwrap_or_else(|| scenario.pattern.clone());
        let sampling = config.sampling.unwrap_or(scenario.sampling);
        let windows =
            crate::sim::windows::sample(&scenario, &pattern, n as usize, config.interval_s, sampling, config.seed)?;
        let path = out_dir.join("windows.json");
        super::write_json(&path, &crate::pipeline::WindowsFile { windows })?;
        let truth = crate::sim::windows::truth(&scenario, &pattern, n as usize, config.interval_s)?;
        let truth_path = out_dir.join("truth.json");
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
    super::write_json(&out_dir.join("results.json"), &evaluation.report)?;
    super::write_json(&out_dir.join("series.json"), &evaluation.series)?;
    super::write_json(&out_dir.join("decisions.json"), &evaluation.decisions)?;
    let md = eval::markdown(&evaluation.report);
    std::fs::write(out_dir.join("results.md"), &md)
        .with_context(|| format!("{}: cannot write", out_dir.join("results.md").display()))?;
    if args.sim.plots() {
        plot::write_all(out_dir, &evaluation)?;
    }
    print!("{md}");
    Ok(())
}

pub(crate) fn dedup(policies: Vec<Name>) -> Vec<Name> {
    let mut out: Vec<Name> = Vec::new();
    for p in policies {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
