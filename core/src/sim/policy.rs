//! Scaling policies: each looks at the deployment every `period_s` and decides replicas.
//!
//! - [`derm`]: the Derm family (`derm`, `derm-oracle`, `derm-static`) and `uniform`.
//! - [`hpa`]: the Kubernetes HorizontalPodAutoscaler algorithm on CPU utilisation.
//! - [`StaticPeak`]: fixed replicas sized for the peak load.

pub mod derm;
pub mod hpa;

use std::fmt;

use super::{Error, Pattern, Scenario};
use crate::trace::Trace;

/// What a policy sees at a decision.
#[derive(Debug)]
pub struct View<'a> {
    /// Scenario time, s.
    pub now_s: f64,
    /// Unix seconds of scenario time 0 (span timestamps are relative to it).
    pub origin_s: i64,
    pub scenario: &'a Scenario,
    /// The true load pattern (only `derm-oracle` and `static-peak` read it).
    pub pattern: &'a Pattern,
    /// Per service: ready and starting containers.
    pub ready: Vec<u32>,
    pub starting: Vec<u32>,
    /// Per service: mean CPU utilisation of ready containers since the previous decision.
    pub utilisation: Vec<Option<f64>>,
    /// Sampled traces completed since the previous decision.
    pub traces: Vec<Trace>,
    /// Entry requests per second since the previous decision (the ingress request counter
    /// every gateway exports; traces alone miss the requests still in flight).
    pub arrivals_rps: f64,
    /// Per service: calls per second that arrived since the previous decision (the request
    /// counters of a service mesh).
    pub calls_rps: Vec<f64>,
    /// Per service: calls waiting for a worker at this moment (a service mesh's pending
    /// requests gauge): the backlog an overload left behind.
    pub queued: Vec<u64>,
}

impl View<'_> {
    /// Current replicas (ready + starting) per service.
    pub fn replicas(&self) -> Vec<u32> {
        self.ready.iter().zip(&self.starting).map(|(r, s)| r + s).collect()
    }
}

/// Counters a policy reports with its results.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub decisions: u64,
    /// Full optimisations (derm family).
    pub solves: u64,
    /// Load-only rescales of the previous plan (derm family).
    pub rescales: u64,
    /// Decisions that kept or rescaled the previous replicas because solving failed.
    pub fallbacks: u64,
    pub profile_refits: u64,
    /// Service profiles from online refits rejected as implausible (derm family).
    pub rejected_refits: u64,
    /// Decisions where the long-run mix's plan raised a service (`derm`, `uniform`).
    pub long_run_raised: u64,
    /// Intervals whose call counters the catalog's graphs did not explain, so the mix came
    /// from the traces (`derm`, `uniform` with the counters as mix source).
    pub unexplained_counters: u64,
    /// Wall time spent deciding, ms (mean per decision).
    pub mean_decision_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Stats {
    /// Counts a decision that started at `t0`, its wall time into the running mean.
    pub fn decided(&mut self, t0: std::time::Instant) {
        self.decisions += 1;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.mean_decision_ms += (ms - self.mean_decision_ms) / self.decisions as f64;
    }
}

/// A scaling policy.
pub trait Policy: Send {
    fn name(&self) -> &str;
    /// Seconds between decisions.
    fn period_s(&self) -> f64;
    /// Replicas per service (in `scenario.app.services` order), each >= 1.
    fn decide(&mut self, view: View<'_>) -> Vec<u32>;
    fn stats(&self) -> Stats;
    /// What the last decision planned for (profile-based policies), for live displays.
    fn insight(&self) -> Option<Insight> {
        None
    }
}

/// The mix, load and predicted SLA probability behind a decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Insight {
    /// Graph id -> share.
    pub mix: std::collections::BTreeMap<String, f64>,
    /// Load planned for, requests/s (headroom included).
    pub load_rps: f64,
    /// The plan's predicted weighted probability of meeting the SLA.
    pub predicted_sla_probability: f64,
    /// The predicted share of *all* requests within the SLA, graphs outside the constraint
    /// included: below the target when rare graphs are starved.
    pub all_requests_probability: f64,
}

/// Policy names accepted by `--policies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    Derm,
    DermOracle,
    DermStatic,
    Uniform,
    HpaCpu,
    StaticPeak,
}

impl Name {
    pub const ALL: [Name; 6] =
        [Name::Derm, Name::DermOracle, Name::DermStatic, Name::Uniform, Name::HpaCpu, Name::StaticPeak];

    pub fn as_str(self) -> &'static str {
        match self {
            Name::Derm => "derm",
            Name::DermOracle => "derm-oracle",
            Name::DermStatic => "derm-static",
            Name::Uniform => "uniform",
            Name::HpaCpu => "hpa-cpu",
            Name::StaticPeak => "static-peak",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        Name::ALL.into_iter().find(|n| n.as_str() == text).ok_or_else(|| Error::UnknownPolicy { name: text.to_owned() })
    }

    /// Policies that need learned profiles.
    pub fn needs_profiles(self) -> bool {
        matches!(self, Name::Derm | Name::DermOracle | Name::DermStatic | Name::Uniform)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fixed replicas for the peak: every service at [`StaticPeak::UTILISATION`] of its true
/// capacity at the highest demand the pattern reaches in the run (what an operator sizing
/// for the peak by load test would deploy).
#[derive(Debug, Clone)]
pub struct StaticPeak {
    replicas: Vec<u32>,
    stats: Stats,
}

impl StaticPeak {
    /// Same target utilisation as the HPA baseline.
    pub const UTILISATION: f64 = 0.5;

    pub fn new(scenario: &Scenario, pattern: &Pattern, from_s: f64, to_s: f64) -> Self {
        let app = &scenario.app;
        let mut peak = vec![0.0f64; app.services.len()];
        let mut t = from_s;
        while t <= to_s {
            let rps = pattern.rps(t);
            for (p, d) in peak.iter_mut().zip(app.demand(&app.mix(t, rps), rps)) {
                *p = p.max(d);
            }
            t += 5.0;
        }
        StaticPeak { replicas: app.replicas_for(&peak, Self::UTILISATION), stats: Stats::default() }
    }
}

impl Policy for StaticPeak {
    fn name(&self) -> &str {
        Name::StaticPeak.as_str()
    }

    fn period_s(&self) -> f64 {
        60.0
    }

    fn decide(&mut self, _view: View<'_>) -> Vec<u32> {
        self.stats.decisions += 1;
        self.replicas.clone()
    }

    fn stats(&self) -> Stats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Stats;

    #[test]
    fn decided_counts_and_keeps_the_mean_time() {
        let mut stats = Stats::default();
        let ago = |ms: u64| Instant::now().checked_sub(Duration::from_millis(ms)).expect("a clock past boot");
        stats.decided(ago(10));
        stats.decided(ago(50));
        assert_eq!(stats.decisions, 2);
        // The mean of at least 10 and 50 ms; not their sum, nor the last alone.
        assert!((30.0..45.0).contains(&stats.mean_decision_ms), "{}", stats.mean_decision_ms);
    }
}
