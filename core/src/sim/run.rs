//! One policy on one scenario: warm-up, measured run, per-window series and a summary.
//!
//! The run starts at `-warmup_s` with every service at 50% of its true capacity for the load
//! at that time (the deployment a CPU autoscaler would have settled on), lets the policy
//! decide every `period_s`, and measures `[0, duration_s)`: container-seconds of every live
//! container (starting, ready and draining ones count: they hold resources), and the E2E
//! latency of every request that starts in the range, per window of `interval_s`. Arrivals
//! stop at `duration_s`; requests in flight then finish (up to 120 s more) so that slow
//! requests are not lost from the tail.

use serde::Serialize;

use super::engine::{self, Engine};
use super::policy::{Insight, Policy, Stats, View};
use super::{Pattern, Scenario};
use crate::trace::Trace;

/// Settings shared by every policy of one evaluation.
#[derive(Debug, Clone)]
pub struct Config {
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interval_s: f64,
    pub sla_ms: f64,
    pub sampling: f64,
    pub startup_s: f64,
    pub seed: u64,
    pub origin_s: i64,
}

/// One measurement window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start_s: f64,
    /// Time-averaged live containers.
    pub containers: f64,
    pub requests: u64,
    /// P95 of the E2E latency of requests started in the window (0 without requests).
    pub p95_ms: f64,
    /// Share of those requests within the SLA (1 without requests): what a plan's predicted
    /// probability of all requests is checked against.
    pub within_sla: f64,
}

/// A policy's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub mean_containers: f64,
    pub container_seconds: f64,
    /// Share of windows (with requests) whose P95 E2E latency exceeds the SLA.
    pub window_violation_rate: f64,
    /// Share of requests whose E2E latency exceeds the SLA.
    pub request_violation_rate: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub windows: u64,
    /// Requests that had not finished 120 s after the run (counted as violations).
    pub unfinished: u64,
    pub stats: Stats,
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub summary: Summary,
    pub series: Vec<Point>,
    /// Per service: replicas decided, averaged over the decisions in the measured range.
    pub mean_replicas: Vec<f64>,
}

/// Receives every batch of sampled traces of a run (e.g. a trace file writer).
pub type TraceSink<'a> = &'a mut (dyn FnMut(&[Trace]) + Send);

/// Quantile by nearest rank of a sorted slice.
pub fn quantile(sorted: &[f32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[k - 1])
}

/// One decision, as a live display sees it.
#[derive(Debug)]
pub struct Decision<'a> {
    /// Scenario time, s.
    pub now_s: f64,
    /// Entry requests per second since the previous decision.
    pub arrivals_rps: f64,
    /// The replicas decided, per service (in `scenario.app.services` order).
    pub replicas: &'a [u32],
    /// What the policy planned for, when it says.
    pub insight: Option<Insight>,
}

/// Receives every decision of a run.
pub type Observer<'a> = &'a mut (dyn FnMut(&Decision<'_>) + Send);

/// Run `policy`. `progress` gets simulated seconds as they pass; `sink` every batch of
/// sampled traces.
pub fn run(
    scenario: &Scenario,
    pattern: &Pattern,
    policy: &mut dyn Policy,
    config: &Config,
    progress: &(dyn Fn(u64) + Sync),
    sink: Option<TraceSink<'_>>,
) -> Outcome {
    run_observed(scenario, pattern, policy, config, progress, sink, None)
}

/// [`run`], calling `observer` after every decision.
pub fn run_observed(
    scenario: &Scenario,
    pattern: &Pattern,
    policy: &mut dyn Policy,
    config: &Config,
    progress: &(dyn Fn(u64) + Sync),
    mut sink: Option<TraceSink<'_>>,
    mut observer: Option<Observer<'_>>,
) -> Outcome {
    let app = &scenario.app;
    let start = -config.warmup_s;
    let end = config.duration_s;
    let rps0 = pattern.rps(start);
    let initial = app.replicas_for(&app.demand(&app.mix(start, rps0), rps0), 0.5);
    let engine_config = engine::Config {
        sampling: config.sampling,
        startup_s: config.startup_s,
        seed: config.seed,
        origin_s: config.origin_s,
        start_s: start,
        stop_s: end,
        record_from_s: 0.0,
        window_s: config.interval_s,
    };
    let mut engine = Engine::new(app, pattern, engine_config, &initial);
    let period = policy.period_s();
    let mut next_control = start + period;
    let mut last_control = start;
    // Window boundaries; the first (0) only starts the container count.
    let mut next_window = 0.0;
    let mut series = Vec::new();
    let mut last_cms: Option<f64> = None;
    let mut cms_at_zero = 0.0;
    let mut reported = start;
    let services = app.services.len();
    let mut mean_replicas = vec![0.0; services];
    let mut decided = 0u32;
    loop {
        let t = next_control.min(next_window).min(end);
        engine.run_until(t);
        if t >= next_window - 1e-9 {
            let cms = engine.container_ms();
            if let Some(prev) = last_cms {
                series.push(Point {
                    start_s: next_window - config.interval_s,
                    containers: (cms - prev) / (config.interval_s * 1000.0),
                    requests: 0,
                    p95_ms: 0.0,
                    within_sla: 1.0,
                });
            } else {
                cms_at_zero = cms;
            }
            last_cms = Some(cms);
            next_window += config.interval_s;
        }
        if t >= next_control - 1e-9 && t < end {
            let traces = engine.take_traces();
            if let Some(s) = sink.as_deref_mut() {
                s(&traces);
            }
            let mut ready = Vec::with_capacity(services);
            let mut starting = Vec::with_capacity(services);
            let mut utilisation = Vec::with_capacity(services);
            for i in 0..services {
                let (r, s) = engine.replicas(i);
                ready.push(r);
                starting.push(s);
                utilisation.push(engine.utilisation(i));
            }
            let elapsed = (t - last_control).max(1e-9);
            let arrivals_rps = engine.take_arrivals() as f64 / elapsed;
            let calls_rps = engine.take_calls().into_iter().map(|n| n as f64 / elapsed).collect();
            last_control = t;
            let view = View {
                now_s: t,
                origin_s: config.origin_s,
                scenario,
                pattern,
                ready,
                starting,
                utilisation,
                traces,
                arrivals_rps,
                calls_rps,
                queued: engine.queued(),
            };
            let decision = policy.decide(view);
            if let Some(o) = observer.as_deref_mut() {
                o(&Decision { now_s: t, arrivals_rps, replicas: &decision, insight: policy.insight() });
            }
            if t >= 0.0 {
                decided += 1;
                for (m, n) in mean_replicas.iter_mut().zip(&decision) {
                    *m += f64::from(*n);
                }
            }
            for (i, n) in decision.into_iter().enumerate().take(services) {
                let (r, s) = engine.replicas(i);
                if n.max(1) != r + s {
                    engine.set_replicas(i, n);
                }
            }
            next_control += period;
        }
        if t - reported >= 1.0 {
            let whole = (t - reported).floor();
            progress(whole as u64);
            reported += whole;
        }
        if t >= end {
            break;
        }
    }
    let cms_end = engine.container_ms();
    let window_start = next_window - config.interval_s;
    if let Some(prev) = last_cms
        && window_start < end - 1e-9
    {
        series.push(Point {
            start_s: window_start,
            containers: (cms_end - prev) / ((end - window_start) * 1000.0),
            requests: 0,
            p95_ms: 0.0,
            within_sla: 1.0,
        });
    }
    let container_ms = cms_end - cms_at_zero;
    engine.drain(end + 120.0);
    if let Some(s) = sink {
        s(&engine.take_traces());
    }
    let recorder = engine.finish();
    progress((end - reported).max(0.0) as u64);
    mean_replicas.iter_mut().for_each(|m| *m /= f64::from(decided.max(1)));
    let mut outcome = summarise(policy, config, series, container_ms, recorder);
    outcome.mean_replicas = mean_replicas;
    outcome
}

fn summarise(
    policy: &dyn Policy,
    config: &Config,
    mut series: Vec<Point>,
    container_ms: f64,
    recorder: engine::Recorder,
) -> Outcome {
    let sla = config.sla_ms as f32;
    let mut all: Vec<f32> = Vec::new();
    let (mut windows, mut violated, mut over) = (0u64, 0u64, 0u64);
    for (k, mut w) in recorder.windows.into_iter().enumerate() {
        w.sort_by(f32::total_cmp);
        let late = w.iter().filter(|x| **x > sla).count() as u64;
        over += late;
        let p95 = quantile(&w, 0.95);
        if let Some(p) = series.get_mut(k) {
            p.requests = w.len() as u64;
            p.p95_ms = p95;
            if !w.is_empty() {
                p.within_sla = 1.0 - late as f64 / w.len() as f64;
            }
        }
        if !w.is_empty() {
            windows += 1;
            violated += u64::from(p95 > config.sla_ms);
        }
        all.extend_from_slice(&w);
    }
    all.sort_by(f32::total_cmp);
    let requests = all.len() as u64 + recorder.unfinished;
    let summary = Summary {
        mean_containers: container_ms / (config.duration_s * 1000.0),
        container_seconds: container_ms / 1000.0,
        window_violation_rate: violated as f64 / windows.max(1) as f64,
        request_violation_rate: (over + recorder.unfinished) as f64 / requests.max(1) as f64,
        p95_ms: quantile(&all, 0.95),
        p99_ms: quantile(&all, 0.99),
        requests,
        windows,
        unfinished: recorder.unfinished,
        stats: policy.stats(),
    };
    Outcome { name: policy.name().to_owned(), summary, series, mean_replicas: Vec::new() }
}
