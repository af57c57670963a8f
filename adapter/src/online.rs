//! The online loop of one DermApp, without Kubernetes: traces in, a status update out.
//!
//! [`OnlineApp::add`] takes decoded traces as they arrive; [`OnlineApp::tick`], once per
//! interval, turns the traces of the interval into one window ([`derm_core::pipeline::Ingest`]),
//! keeps the exclusive-latency samples, refits the profiles on a schedule (a refit that jumps
//! far from the profile in use waits for confirmation: [`refit`]), predicts the next
//! mix (Holt's trend forecast over the recent windows, or a trained model hedged against it:
//! [`hedge`]), solves for the fewest replicas ([`derm_core::optimize`]) and clamps the plan to
//! each service's min/max. With `spec.callCounts`, the recent windows are the counted ones
//! ([`counts`]: every request counted, the interval that just ended) and the traces teach
//! the graphs, the profiles and the long-run floor.
//!
//! Missing data never lowers a count: an interval without traces, a solve that fails, or
//! services without profiles give [`Tick::Hold`] (the caller leaves the status alone, so the
//! published values age and the HPA keeps its replicas once they expire). While configured call
//! counts are not used (Prometheus down), the traces' plans go on but no service goes below the
//! newest counted plan (kept in the stored state), until the counts are back.
//!
//! The load planned for is the simulator's: the last window's rate (the counted entry calls
//! when counted windows are used) plus its rising trend over consecutive windows
//! ([`derm_core::predict::load::forecast`]), with the same headroom and tail margin.
//!
//! As the simulator's policies, no service is planned above 1.1x the highest per-container
//! load its profile saw, nor below the last window's observed call rate
//! ([`derm_core::optimize::trust`]); the spec's min/max win over these floors. Not yet here:
//! the backlog term (this loop has no queue-length signal; traces carry none).

pub mod counts;
mod hedge;
mod long_run;
mod refit;

use std::collections::BTreeMap;
use std::sync::Arc;

use derm_core::graph::Node;
use derm_core::graph::catalog::Entry;
use derm_core::graph::window::{self, ArgSpec, Samples, Window};
use derm_core::optimize::trust::{self, TRUST_REGION};
use derm_core::optimize::{self, Bounds, Input, Problem, Start};
use derm_core::pipeline::Ingest;
use derm_core::predict::Predictor;
use derm_core::predict::load::{TREND_POINTS, forecast};
use derm_core::profile::{self, Profiles};
use derm_core::trace::Trace;

use crate::crd::{CallAffinity, DermAppSpec, GraphShare};

use counts::{Counts, Recent};
pub use hedge::{Choice, Hedge, LAG};
pub use long_run::LongRun;
pub use refit::{CONFIRM, Refits};

/// Refit profiles every this many intervals.
pub const REFIT_EVERY: u32 = 4;
/// Windows the predictor looks at.
const RECENT: usize = 20;
/// Windows and per-service samples kept (bounded memory for a long-running leader).
const KEEP: usize = 240;

/// What one interval produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// New values for the status.
    Plan(Update),
    /// Keep the published values; why.
    Hold(String),
}

/// The status fields one solve sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub observed_load_rps: f64,
    pub predicted_graph_mix: Vec<GraphShare>,
    pub predicted_sla_probability: f64,
    pub desired_replicas: BTreeMap<String, u32>,
    pub call_affinity: Vec<CallAffinity>,
    /// Which predictor gave the mix, its recent error, and why a model was not used.
    pub predictor: PredictorReport,
}

/// The predictor behind an [`Update`] (for the PredictorReady condition).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PredictorReport {
    pub name: String,
    pub recent_tv: Option<f64>,
    pub note: Option<String>,
    /// Where the mix came from when `spec.callCounts` is set: the counters, or why not.
    pub counts: Option<String>,
}

/// What survives a restart or a failover (stored by the controller in a ConfigMap): profiles,
/// the graph catalog, recent windows and the long-run mix. Raw latency samples are not kept
/// (too large for a ConfigMap); refits start again from new samples, and until they succeed
/// the restored profiles are used.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    pub profiles: Profiles,
    pub catalog: BTreeMap<String, Node>,
    pub windows: Vec<Window>,
    /// Absent from states stored before it existed: rebuilt from their windows.
    #[serde(default)]
    pub long_run: LongRun,
    /// The replicas of the newest plan made from the call counters ([`OnlineApp::tick`]).
    #[serde(default)]
    pub counted_plan: BTreeMap<String, u32>,
}

/// A graph leaves the catalog and the long-run mix once no kept window names it and its
/// long-run share is below this: the catalog stays bounded however many shapes the traces
/// show over months (partial traces, releases), and so does the stored state.
pub const CATALOG_MIN_SHARE: f64 = 1e-4;

/// Version of [`State`]; a stored state of another version is ignored (logged).
pub const STATE_VERSION: u32 = 1;

/// Learned state and pending traces of one DermApp.
#[derive(Debug)]
pub struct OnlineApp {
    spec: DermAppSpec,
    sampling: f64,
    pending: Vec<Trace>,
    windows: Vec<Window>,
    samples: BTreeMap<String, Vec<Samples>>,
    catalog: BTreeMap<String, Node>,
    profiles: Profiles,
    since_refit: u32,
    refits: Refits,
    ticks: u64,
    hedge: Hedge,
    long_run: LongRun,
    /// Why the last solve found no plan (`None`: the last solve succeeded, or none ran yet).
    infeasible: Option<String>,
    /// Counted call rates (`spec.callCounts`), and the catalog's version their fits are for
    /// (bumped whenever a graph joins or leaves).
    counts: Counts,
    catalog_version: u64,
    /// The replicas of the newest plan made from the call counters: while they are configured
    /// but not used (Prometheus down, counts the traced graphs cannot explain), no service is
    /// planned below these, so a fault of the counters' source never lowers a count.
    counted_plan: BTreeMap<String, u32>,
}

/// What the loop knows of its own readiness, for the ProfilesReady and Feasible conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Configured services without a profile yet.
    pub unprofiled: Vec<String>,
    /// Services whose profile is the documented conservative fallback line (too few load
    /// levels, or latency not rising with load): usable, but not a fit.
    pub fallback: Vec<String>,
    /// Services whose newest refits jumped far from the profile in use and are held back
    /// until [`CONFIRM`] in a row do: (service, jumps so far).
    pub held: Vec<(String, u32)>,
    /// Services with a profile (fitted or fallback).
    pub profiled: usize,
    /// Why the last solve found no plan; `None` when it found one (or none ran yet).
    pub infeasible: Option<String>,
    /// The highest per-container load (requests/s) the plan may put on each profiled
    /// service: the trust region (`derm_adapter_trusted_load_rps`).
    pub trusted_rps: Vec<(String, f64)>,
}

impl OnlineApp {
    /// A fresh loop for `spec`; `sampling` is the share of requests traced (0, 1].
    pub fn new(spec: DermAppSpec, sampling: f64) -> Self {
        OnlineApp {
            spec,
            sampling: sampling.clamp(1e-6, 1.0),
            pending: Vec::new(),
            windows: Vec::new(),
            samples: BTreeMap::new(),
            catalog: BTreeMap::new(),
            profiles: Profiles::default(),
            since_refit: 0,
            refits: Refits::default(),
            ticks: 0,
            hedge: Hedge::new(None),
            long_run: LongRun::default(),
            infeasible: None,
            counts: Counts::default(),
            catalog_version: 0,
            counted_plan: BTreeMap::new(),
        }
    }

    /// Readiness as of the last tick.
    pub fn readiness(&self) -> Readiness {
        let (mut unprofiled, mut fallback) = (Vec::new(), Vec::new());
        for s in &self.spec.services {
            match self.profiles.services.get(&s.name) {
                None => unprofiled.push(s.name.clone()),
                Some(p) if p.fallback => fallback.push(s.name.clone()),
                Some(_) => {}
            }
        }
        Readiness {
            profiled: self.spec.services.len() - unprofiled.len(),
            unprofiled,
            fallback,
            held: self.refits.held().map(|(s, n)| (s.to_owned(), n)).collect(),
            infeasible: self.infeasible.clone(),
            trusted_rps: self
                .spec
                .services
                .iter()
                .filter_map(|s| Some((s.name.clone(), self.trusted_load(&s.name)?)))
                .collect(),
        }
    }

    /// The trust region of `service`: [`TRUST_REGION`] times the load its profile is trusted
    /// at (see [`refit`]); `None` without a profile.
    fn trusted_load(&self, service: &str) -> Option<f64> {
        self.profiles.services.get(service).map(|p| p.w_max_rps * TRUST_REGION)
    }

    /// Predicts with `model` (e.g. the attention LSTM from `derm train`), hedged against the trend forecast.
    pub fn set_model(&mut self, model: Arc<dyn Predictor>) {
        self.hedge = Hedge::new(Some(model));
    }

    /// Replaces the spec (a DermApp edit); learned state stays.
    pub fn set_spec(&mut self, spec: DermAppSpec) {
        // The counted mixes are fitted per entry request: a new entry service refits them.
        if spec.entry_service != self.spec.entry_service {
            self.catalog_version += 1;
        }
        if spec.call_counts.is_none() {
            self.counted_plan.clear();
        }
        self.spec = spec;
    }

    /// The learned state to store.
    pub fn state(&self) -> State {
        State {
            version: STATE_VERSION,
            profiles: self.profiles.clone(),
            catalog: self.catalog.clone(),
            windows: self.windows[self.windows.len().saturating_sub(RECENT)..].to_vec(),
            long_run: self.long_run.clone(),
            counted_plan: self.counted_plan.clone(),
        }
    }

    /// Starts from a stored state (profiles, catalog, recent windows).
    pub fn restore(&mut self, state: State) {
        self.profiles = state.profiles;
        self.catalog.extend(state.catalog);
        self.catalog_version += 1;
        let mut long_run = if state.long_run.requests > 0.0 { state.long_run } else { LongRun::over(&state.windows) };
        for w in &self.windows {
            long_run.add(w);
        }
        self.long_run = long_run;
        let mut windows = state.windows;
        windows.append(&mut self.windows);
        self.windows = windows;
        if self.counted_plan.is_empty() && self.spec.call_counts.is_some() {
            self.counted_plan = state.counted_plan;
        }
    }

    /// Seconds between decisions (the spec's `intervalSeconds`).
    pub fn interval_s(&self) -> u32 {
        self.spec.interval_seconds.max(1)
    }

    /// Traces that arrived since the last tick.
    pub fn add(&mut self, trace: Trace) {
        self.pending.push(trace);
    }

    /// Call rates (service -> calls per second) counted in `[start_s, start_s + duration_s)`.
    pub fn add_counts(&mut self, start_s: i64, duration_s: u32, calls_rps: BTreeMap<String, f64>) {
        self.counts.add(start_s, duration_s, calls_rps);
    }

    /// Whether a tick at `boundary_s` (an interval's end) should wait for that interval's
    /// counts: the spec has call counts and none reach `boundary_s` yet.
    pub fn awaits_counts(&self, boundary_s: i64) -> bool {
        self.spec.call_counts.is_some() && self.counts.counted_to_s().is_none_or(|t| t < boundary_s)
    }

    /// Profiles learned so far.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The decision at Unix time `now_s`, every `interval_s` seconds.
    ///
    /// Windows are aligned to multiples of the interval; the one that closed one interval
    /// ago is ingested (with any older ones still pending), so slow requests, whose spans
    /// arrive last, are not missing from its mix (the simulator's `derm` policy found that
    /// ingesting at once biases the mix towards short graphs).
    pub fn tick(&mut self, now_s: i64, interval_s: u32) -> Tick {
        self.ticks += 1;
        let cutoff_us = cutoff_us(now_s, interval_s);
        let (ready, later): (Vec<Trace>, Vec<Trace>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|t| t.spans.iter().map(|s| s.start_us).min().is_some_and(|s| s < cutoff_us));
        self.pending = later;
        if ready.is_empty() {
            return Tick::Hold("no traces in the last closed window".into());
        }
        let Some(load) = self.ingest(ready, interval_s) else {
            return Tick::Hold("no complete request in the last closed window".into());
        };
        self.since_refit += 1;
        if self.profiles.services.is_empty() || self.since_refit >= REFIT_EVERY {
            let (profiles, errors) = profile::fit_all(&self.samples, &profile::Config::default());
            for e in errors {
                tracing::debug!(error = %e, "profile fit");
            }
            // Services the refit could not fit keep their profile (a failed refit is no reason
            // to forget); a fallback line (too few load levels yet, e.g. after a restart) does
            // not replace a fitted profile, nor does a jump until it is confirmed ([`refit`]).
            self.refits.merge(&mut self.profiles, profiles);
            self.since_refit = 0;
        }
        let plan_s = now_s.div_euclid(i64::from(interval_s.max(1))) * i64::from(interval_s.max(1));
        let counted = self.counted(plan_s, interval_s);
        let (windows, horizon, counts) = match &counted {
            Some(Ok(r)) => {
                let skipped = match r.unexplained {
                    0 => String::new(),
                    n => format!("; {n} intervals whose calls the traced graphs do not explain left out"),
                };
                let note = format!("mix from the call counters, {} interval(s) ahead{skipped}", r.horizon);
                (&r.windows[..], r.horizon, Some(note))
            }
            Some(Err(why)) => {
                (&self.windows[..], LAG, Some(format!("mix from the traces: call counters not used: {why}")))
            }
            None => (&self.windows[..], LAG, None),
        };
        let choice = match self.hedge.predict(windows, RECENT, horizon) {
            Ok(c) => c,
            Err(e) => return Tick::Hold(format!("mix prediction: {e}")),
        };
        // The newest window's load and call rates: counted ones are exact and an interval
        // fresher than the traced window's.
        let (load, calls) = match (&counted, windows.last()) {
            (Some(Ok(_)), Some(newest)) => (newest.load_rps, newest.calls_rps.clone()),
            _ => (load, self.windows.last().map(|w| w.calls_rps.clone()).unwrap_or_default()),
        };
        let planned = planned_load(windows);
        let report = PredictorReport { name: choice.predictor, recent_tv: choice.recent_tv, note: choice.note, counts };
        let used = counted.as_ref().map(Result::is_ok);
        let mut tick = self.solve(&choice.mix, load, planned, &calls, report);
        if let Tick::Plan(u) = &mut tick {
            match used {
                Some(true) => self.counted_plan = u.desired_replicas.clone(),
                Some(false) => self.keep_counted_plan(u),
                None => {}
            }
        }
        tick
    }

    /// Raises `u` to the newest counted plan's replicas (within each service's max), and
    /// says so in the predictor's report when that raised any.
    fn keep_counted_plan(&self, u: &mut Update) {
        let mut raised = 0;
        for s in &self.spec.services {
            let (Some(n), Some(&floor)) = (u.desired_replicas.get_mut(&s.name), self.counted_plan.get(&s.name)) else {
                continue;
            };
            let floor = floor.min(s.max_replicas.max(1));
            if *n < floor {
                *n = floor;
                raised += 1;
            }
        }
        if raised > 0
            && let Some(note) = &mut u.predictor.counts
        {
            note.push_str(&format!("; {raised} service(s) kept at the last counted plan's replicas"));
        }
    }

    /// The counted windows for a plan starting at `plan_s`: `None` without `spec.callCounts`,
    /// else the windows or why they are not used.
    fn counted(&mut self, plan_s: i64, interval_s: u32) -> Option<Result<Recent, String>> {
        self.spec.call_counts.as_ref()?;
        let entry = &self.spec.entry_service;
        Some(self.counts.recent(&self.catalog, self.catalog_version, entry, &self.windows, plan_s, interval_s))
    }

    /// Ingests closed windows; returns the newest one's entry load.
    fn ingest(&mut self, traces: Vec<Trace>, interval_s: u32) -> Option<f64> {
        let args = self.spec.argument_tags.iter().map(|t| ArgSpec { tag: t.name.clone(), edges: t.buckets.clone() });
        let mut ingest = Ingest::new(window::Config {
            window_s: interval_s.max(1),
            sampling: Some(self.sampling),
            args: args.collect(),
            max_samples: window::DEFAULT_MAX_SAMPLES,
            seed: self.ticks,
        });
        for t in traces {
            ingest.add(t);
        }
        let out = ingest.finish();
        for e in out.windows.graphs.graphs {
            if let std::collections::btree_map::Entry::Vacant(v) = self.catalog.entry(e.id) {
                v.insert(e.root);
                self.catalog_version += 1;
            }
        }
        for (svc, mut s) in out.windows.samples {
            let kept = self.samples.entry(svc).or_default();
            kept.append(&mut s);
            let excess = kept.len().saturating_sub(KEEP);
            kept.drain(..excess);
        }
        let load = out.windows.windows.last().map(|w| w.load_rps);
        for w in &out.windows.windows {
            self.long_run.add(w);
        }
        self.windows.extend(out.windows.windows);
        let excess = self.windows.len().saturating_sub(KEEP);
        self.windows.drain(..excess);
        self.prune();
        load
    }

    /// Forgets graphs no kept window names whose long-run share fell below
    /// [`CATALOG_MIN_SHARE`].
    fn prune(&mut self) {
        let total: f64 = self.long_run.weights.values().sum();
        let seen: std::collections::BTreeSet<&str> =
            self.windows.iter().flat_map(|w| w.graph_mix.keys().map(String::as_str)).collect();
        let keep = |id: &str, weight: f64| seen.contains(id) || weight >= CATALOG_MIN_SHARE * total;
        let weights = &self.long_run.weights;
        let before = self.catalog.len();
        self.catalog.retain(|id, _| keep(id, weights.get(id).copied().unwrap_or(0.0)));
        if self.catalog.len() != before {
            self.catalog_version += 1;
        }
        self.long_run.weights.retain(|id, w| keep(id, *w));
    }

    /// The graphs of `mix` whose services all have a usable profile.
    fn entries(&self, mix: &BTreeMap<String, f64>) -> Vec<Entry> {
        mix.iter()
            .filter(|(_, s)| **s > 0.0)
            .filter_map(|(id, share)| {
                let root = self.catalog.get(id)?.clone();
                let mut usable = true;
                root.walk(&mut |n| usable &= self.profiles.services.get(&n.service).is_some_and(|p| p.b > 0.0));
                usable.then(|| Entry { id: id.clone(), share: *share, count: 0, root })
            })
            .collect()
    }

    /// `load` is the last window's measured entry rate (reported); `planned` the forecast the
    /// plan is for (at least `load`); `calls_rps` the last window's call rates (the floors).
    fn solve(
        &mut self,
        mix: &BTreeMap<String, f64>,
        load: f64,
        planned: f64,
        calls_rps: &BTreeMap<String, f64>,
        predictor: PredictorReport,
    ) -> Tick {
        let entries = self.entries(mix);
        if entries.is_empty() {
            return Tick::Hold("no predicted graph has profiles for all its services yet".into());
        }
        let headroom = 1.0 + self.spec.load_headroom;
        let load_rps = planned.max(load).max(1e-3) * headroom;
        // The trust region (as the simulator's policies): no service is planned above 1.1x the
        // highest per-container load its profile saw, nor below the last window's call rate;
        // the spec's bounds win over it.
        let observed: BTreeMap<&str, f64> = calls_rps.iter().map(|(s, r)| (s.as_str(), r * headroom)).collect();
        // The spec's percentile is in percent (95 for P95).
        let percentile = 1.0 - (1.0 - self.spec.sla.percentile / 100.0) * (1.0 - self.spec.tail_margin);
        let solve = |graphs: &[Entry]| {
            let demand = trust::demand(graphs, load_rps, &observed);
            let floors = trust::floors(&demand, |svc| self.trusted_load(svc));
            // Bounds only for services the graphs call (the optimizer refuses others); the
            // rest keep their minimum below.
            let mut called = std::collections::BTreeSet::new();
            for e in graphs {
                e.root.walk(&mut |n| {
                    called.insert(n.service.clone());
                });
            }
            let bounds = self
                .spec
                .services
                .iter()
                .filter(|s| called.contains(&s.name))
                .map(|s| {
                    let max = s.max_replicas.max(1);
                    let min = floors.get(&s.name).copied().unwrap_or(0).max(s.min_replicas).clamp(1, max);
                    (s.name.clone(), Bounds { min, max })
                })
                .collect();
            let input = Input {
                profiles: &self.profiles,
                graphs,
                load_rps,
                sla_ms: self.spec.sla.latency_ms,
                percentile,
                rare_threshold: self.spec.rare_graph_threshold,
                bounds,
                max_utilization: 0.9,
            };
            Problem::new(&input).and_then(|p| optimize::solve(&p, optimize::Policy::Derm, Start::Paired))
        };
        let plan = match solve(&entries) {
            Ok(p) => p,
            Err(e) => {
                self.infeasible = Some(e.to_string());
                return Tick::Hold(format!("solve: {e}"));
            }
        };
        // The long-run floor: a long-run mix that cannot be planned (a graph without profiles
        // yet, an infeasible old graph) leaves the forecast's plan alone.
        let long_run = self.long_run.mix().map(|m| self.entries(&m)).filter(|e| !e.is_empty()).map(|e| solve(&e));
        let floor = match long_run {
            Some(Ok(p)) => p.services.into_iter().map(|(s, p)| (s, p.replicas)).collect(),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "long-run mix: no plan");
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        self.infeasible = None;
        let desired = self
            .spec
            .services
            .iter()
            .map(|s| {
                let n = plan.services.get(&s.name).map_or(s.min_replicas, |p| p.replicas);
                let n = n.max(floor.get(&s.name).copied().unwrap_or(0));
                (s.name.clone(), n.clamp(s.min_replicas.max(1), s.max_replicas.max(1)))
            })
            .collect();
        Tick::Plan(Update {
            observed_load_rps: load,
            predicted_graph_mix: mix.iter().map(|(g, s)| GraphShare { graph: g.clone(), share: *s }).collect(),
            predicted_sla_probability: plan.predicted_sla_probability,
            desired_replicas: desired,
            call_affinity: affinity(&entries, load),
            predictor,
        })
    }
}

/// The tick at `now_s` ingests the traces that started before this (microseconds): the end of
/// the window that closed one interval ago. A polled source must have fetched up to here.
pub fn cutoff_us(now_s: i64, interval_s: u32) -> i64 {
    let interval = i64::from(interval_s.max(1));
    (now_s.div_euclid(interval) - 1) * interval * 1_000_000
}

/// The entry load to plan for ([`forecast`]) from the newest windows that follow each other
/// without a gap: a gap (an interval without traces, a restart) ends the trend, so a rise is
/// only extrapolated from consecutive intervals.
fn planned_load(windows: &[Window]) -> f64 {
    let mut run = 0;
    for pair in windows.windows(2).rev().take(TREND_POINTS - 1) {
        if pair[1].start_s - pair[0].start_s != i64::from(pair[0].duration_s) {
            break;
        }
        run += 1;
    }
    let loads: Vec<f64> = windows[windows.len() - (run + 1).min(windows.len())..].iter().map(|w| w.load_rps).collect();
    forecast(&loads)
}

/// Calls per second between each caller and callee under the planned mix.
fn affinity(entries: &[Entry], load: f64) -> Vec<CallAffinity> {
    let total: f64 = entries.iter().map(|e| e.share).sum();
    let mut rates: BTreeMap<(String, String), f64> = BTreeMap::new();
    for e in entries {
        let rate = load * e.share / total.max(1e-12);
        edges(&e.root, rate, &mut rates);
    }
    rates.into_iter().map(|((from, to), r)| CallAffinity { from, to, calls_per_second: r }).collect()
}

fn edges(node: &Node, rate: f64, out: &mut BTreeMap<(String, String), f64>) {
    for stage in &node.stages {
        for child in stage {
            *out.entry((node.service.clone(), child.service.clone())).or_insert(0.0) += rate;
            edges(child, rate, out);
        }
    }
}

#[cfg(test)]
mod tests;
