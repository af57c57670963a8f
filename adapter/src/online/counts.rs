//! The mix from the call counters (`spec.callCounts`): each interval's per-service call
//! rates, as a mesh counts them for every request, fitted to the catalog's graphs
//! ([`derm_core::graph::counted`]), as the simulator's `derm` does by default.
//!
//! Counted windows are fresher and far less noisy than traced ones: a 5%-sampled window
//! holds a few hundred requests, and it is ingested one interval late so that slow requests'
//! spans arrive. The interval that just ended is counted as soon as the counters are scraped,
//! so the loop forecasts one interval ahead instead of two. In `derm simulate` (seed 3) the
//! planned mix moved from 0.097 to 0.027 of the truth on `alibaba` (TV), 0.091 to 0.043 on
//! `trainticket`.
//!
//! The traces still teach the graphs (the catalog), the profiles, the argument mix and the
//! long-run floor. A window is left out when the catalog's graphs do not explain its calls
//! ([`MAX_UNEXPLAINED`]: a shape no trace has shown yet, or counters that name services
//! otherwise), and the whole source is set aside, for the traces, when its newest usable
//! window is more than [`MAX_AHEAD`] intervals behind the plan (Prometheus down or late).
//! Nothing here is stored with the learned state: after a restart the poller reads the last
//! windows from Prometheus again.

use std::collections::BTreeMap;

use derm_core::graph::counted::{self, Estimate};
use derm_core::graph::{Node, Window};

/// Above this share of a window's counted calls unexplained by the catalog, its fitted mix is
/// not used (the simulator's [`derm_core::sim::policy::derm::MAX_UNEXPLAINED`]).
pub const MAX_UNEXPLAINED: f64 = derm_core::sim::policy::derm::MAX_UNEXPLAINED;
/// Counted windows kept: the predictor's context, its scored windows and the horizon.
pub const KEEP: usize = super::RECENT + super::hedge::SCORED + MAX_AHEAD;
/// The newest counted window may end at most this many intervals before the plan starts
/// (2: as old as the newest traced window; older, the traces are as fresh).
pub const MAX_AHEAD: usize = 2;

/// One interval's counted call rates and, cached, the mix fitted to them.
#[derive(Debug, Clone)]
struct Counted {
    calls_rps: BTreeMap<String, f64>,
    /// The fit for catalog version `.0` (refitted when the catalog changes).
    fit: Option<(u64, Result<Estimate, String>)>,
}

/// Counted windows of one app by start (Unix seconds), all of one duration.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    duration_s: u32,
    windows: BTreeMap<i64, Counted>,
}

/// The counted windows to forecast from, or why there are none.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    /// Usable windows, oldest first (the mix fitted, `load_rps` the entry service's calls).
    pub windows: Vec<Window>,
    /// Windows between the newest one and the interval planned for (1: it just ended).
    pub horizon: usize,
    /// Windows left out because the catalog did not explain their calls.
    pub unexplained: usize,
}

impl Counts {
    /// Records the rates counted in `[start_s, start_s + duration_s)`; a new duration (the
    /// interval was edited) starts over.
    pub fn add(&mut self, start_s: i64, duration_s: u32, calls_rps: BTreeMap<String, f64>) {
        if duration_s != self.duration_s {
            self.windows.clear();
            self.duration_s = duration_s;
        }
        self.windows.insert(start_s, Counted { calls_rps, fit: None });
        while self.windows.len() > KEEP {
            self.windows.pop_first();
        }
    }

    /// The end of the newest counted interval (`None`: none yet).
    pub fn counted_to_s(&self) -> Option<i64> {
        self.windows.last_key_value().map(|(start, _)| start + i64::from(self.duration_s))
    }

    /// The usable counted windows for a plan that starts at `plan_s` (a multiple of
    /// `interval_s`). `version` names the catalog's state: fits of an older one are redone.
    /// Counters know no arguments: each window takes the argument mix of the newest of
    /// `traced` (time order) that starts no later than it (the newest counted window has no
    /// traced one yet: traced windows are ingested one interval late).
    pub fn recent(
        &mut self,
        catalog: &BTreeMap<String, Node>,
        version: u64,
        entry: &str,
        traced: &[Window],
        plan_s: i64,
        interval_s: u32,
    ) -> Result<Recent, String> {
        if self.windows.is_empty() {
            return Err("no interval counted yet".into());
        }
        if self.duration_s != interval_s {
            return Err(format!("counted over {} s, the interval is {interval_s} s", self.duration_s));
        }
        let mut out = Recent { windows: Vec::new(), horizon: 0, unexplained: 0 };
        let mut failed = None;
        let empty = BTreeMap::new();
        for (&start_s, w) in self.windows.range_mut(..plan_s) {
            let arg_mix = match traced.partition_point(|t| t.start_s <= start_s) {
                0 => &empty,
                n => &traced[n - 1].arg_mix,
            };
            let entry_rps = w.calls_rps.get(entry).copied().unwrap_or(0.0);
            if w.fit.as_ref().is_none_or(|(v, _)| *v != version) {
                let calls = w.calls_rps.iter().map(|(s, r)| (s.as_str(), *r)).collect();
                w.fit = Some((version, counted::estimate(catalog, &calls, entry_rps).map_err(|e| e.to_string())));
            }
            match w.fit.as_ref().map(|(_, f)| f) {
                Some(Ok(e)) if e.unexplained <= MAX_UNEXPLAINED => out.windows.push(Window {
                    start_s,
                    duration_s: interval_s,
                    load_rps: entry_rps,
                    requests: (entry_rps * f64::from(interval_s)).round() as u64,
                    graph_mix: e.mix.clone(),
                    arg_mix: arg_mix.clone(),
                    containers: BTreeMap::new(),
                    calls_rps: w.calls_rps.clone(),
                }),
                Some(Ok(_)) => out.unexplained += 1,
                Some(Err(e)) => failed = Some(e.clone()),
                None => {}
            }
        }
        let Some(newest) = out.windows.last() else {
            let why = failed.map_or_else(
                || {
                    format!(
                        "the graphs seen in traces explain under {:.0}% of the counted calls",
                        100.0 * (1.0 - MAX_UNEXPLAINED)
                    )
                },
                |e| format!("no counted interval could be fitted: {e}"),
            );
            return Err(why);
        };
        let behind = (plan_s - newest.start_s).div_euclid(i64::from(interval_s.max(1)));
        if behind > MAX_AHEAD as i64 {
            return Err(format!(
                "the newest counted interval ended {} s before the plan",
                plan_s - newest.start_s - i64::from(interval_s)
            ));
        }
        out.horizon = behind.max(1) as usize;
        Ok(out)
    }
}
