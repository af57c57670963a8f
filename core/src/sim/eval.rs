//! The comparison behind `derm simulate`: one profiling phase, then every policy on the same
//! scenario, seed and arrivals (in parallel: runs are independent), then a report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use super::policy::derm::{self, Derm};
use super::policy::hpa::{self, Hpa};
use super::policy::{Name, Policy, StaticPeak};
use super::run::{self, Decision, Outcome, Point, Summary, TraceSink};
use super::{Error, Pattern, Scenario, profiling};
use crate::graph::Window;
use crate::graph::window::ArgSpec;
use crate::predict::{Ewma, Last, LoadMix, MovingAverage, Predictor, Trend};

/// Unix time of scenario time 0 before alignment (2023-11-14 22:00:00 UTC, a whole hour).
const ORIGIN_S: i64 = 1_699_999_200;

/// A negative load headroom (planning for less than the forecast, to trace a trade-off curve
/// below the default operating point) is refused from this much on.
pub const MAX_SHORTFALL: f64 = 0.5;

/// Everything `derm simulate` can set.
#[derive(Debug, Clone)]
pub struct Config {
    pub scenario: String,
    pub policies: Vec<Name>,
    pub duration_s: f64,
    /// Default: the scenario's rule SLA.
    pub sla_ms: Option<f64>,
    pub percentile: f64,
    pub interval_s: u32,
    pub seed: u64,
    /// Rounded up to a whole number of intervals.
    pub warmup_s: u32,
    pub startup_s: f64,
    /// Default: the scenario's.
    pub sampling: Option<f64>,
    /// Default: the scenario's.
    pub pattern: Option<Pattern>,
    /// Mix predictor of `derm` and `uniform`: `trend` (or `trend:ALPHA,BETA,PHI`), `ewma`,
    /// `ma`, `last` or `lstm` (feature `lstm`).
    pub predictor: String,
    /// The `lstm` predictor's model file (`derm train -o`).
    pub model: Option<PathBuf>,
    pub profile_levels: u32,
    pub profile_level_s: u32,
    pub refit_every: u32,
    /// Share of the allowed tail the profile-based policies remove from their target.
    pub tail_margin: f64,
    /// Extra load the profile-based policies plan for, as a fraction of the forecast
    /// (negative: less, down to [`MAX_SHORTFALL`]).
    pub load_headroom: f64,
    /// CPU utilisation target of `hpa-cpu`.
    pub hpa_target: f64,
    /// `derm` and `uniform` never plan below the long-run mix's plan.
    pub long_run_floor: bool,
    /// Graphs below this predicted share leave the constraint of the `derm` family.
    pub rare_threshold: f64,
    /// Where `derm` and `uniform` learn each interval's mix from.
    pub mix_source: derm::MixSource,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scenario: "trainticket".into(),
            policies: Name::ALL.to_vec(),
            duration_s: 3600.0,
            sla_ms: None,
            percentile: 0.95,
            interval_s: 30,
            seed: 1,
            warmup_s: 300,
            startup_s: 10.0,
            sampling: None,
            pattern: None,
            predictor: "trend".into(),
            model: None,
            profile_levels: 10,
            profile_level_s: 60,
            refit_every: 10,
            tail_margin: derm::TAIL_MARGIN,
            load_headroom: derm::LOAD_HEADROOM,
            hpa_target: hpa::Config::default().target,
            long_run_floor: true,
            rare_threshold: derm::DERM_RARE_THRESHOLD,
            mix_source: derm::MixSource::default(),
        }
    }
}

fn invalid(field: &str, value: impl ToString, expected: &'static str) -> Error {
    Error::Invalid { field: field.to_owned(), value: value.to_string(), expected }
}

impl Config {
    /// Check every setting; errors name the command-line flag.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err(invalid("--duration-s", self.duration_s, "a duration > 0"));
        }
        if let Some(s) = self.sla_ms
            && !(s.is_finite() && s > 0.0)
        {
            return Err(invalid("--sla-ms", s, "an SLA > 0 ms"));
        }
        if !(self.percentile > 0.0 && self.percentile < 1.0) {
            return Err(invalid("--percentile", self.percentile, "a number in (0, 1)"));
        }
        if self.interval_s == 0 {
            return Err(invalid("--interval-s", 0, "an interval > 0"));
        }
        if !(self.startup_s.is_finite() && self.startup_s >= 0.0) {
            return Err(invalid("--startup-s", self.startup_s, "a delay >= 0"));
        }
        if let Some(p) = self.sampling
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(invalid("--sampling", p, "a probability in (0, 1]"));
        }
        if self.policies.is_empty() {
            return Err(invalid("--policies", "(none)", "at least one policy"));
        }
        if self.profile_levels < 3 || self.profile_level_s == 0 {
            return Err(invalid("--profile-levels", self.profile_levels, "at least 3 levels of at least 1 s"));
        }
        if !(self.tail_margin >= 0.0 && self.tail_margin < 1.0) {
            return Err(invalid("--tail-margin", self.tail_margin, "a share in [0, 1)"));
        }
        if !(self.rare_threshold >= 0.0 && self.rare_threshold < 1.0) {
            return Err(invalid("--rare-threshold", self.rare_threshold, "a share in [0, 1)"));
        }
        if !(self.load_headroom.is_finite() && self.load_headroom > -MAX_SHORTFALL) {
            return Err(invalid("--load-headroom", self.load_headroom, "a fraction > -0.5"));
        }
        if !(self.hpa_target > 0.0 && self.hpa_target <= 1.0) {
            return Err(invalid("--hpa-target", self.hpa_target, "a utilisation in (0, 1]"));
        }
        if self.refit_every == 0 {
            return Err(invalid("--refit-every", 0, "at least 1 interval"));
        }
        predictor(&self.predictor, self.model.as_deref(), &[], self.mix_source.horizon())?;
        if let Some(p) = &self.pattern {
            p.validate()?;
        }
        Ok(())
    }
}

/// The mix predictor by name; `lstm` loads `model` and, when `windows` (the profiling
/// phase's) are given, refuses a model trained on another application's graphs. The trend and
/// `loadmix` forecast `horizon` windows ahead of the newest ([`derm::MixSource::horizon`]);
/// `ewma`, `ma` and `last` have no horizon, and an LSTM keeps the one it was trained for.
pub fn predictor(
    name: &str,
    model: Option<&Path>,
    windows: &[Window],
    horizon: usize,
) -> Result<Box<dyn Predictor>, Error> {
    let bad = |e: crate::predict::Error| invalid("--predictor", e, "valid parameters");
    if name != "lstm"
        && let Some(m) = model
    {
        return Err(invalid("--model", m.display(), "no --model unless --predictor lstm"));
    }
    Ok(match name {
        "ewma" => Box::new(Ewma::new(0.5).map_err(bad)?),
        "ma" => Box::new(MovingAverage::new(5).map_err(bad)?),
        "last" => Box::new(Last),
        "trend" => Box::new(Trend::ahead(horizon).map_err(bad)?),
        "loadmix" => Box::new(LoadMix::ahead(horizon).map_err(bad)?),
        t if t.starts_with("trend:") => Box::new(trend_with(&t["trend:".len()..], horizon).map_err(bad)?),
        "lstm" => lstm(model, windows, horizon)?,
        other => return Err(invalid("--predictor", other, "one of trend, loadmix, ewma, ma, last, lstm")),
    })
}

/// `ALPHA,BETA,PHI` of `--predictor trend:...`.
fn trend_with(spec: &str, horizon: usize) -> Result<Trend, crate::predict::Error> {
    let values: Vec<f64> = spec.split(',').map(|v| v.trim().parse().unwrap_or(f64::NAN)).collect();
    match values[..] {
        [alpha, beta, phi] => Trend::new(alpha, beta, phi, horizon),
        _ => Err(crate::predict::Error::Invalid {
            field: "trend",
            value: spec.to_owned(),
            expected: "ALPHA,BETA,PHI: three numbers in (0, 1]",
        }),
    }
}

#[cfg(not(feature = "lstm"))]
fn lstm(_: Option<&Path>, _: &[Window], _: usize) -> Result<Box<dyn Predictor>, Error> {
    Err(invalid(
        "--predictor",
        "lstm",
        "ewma, ma or last: this derm was built without the `lstm` feature (libtorch); build it with \
         `hack/with-libtorch.sh cargo build --release -p derm-core --features lstm`",
    ))
}

/// Above this share of the profiling phase's requests in graphs the model never saw, warn.
#[cfg(feature = "lstm")]
const UNSEEN_WARN: f64 = 0.1;

/// The attention LSTM on the CPU (a simulation makes one small prediction per interval).
#[cfg(feature = "lstm")]
fn lstm(model: Option<&Path>, windows: &[Window], horizon: usize) -> Result<Box<dyn Predictor>, Error> {
    let Some(path) = model else {
        return Err(invalid("--model", "(none)", "a model file from derm train for --predictor lstm"));
    };
    let bad = |e: crate::predict::Error| invalid("--model", e, "a model file from derm train");
    let model = crate::predict::lstm::Lstm::load(path, false).map_err(bad)?;
    if let (Some(meta), false) = (model.meta(), windows.is_empty()) {
        let unseen = meta.check_catalog(windows).map_err(bad)?;
        if unseen > UNSEEN_WARN {
            tracing::warn!(
                model = %path.display(),
                unseen_share = unseen,
                "many profiling-phase requests are in graphs the model never saw (predicted as \"other\"): retrain"
            );
        }
        if meta.horizon != horizon {
            tracing::warn!(
                model = %path.display(),
                horizon = meta.horizon,
                planned = horizon,
                "the interval planned for is `planned` windows after the newest mix (1 from the call \
                 counters, 2 from the traces: --mix-source); a model trained with `derm train --horizon` \
                 that many predicts it"
            );
        }
    }
    Ok(Box::new(model))
}

/// The profiling phase as reported.
#[derive(Debug, Clone, Serialize)]
pub struct ProfilingReport {
    pub requests: u64,
    pub services_profiled: usize,
    pub services_total: usize,
    pub fallback_profiles: Vec<String>,
    pub errors: Vec<String>,
    pub duration_s: f64,
    pub wall_s: f64,
}

/// One policy in `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    #[serde(flatten)]
    pub summary: Summary,
    /// Mean containers divided by `hpa-cpu`'s (absent without `hpa-cpu`).
    pub containers_vs_hpa: Option<f64>,
    pub wall_s: f64,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interval_s: u32,
    pub sla_ms: f64,
    pub percentile: f64,
    pub sampling: f64,
    pub startup_s: f64,
    pub pattern: String,
    pub predictor: String,
    /// Where `derm` and `uniform` learned the mix (`--mix-source`).
    pub mix_source: &'static str,
    /// The `lstm` predictor's model file.
    pub model: Option<String>,
    pub profiling: Option<ProfilingReport>,
    /// Policies in the order asked for.
    pub order: Vec<String>,
    pub policies: BTreeMap<String, PolicyReport>,
}

/// One decision of a measured run (`decisions.json`): what the policy planned for, when it
/// says, next to what it decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionPoint {
    pub now_s: f64,
    pub arrivals_rps: f64,
    pub replicas: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_rps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_sla_probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_requests_probability: Option<f64>,
    /// Total variation between the mix the plan was solved for and the true mean mix of the
    /// next interval (the scenario's ground truth): how far off the mix forecast was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix_error: Option<f64>,
}

impl DecisionPoint {
    fn of(d: &Decision<'_>, truth: impl FnOnce() -> BTreeMap<String, f64>) -> Self {
        let insight = d.insight.as_ref();
        DecisionPoint {
            mix_error: insight.map(|i| crate::optimize::mix_distance(&i.mix, &truth())),
            now_s: d.now_s,
            arrivals_rps: d.arrivals_rps,
            replicas: d.replicas.iter().map(|n| u64::from(*n)).sum(),
            load_rps: insight.map(|i| i.load_rps),
            predicted_sla_probability: insight.map(|i| i.predicted_sla_probability),
            all_requests_probability: insight.map(|i| i.all_requests_probability),
        }
    }
}

/// The report with every policy's time series (for plots and `series.json`) and decisions
/// (`decisions.json`).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    pub series: BTreeMap<String, Vec<Point>>,
    /// Per policy, its decisions of the measured run (warm-up excluded).
    pub decisions: BTreeMap<String, Vec<DecisionPoint>>,
}

/// Total simulated seconds of an evaluation (for a progress bar).
pub fn work_s(config: &Config) -> u64 {
    let profiling = if config.policies.iter().any(|p| p.needs_profiles()) {
        u64::from(config.profile_levels) * u64::from(config.profile_level_s)
    } else {
        0
    };
    profiling + config.policies.len() as u64 * (config.duration_s.ceil() as u64 + u64::from(warmup(config)))
}

fn warmup(config: &Config) -> u32 {
    config.warmup_s.div_ceil(config.interval_s) * config.interval_s
}

/// What every policy of an evaluation shares: the scenario, its pattern, run settings and
/// (when a profile-based policy is asked for) the profiling phase's result.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub scenario: Scenario,
    pub pattern: Pattern,
    pub run: run::Config,
    pub derm: derm::Config,
    pub profiled: Option<profiling::Profiled>,
}

impl Prepared {
    /// A Derm-family policy on the profiling phase's result, with a model-free predictor
    /// (`trend`, `ewma`, `ma` or `last`; anything else gets `last`).
    pub fn derm_policy(&self, name: Name, predictor_name: &str) -> Derm {
        self.derm_policy_with(name, predictor_name, None).unwrap_or_else(|_| {
            let learned = self.profiled.as_ref().map(|p| p.learned.clone()).unwrap_or_default();
            Derm::new(name, self.derm.clone(), Box::new(Last), learned)
        })
    }

    /// A Derm-family policy with the named predictor (`lstm` loads `model`, checked against
    /// the profiling phase's graphs). Only `derm` and `uniform` use a predictor; the others
    /// get `last` and load nothing.
    pub fn derm_policy_with(&self, name: Name, predictor_name: &str, model: Option<&Path>) -> Result<Derm, Error> {
        self.derm_policy_at(name, predictor_name, model, self.derm.clone())
    }

    /// [`Self::derm_policy_with`] with other policy settings (`derm tradeoff`'s knob values).
    pub fn derm_policy_at(
        &self,
        name: Name,
        predictor_name: &str,
        model: Option<&Path>,
        config: derm::Config,
    ) -> Result<Derm, Error> {
        let learned = self.profiled.as_ref().map(|p| p.learned.clone()).unwrap_or_default();
        let pred = if matches!(name, Name::Derm | Name::Uniform) {
            predictor(predictor_name, model, &learned.windows, config.mix_source.horizon())?
        } else {
            Box::new(Last)
        };
        Ok(Derm::new(name, config, pred, learned))
    }
}

/// Validates `config`, builds the scenario and runs the profiling phase when a policy needs
/// profiles. `progress` gets the profiling phase's simulated seconds.
pub fn prepare(config: &Config, progress: &(dyn Fn(u64) + Sync)) -> Result<Prepared, Error> {
    config.validate()?;
    let scenario = Scenario::named(&config.scenario)?;
    let pattern = config.pattern.clone().unwrap_or_else(|| scenario.pattern.clone());
    let sla_ms = config.sla_ms.unwrap_or(scenario.sla_ms);
    let sampling = config.sampling.unwrap_or(scenario.sampling);
    let warmup_s = f64::from(warmup(config));
    let align = i64::from(config.interval_s) * i64::from(config.profile_level_s);
    let origin_s = ORIGIN_S - ORIGIN_S.rem_euclid(align);
    let args: Vec<ArgSpec> = scenario.arg_tags.iter().map(|t| ArgSpec { tag: t.clone(), edges: Vec::new() }).collect();

    let profiled = if config.policies.iter().any(|p| p.needs_profiles()) {
        let level = f64::from(config.profile_level_s);
        let end_s = (-warmup_s / level).floor() * level;
        let pc = profiling::Config {
            levels: config.profile_levels,
            level_s: config.profile_level_s,
            peak_utilisation: 0.75,
            end_s,
            seed: config.seed,
            origin_s,
            startup_s: config.startup_s,
            args: args.clone(),
        };
        let p = profiling::run(&scenario, &pattern, &pc);
        progress(u64::from(config.profile_levels) * u64::from(config.profile_level_s));
        Some(p)
    } else {
        None
    };

    let run = run::Config {
        duration_s: config.duration_s,
        warmup_s,
        interval_s: f64::from(config.interval_s),
        sla_ms,
        sampling,
        startup_s: config.startup_s,
        seed: config.seed,
        origin_s,
    };
    let derm = derm::Config {
        sla_ms,
        percentile: config.percentile,
        interval_s: config.interval_s,
        args,
        refit_every: config.refit_every,
        seed: config.seed,
        tail_margin: config.tail_margin,
        load_headroom: config.load_headroom,
        long_run_floor: config.long_run_floor,
        rare_threshold: config.rare_threshold,
        mix_source: config.mix_source,
    };
    Ok(Prepared { scenario, pattern, run, derm, profiled })
}

/// Run the evaluation. `progress` gets simulated seconds; `sink` the sampled traces of the
/// first policy's measured run.
pub fn evaluate(
    config: &Config,
    progress: &(dyn Fn(u64) + Sync),
    sink: Option<TraceSink<'_>>,
) -> Result<Evaluation, Error> {
    let prepared = prepare(config, progress)?;
    let Prepared { scenario, pattern, run: run_config, profiled, .. } = &prepared;
    let warmup_s = run_config.warmup_s;
    let (sla_ms, sampling) = (run_config.sla_ms, run_config.sampling);
    let sink = Mutex::new(sink);
    let mut derms = BTreeMap::new();
    for name in config.policies.iter().filter(|n| !matches!(n, Name::HpaCpu | Name::StaticPeak)) {
        derms.insert(
            *name,
            Mutex::new(Some(prepared.derm_policy_with(*name, &config.predictor, config.model.as_deref())?)),
        );
    }
    let outcomes: Vec<(Outcome, f64, Vec<DecisionPoint>)> = config
        .policies
        .par_iter()
        .enumerate()
        .map(|(i, name)| {
            let t0 = std::time::Instant::now();
            let mut policy: Box<dyn Policy> = match name {
                Name::HpaCpu => Box::new(Hpa::new(
                    scenario.app.services.len(),
                    hpa::Config { target: config.hpa_target, ..hpa::Config::default() },
                )),
                Name::StaticPeak => Box::new(StaticPeak::new(scenario, pattern, -warmup_s, config.duration_s)),
                _ => match derms.get(name).and_then(|m| m.lock().ok()?.take()) {
                    Some(d) => Box::new(d),
                    None => Box::new(prepared.derm_policy(*name, &config.predictor)),
                },
            };
            let mut own_sink = if i == 0 { sink.lock().ok().and_then(|mut s| s.take()) } else { None };
            let mut decisions = Vec::new();
            let mut observe = |d: &Decision<'_>| {
                if d.now_s >= 0.0 {
                    let next = d.now_s + f64::from(config.interval_s);
                    decisions.push(DecisionPoint::of(d, || scenario.app.mean_mix_by_id(pattern, d.now_s, next)));
                }
            };
            let outcome = run::run_observed(
                scenario,
                pattern,
                policy.as_mut(),
                run_config,
                progress,
                own_sink.take(),
                Some(&mut observe),
            );
            (outcome, t0.elapsed().as_secs_f64(), decisions)
        })
        .collect();

    let hpa = outcomes.iter().find(|(o, ..)| o.name == Name::HpaCpu.as_str()).map(|(o, ..)| o.summary.mean_containers);
    let mut policies = BTreeMap::new();
    let mut series = BTreeMap::new();
    let mut decided = BTreeMap::new();
    for (o, wall_s, decisions) in outcomes {
        let containers_vs_hpa = hpa.filter(|h| *h > 0.0).map(|h| o.summary.mean_containers / h);
        policies.insert(o.name.clone(), PolicyReport { summary: o.summary, containers_vs_hpa, wall_s });
        series.insert(o.name.clone(), o.series);
        decided.insert(o.name, decisions);
    }
    let profiling = profiled.as_ref().map(|p| ProfilingReport {
        requests: p.requests,
        services_profiled: p.learned.profiles.services.len(),
        services_total: scenario.app.services.len(),
        fallback_profiles: p.fallbacks.clone(),
        errors: p.errors.clone(),
        duration_s: f64::from(config.profile_levels * config.profile_level_s),
        wall_s: p.wall_s,
    });
    let report = Report {
        scenario: config.scenario.clone(),
        description: scenario.describe(),
        seed: config.seed,
        duration_s: config.duration_s,
        warmup_s,
        interval_s: config.interval_s,
        sla_ms,
        percentile: config.percentile,
        sampling,
        startup_s: config.startup_s,
        pattern: format!("{pattern:?}"),
        predictor: config.predictor.clone(),
        mix_source: config.mix_source.as_str(),
        model: config.model.as_ref().map(|m| m.display().to_string()),
        profiling,
        order: config.policies.iter().map(|p| p.as_str().to_owned()).collect(),
        policies,
    };
    Ok(Evaluation { report, series, decisions: decided })
}

/// `results.md`: one row per policy, containers normalised to `hpa-cpu`.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {} (seed {})\n", report.scenario, report.seed);
    let _ = writeln!(s, "{}  ", report.description);
    let _ = writeln!(
        s,
        "{} s measured after {} s warm-up, decisions every {} s, SLA P{:.0} <= {} ms, sampling {}, start-up {} s, predictor {}, mix from the {}.\n",
        report.duration_s,
        report.warmup_s,
        report.interval_s,
        100.0 * report.percentile,
        report.sla_ms,
        report.sampling,
        report.startup_s,
        match &report.model {
            Some(m) => format!("{} ({m})", report.predictor),
            None => report.predictor.clone(),
        },
        report.mix_source
    );
    let _ = writeln!(
        s,
        "| policy | mean containers | vs hpa-cpu | window violations | request violations | P95 ms | P99 ms | solves / fallbacks |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for name in &report.order {
        let Some(p) = report.policies.get(name) else {
            continue;
        };
        let m = &p.summary;
        let vs = p.containers_vs_hpa.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let solves = if m.stats.solves + m.stats.fallbacks > 0 {
            format!("{} / {}", m.stats.solves, m.stats.fallbacks)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {name} | {:.1} | {vs} | {:.1}% | {:.2}% | {:.1} | {:.1} | {solves} |",
            m.mean_containers,
            100.0 * m.window_violation_rate,
            100.0 * m.request_violation_rate,
            m.p95_ms,
            m.p99_ms
        );
    }
    if let Some(p) = &report.profiling {
        let _ = writeln!(
            s,
            "\nProfiling phase: {} s load sweep, {} requests, {}/{} services profiled, {} on the conservative fallback.",
            p.duration_s,
            p.requests,
            p.services_profiled,
            p.services_total,
            p.fallback_profiles.len()
        );
    }
    s
}
