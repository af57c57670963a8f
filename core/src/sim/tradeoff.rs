//! Trade-off curves behind `derm tradeoff`: mean containers against the window violation
//! rate as each policy's own safety knob turns, averaged over seeds.
//!
//! One operating point per policy (what `derm simulate` reports) compares policies that sit at
//! different violation rates: a policy that under-provisions looks cheap. Turning each
//! policy's knob (the profile-based policies' load headroom, `hpa-cpu`'s CPU target) traces
//! its curve, and the fewest containers at which a policy keeps the window violation rate
//! within a goal compares them at the same SLA compliance. The profile-based policies have a
//! second knob, the tail margin (how far above `p` the optimizer's target sits): every headroom
//! runs at every margin, a policy's best point is the cheapest over both, and its
//! [`frontier`] is what no other of its points beats.
//!
//! Every point of a seed shares that seed's profiling phase and arrivals (as in
//! [`super::eval`]); points run in parallel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use super::Error;
use super::eval::{self, Config as EvalConfig};
use super::policy::derm;
use super::policy::hpa::{self, Hpa};
use super::policy::{Name, Policy};
use super::run;

/// What `derm tradeoff` sets on top of an evaluation's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Scenario, duration, predictor and the rest; its `seed`, `policies`, `load_headroom`
    /// and `hpa_target` are replaced by the fields below.
    pub base: EvalConfig,
    pub seeds: Vec<u64>,
    pub policies: Vec<Name>,
    /// Load headrooms of the profile-based policies.
    pub load_headrooms: Vec<f64>,
    /// Tail margins of the profile-based policies (each with every headroom).
    pub tail_margins: Vec<f64>,
    /// CPU targets of `hpa-cpu`.
    pub hpa_targets: Vec<f64>,
    /// Window violation rate a point must keep to count as meeting the SLA.
    pub goal: f64,
}

fn invalid(field: &str, value: impl ToString, expected: &'static str) -> Error {
    Error::Invalid { field: field.to_owned(), value: value.to_string(), expected }
}

impl Config {
    /// Check every setting; errors name the command-line flag.
    pub fn validate(&self) -> Result<(), Error> {
        if self.seeds.is_empty() {
            return Err(invalid("--seeds", "(none)", "at least one seed"));
        }
        if self.policies.is_empty() {
            return Err(invalid("--policies", "(none)", "at least one policy"));
        }
        if let Some(p) = self.policies.iter().find(|p| **p == Name::StaticPeak) {
            return Err(invalid(
                "--policies",
                p,
                "policies with a knob: derm, derm-oracle, derm-static, uniform, hpa-cpu",
            ));
        }
        if self.policies.iter().any(|p| p.needs_profiles()) && self.load_headrooms.is_empty() {
            return Err(invalid("--load-headrooms", "(none)", "at least one headroom"));
        }
        if let Some(h) = self.load_headrooms.iter().find(|h| !(h.is_finite() && **h > -eval::MAX_SHORTFALL)) {
            return Err(invalid("--load-headrooms", h, "fractions > -0.5"));
        }
        if self.policies.contains(&Name::HpaCpu) && self.hpa_targets.is_empty() {
            return Err(invalid("--hpa-targets", "(none)", "at least one target"));
        }
        if self.policies.iter().any(|p| p.needs_profiles()) && self.tail_margins.is_empty() {
            return Err(invalid("--tail-margins", "(none)", "at least one margin"));
        }
        if let Some(m) = self.tail_margins.iter().find(|m| !(**m >= 0.0 && **m < 1.0)) {
            return Err(invalid("--tail-margins", m, "shares in [0, 1)"));
        }
        if let Some(t) = self.hpa_targets.iter().find(|t| !(**t > 0.0 && **t <= 1.0)) {
            return Err(invalid("--hpa-targets", t, "utilisations in (0, 1]"));
        }
        if !(self.goal >= 0.0 && self.goal <= 1.0) {
            return Err(invalid("--goal", self.goal, "a rate in [0, 1]"));
        }
        self.base.validate()
    }

    /// The knob a policy turns and its values.
    fn knob(&self, name: Name) -> (&'static str, &[f64]) {
        if name == Name::HpaCpu { ("hpa_target", &self.hpa_targets) } else { ("load_headroom", &self.load_headrooms) }
    }

    /// A policy's settings: (knob value, tail margin), the margin `None` for `hpa-cpu`.
    fn settings(&self, name: Name) -> Vec<(f64, Option<f64>)> {
        let values = self.knob(name).1;
        if name == Name::HpaCpu {
            return values.iter().map(|v| (*v, None)).collect();
        }
        let margins = &self.tail_margins;
        margins.iter().flat_map(|m| values.iter().map(move |v| (*v, Some(*m)))).collect()
    }
}

/// One seed's run of one policy at one knob value.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub seed: u64,
    pub mean_containers: f64,
    pub window_violation_rate: f64,
    pub request_violation_rate: f64,
}

/// One policy at one knob value, averaged over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub policy: String,
    /// `load_headroom` or `hpa_target`.
    pub knob: &'static str,
    pub value: f64,
    /// The profile-based policies' tail margin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_margin: Option<f64>,
    pub mean_containers: f64,
    pub window_violation_rate: f64,
    pub request_violation_rate: f64,
    pub runs: Vec<Run>,
}

/// A policy's cheapest point within the goal.
#[derive(Debug, Clone, Serialize)]
pub struct Best {
    pub value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_margin: Option<f64>,
    pub mean_containers: f64,
    pub window_violation_rate: f64,
    /// Mean containers over those of `hpa-cpu`'s best point (absent without one).
    pub vs_hpa: Option<f64>,
}

/// `tradeoff.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seeds: Vec<u64>,
    pub duration_s: f64,
    pub sla_ms: f64,
    pub percentile: f64,
    pub predictor: String,
    /// Where `derm` and `uniform` learned the mix (`--mix-source`).
    pub mix_source: &'static str,
    pub goal: f64,
    /// Policies in the order asked for.
    pub order: Vec<String>,
    /// By policy, then knob value.
    pub points: Vec<Point>,
    /// By policy: the fewest mean containers among its points whose mean window violation
    /// rate is within the goal (absent when none is).
    pub best: BTreeMap<String, Option<Best>>,
}

/// Total simulated seconds of a trade-off run (for a progress bar).
pub fn work_s(config: &Config) -> u64 {
    let profiling = if config.policies.iter().any(|p| p.needs_profiles()) {
        u64::from(config.base.profile_levels) * u64::from(config.base.profile_level_s)
    } else {
        0
    };
    let runs: usize = config.policies.iter().map(|p| config.settings(*p).len()).sum();
    let run_s = (config.base.duration_s + f64::from(config.base.warmup_s)).ceil() as u64;
    config.seeds.len() as u64 * (profiling + runs as u64 * run_s)
}

/// Run every policy at every knob value on every seed. `progress` gets simulated seconds.
pub fn run(config: &Config, progress: &(dyn Fn(u64) + Sync)) -> Result<Report, Error> {
    config.validate()?;
    let mut runs: BTreeMap<(usize, usize), Vec<Run>> = BTreeMap::new();
    let mut sla_ms = config.base.sla_ms.unwrap_or(f64::NAN);
    for &seed in &config.seeds {
        let eval_config = EvalConfig { seed, policies: config.policies.clone(), ..config.base.clone() };
        let prepared = eval::prepare(&eval_config, progress)?;
        sla_ms = prepared.run.sla_ms;
        let jobs: Vec<(usize, usize, f64, Option<f64>)> = config
            .policies
            .iter()
            .enumerate()
            .flat_map(|(p, name)| config.settings(*name).into_iter().enumerate().map(move |(k, (v, m))| (p, k, v, m)))
            .collect();
        let outcomes = jobs
            .par_iter()
            .map(|&(p, k, value, margin)| {
                let name = config.policies[p];
                let mut policy: Box<dyn Policy> = if name == Name::HpaCpu {
                    let hpa_config = hpa::Config { target: value, ..hpa::Config::default() };
                    Box::new(Hpa::new(prepared.scenario.app.services.len(), hpa_config))
                } else {
                    let tail_margin = margin.unwrap_or(prepared.derm.tail_margin);
                    let derm = derm::Config { load_headroom: value, tail_margin, ..prepared.derm.clone() };
                    let model = config.base.model.as_deref();
                    Box::new(prepared.derm_policy_at(name, &config.base.predictor, model, derm)?)
                };
                let outcome =
                    run::run(&prepared.scenario, &prepared.pattern, policy.as_mut(), &prepared.run, progress, None);
                let s = outcome.summary;
                Ok((
                    (p, k),
                    Run {
                        seed,
                        mean_containers: s.mean_containers,
                        window_violation_rate: s.window_violation_rate,
                        request_violation_rate: s.request_violation_rate,
                    },
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        for (key, r) in outcomes {
            runs.entry(key).or_default().push(r);
        }
    }
    let points: Vec<Point> = runs
        .into_iter()
        .map(|((p, k), runs)| {
            let name = config.policies[p];
            let (value, tail_margin) = config.settings(name)[k];
            let mean = |f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
            Point {
                policy: name.as_str().to_owned(),
                knob: config.knob(name).0,
                value,
                tail_margin,
                mean_containers: mean(|r| r.mean_containers),
                window_violation_rate: mean(|r| r.window_violation_rate),
                request_violation_rate: mean(|r| r.request_violation_rate),
                runs,
            }
        })
        .collect();
    let order: Vec<String> = config.policies.iter().map(|p| p.as_str().to_owned()).collect();
    let best = best_points(&order, &points, config.goal);
    Ok(Report {
        scenario: config.base.scenario.clone(),
        seeds: config.seeds.clone(),
        duration_s: config.base.duration_s,
        sla_ms,
        percentile: config.base.percentile,
        predictor: config.base.predictor.clone(),
        mix_source: config.base.mix_source.as_str(),
        goal: config.goal,
        order,
        points,
        best,
    })
}

/// Each policy's cheapest point within `goal`, with its containers relative to `hpa-cpu`'s.
pub fn best_points(order: &[String], points: &[Point], goal: f64) -> BTreeMap<String, Option<Best>> {
    let cheapest = |policy: &str| {
        points
            .iter()
            .filter(|p| p.policy == policy && p.window_violation_rate <= goal)
            .min_by(|a, b| a.mean_containers.total_cmp(&b.mean_containers))
    };
    let hpa = cheapest(Name::HpaCpu.as_str()).map(|p| p.mean_containers).filter(|c| *c > 0.0);
    order
        .iter()
        .map(|name| {
            let best = cheapest(name).map(|p| Best {
                value: p.value,
                tail_margin: p.tail_margin,
                mean_containers: p.mean_containers,
                window_violation_rate: p.window_violation_rate,
                vs_hpa: hpa.map(|h| p.mean_containers / h),
            });
            (name.clone(), best)
        })
        .collect()
}

/// The points no other point beats on both axes (fewer containers at no more violations),
/// by violation rate.
pub fn frontier<'a>(points: &[&'a Point]) -> Vec<&'a Point> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| {
        a.window_violation_rate
            .total_cmp(&b.window_violation_rate)
            .then(a.mean_containers.total_cmp(&b.mean_containers))
    });
    let mut line: Vec<&Point> = Vec::new();
    for p in sorted {
        if line.last().is_none_or(|l| p.mean_containers < l.mean_containers) {
            line.push(p);
        }
    }
    line
}

/// `tradeoff.md`: every point, each policy's cheapest point within the goal, then each
/// policy's frontier.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let seeds: Vec<String> = report.seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(s, "# {}: containers against window violations (seeds {})\n", report.scenario, seeds.join(", "));
    let _ = writeln!(
        s,
        "{} s per run, SLA P{:.0} <= {:.0} ms, predictor {}, mix from the {}; means over the seeds.\n",
        report.duration_s,
        100.0 * report.percentile,
        report.sla_ms,
        report.predictor,
        report.mix_source
    );
    let _ = writeln!(
        s,
        "| policy | knob | value | tail margin | mean containers | window violations | request violations |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for p in &report.points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1}% | {:.2}% |",
            p.policy,
            p.knob,
            p.value,
            margin(p.tail_margin),
            p.mean_containers,
            100.0 * p.window_violation_rate,
            100.0 * p.request_violation_rate
        );
    }
    let _ = writeln!(s, "\nFewest containers with at most {:.1}% of windows violating:\n", 100.0 * report.goal);
    let _ = writeln!(s, "| policy | value | tail margin | mean containers | vs hpa-cpu | window violations |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for name in &report.order {
        match report.best.get(name).and_then(Option::as_ref) {
            Some(b) => {
                let vs = b.vs_hpa.map_or("-".to_owned(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.1} | {vs} | {:.1}% |",
                    b.value,
                    margin(b.tail_margin),
                    b.mean_containers,
                    100.0 * b.window_violation_rate
                );
            }
            None => {
                let _ = writeln!(s, "| {name} | none within the goal | - | - | - | - |");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nFrontiers (no other point of the policy has fewer containers at no more violations), \
         value/tail margin: containers at window violations:\n"
    );
    for name in &report.order {
        let points: Vec<&Point> = report.points.iter().filter(|p| &p.policy == name).collect();
        let line: Vec<String> = frontier(&points)
            .iter()
            .map(|p| {
                let knob = p.tail_margin.map_or(p.value.to_string(), |m| format!("{}/{m}", p.value));
                format!("{knob}: {:.1} at {:.1}%", p.mean_containers, 100.0 * p.window_violation_rate)
            })
            .collect();
        let _ = writeln!(s, "- {name}: {}", line.join("; "));
    }
    s
}

fn margin(m: Option<f64>) -> String {
    m.map_or("-".to_owned(), |m| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(policy: &str, value: f64, containers: f64, violations: f64) -> Point {
        Point {
            policy: policy.into(),
            knob: "load_headroom",
            value,
            tail_margin: Some(0.4),
            mean_containers: containers,
            window_violation_rate: violations,
            request_violation_rate: 0.0,
            runs: Vec::new(),
        }
    }

    #[test]
    fn best_is_the_cheapest_point_within_the_goal_relative_to_hpa() {
        let points = vec![
            point("derm", 0.1, 140.0, 0.12),
            point("derm", 0.3, 163.0, 0.05),
            point("derm", 0.5, 186.0, 0.04),
            point("hpa-cpu", 0.6, 151.0, 0.24),
            point("hpa-cpu", 0.5, 178.0, 0.042),
            point("derm-static", 0.1, 127.0, 0.5),
        ];
        let order: Vec<String> = ["derm", "hpa-cpu", "derm-static"].map(String::from).to_vec();
        let best = best_points(&order, &points, 0.05);
        let derm = best["derm"].as_ref().expect("derm has a point within 5%");
        assert_eq!(derm.value, 0.3);
        assert!((derm.vs_hpa.expect("hpa has one") - 163.0 / 178.0).abs() < 1e-12);
        assert_eq!(best["hpa-cpu"].as_ref().map(|b| b.value), Some(0.5));
        assert!(best["derm-static"].is_none());
        let md = markdown_of(&order, points, best);
        assert!(md.contains("| derm-static | none within the goal |"), "{md}");
        assert!(md.contains("- derm: 0.5/0.4: 186.0 at 4.0%; 0.3/0.4: 163.0 at 5.0%; 0.1/0.4: 140.0 at 12.0%"), "{md}");
    }

    #[test]
    fn frontier_keeps_the_points_nothing_beats() {
        let points = [
            point("derm", 0.0, 140.0, 0.10),
            point("derm", 0.1, 150.0, 0.02),
            point("derm", 0.2, 155.0, 0.03),
            point("derm", 0.3, 160.0, 0.0),
        ];
        let refs: Vec<&Point> = points.iter().collect();
        let values: Vec<f64> = frontier(&refs).iter().map(|p| p.value).collect();
        // 0.2 has more containers than 0.1 at more violations.
        assert_eq!(values, [0.3, 0.1, 0.0]);
    }

    fn markdown_of(order: &[String], points: Vec<Point>, best: BTreeMap<String, Option<Best>>) -> String {
        markdown(&Report {
            scenario: "s".into(),
            seeds: vec![1],
            duration_s: 60.0,
            sla_ms: 100.0,
            percentile: 0.95,
            predictor: "trend".into(),
            mix_source: "counters",
            goal: 0.05,
            order: order.to_vec(),
            points,
            best,
        })
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let good = Config {
            base: EvalConfig::default(),
            seeds: vec![1],
            policies: vec![Name::Derm, Name::HpaCpu],
            load_headrooms: vec![0.1],
            tail_margins: vec![0.4],
            hpa_targets: vec![0.5],
            goal: 0.05,
        };
        assert!(good.validate().is_ok());
        let field = |c: Config| match c.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(field(Config { seeds: vec![], ..good.clone() }), "--seeds");
        assert_eq!(field(Config { policies: vec![Name::StaticPeak], ..good.clone() }), "--policies");
        assert_eq!(field(Config { load_headrooms: vec![-0.5], ..good.clone() }), "--load-headrooms");
        assert!(Config { load_headrooms: vec![-0.2], ..good.clone() }.validate().is_ok());
        assert_eq!(field(Config { load_headrooms: vec![], ..good.clone() }), "--load-headrooms");
        assert_eq!(field(Config { hpa_targets: vec![1.5], ..good.clone() }), "--hpa-targets");
        assert_eq!(field(Config { tail_margins: vec![], ..good.clone() }), "--tail-margins");
        assert_eq!(field(Config { tail_margins: vec![1.0], ..good.clone() }), "--tail-margins");
        let hpa_only = Config { policies: vec![Name::HpaCpu], tail_margins: vec![], ..good.clone() };
        assert!(hpa_only.validate().is_ok(), "hpa-cpu needs no margin");
        assert_eq!(field(Config { goal: 2.0, ..good.clone() }), "--goal");
        let base = EvalConfig { duration_s: 0.0, ..EvalConfig::default() };
        assert_eq!(field(Config { base, ..good }), "--duration-s");
    }
}
