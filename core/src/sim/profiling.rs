//! The profiling phase: before the measured run, the scenario runs through a load sweep and
//! every trace is kept (sampling 1), as the paper profiles offline with load tests.
//!
//! The sweep has `levels` steps of `level_s` seconds at `k / levels` of the run's peak rate
//! (k = 1..levels), ending just before the warm-up starts, so request types and arguments
//! follow the scenario's own drift at those times. The deployment is fixed and sized from the
//! ground truth so that every service runs at [`Config::peak_utilisation`] of its capacity at
//! the top level: across levels, per-container loads span 1/levels to 100% of that, which is
//! what the rate regression needs. Windows are `level_s` long; profiles come from
//! [`crate::profile::fit_all`] with its defaults.

use std::time::Instant;

use super::engine::{self, Engine};
use super::policy::derm::Learned;
use super::{Pattern, Scenario};
use crate::graph::window::{self, ArgSpec};
use crate::pipeline::Ingest;
use crate::profile;

/// Sweep settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub levels: u32,
    pub level_s: u32,
    /// Utilisation of the busiest level (true capacity).
    pub peak_utilisation: f64,
    /// Scenario time at which the sweep ends, s (a multiple of `level_s`).
    pub end_s: f64,
    pub seed: u64,
    pub origin_s: i64,
    pub startup_s: f64,
    pub args: Vec<ArgSpec>,
}

/// What the phase produced, with a summary for the report.
#[derive(Debug, Clone)]
pub struct Profiled {
    pub learned: Learned,
    pub requests: u64,
    /// Services that could not be profiled, with the reason.
    pub errors: Vec<String>,
    /// Services whose profile is the conservative fallback.
    pub fallbacks: Vec<String>,
    pub wall_s: f64,
}

/// Run the sweep for `pattern`'s peak.
pub fn run(scenario: &Scenario, pattern: &Pattern, config: &Config) -> Profiled {
    let t0 = Instant::now();
    let app = &scenario.app;
    let peak = pattern.max_rps();
    let level = f64::from(config.level_s);
    let start_s = config.end_s - f64::from(config.levels) * level;
    let steps: Vec<(f64, f64)> = (1..=config.levels)
        .map(|k| (start_s + f64::from(k - 1) * level, peak * f64::from(k) / f64::from(config.levels)))
        .collect();
    let sweep = Pattern::Steps { steps };
    // Deployment: the highest demand of any level at the target utilisation.
    let mut demand = vec![0.0f64; app.services.len()];
    let mut t = start_s;
    while t < config.end_s {
        let rps = sweep.rps(t);
        for (d, x) in demand.iter_mut().zip(app.demand(&app.mix(t, rps), rps)) {
            *d = d.max(x);
        }
        t += 5.0;
    }
    let replicas = app.replicas_for(&demand, config.peak_utilisation);
    let engine_config = engine::Config {
        sampling: 1.0,
        startup_s: config.startup_s,
        seed: config.seed ^ 0x9f0f_11e5,
        origin_s: config.origin_s,
        start_s,
        stop_s: config.end_s,
        record_from_s: config.end_s,
        window_s: level,
    };
    let mut engine = Engine::new(app, &sweep, engine_config, &replicas);
    let mut ingest = Ingest::new(window::Config {
        window_s: config.level_s,
        sampling: None,
        args: config.args.clone(),
        max_samples: window::DEFAULT_MAX_SAMPLES,
        seed: config.seed,
    });
    let mut t = start_s;
    while t < config.end_s {
        t = (t + level).min(config.end_s);
        engine.run_until(t);
        for tr in engine.take_traces() {
            ingest.add(tr);
        }
    }
    engine.drain(config.end_s + 60.0);
    for tr in engine.take_traces() {
        ingest.add(tr);
    }
    let out = ingest.finish();
    let (profiles, errors) = profile::fit_all(&out.windows.samples, &profile::Config::default());
    let fallbacks = profiles.services.iter().filter(|(_, p)| p.fallback).map(|(k, _)| k.clone()).collect();
    let catalog = out.windows.graphs.graphs.iter().map(|e| (e.id.clone(), e.root.clone())).collect();
    Profiled {
        learned: Learned { profiles, samples: out.windows.samples, windows: out.windows.windows, catalog },
        requests: out.requests,
        errors: errors.iter().map(ToString::to_string).collect(),
        fallbacks,
        wall_s: t0.elapsed().as_secs_f64(),
    }
}
