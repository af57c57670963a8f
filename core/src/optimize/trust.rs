//! Replica floors from a trust region: no service is planned at more than [`TRUST_REGION`]
//! times the highest per-container load its profile is trusted at (observed; see below for
//! how refits raise it). The linear rate model is a fit over the loads seen while
//! profiling; extrapolated far beyond them it overestimates the
//! capacity of multi-worker services by 15-35% (measured in the simulator's `trainticket`).
//! Shared by the simulator's profile-based policies and the adapter's online loop.
//!
//! The region grows only where the model held ([`supported_load`]): a refit's load levels
//! above the trusted load count when their measured rate is within [`REFIT_FACTOR`] of what
//! the profile in use predicted there (the ratio test of a classic trust region), and it
//! never shrinks. A refit's highest load taken as is moved the region down as well as up with
//! each refit's binning, and through the levels of an overload episode: in the simulator's
//! `trainticket` (seed 2) `ts-seat-service`'s region went from 0.92 to 0.97 of its true
//! capacity at the first refit after the degraded-mode exit. With the test it stayed at 0.92
//! then, and reached 1.00 by the end of the hour through levels the model did predict (a
//! load of 0.91 of capacity). So the region is evidence, not a capacity guard: a
//! multi-worker service's latency stays near the model's until close to saturation, and the
//! optimizer's utilisation cap on `-b/a` and the SLA constraint bound what is planned there.

use std::collections::BTreeMap;

use crate::graph::catalog::Entry;
use crate::profile::{Level, Profile, REFIT_FACTOR};

/// Highest per-container load planned for, as a multiple of the highest one trusted
/// ([`supported_load`]).
pub const TRUST_REGION: f64 = 1.1;

/// Calls per second each service receives under a mix at entry `load` (shares renormalised),
/// at least its `observed` rate.
pub fn demand(entries: &[Entry], load: f64, observed: &BTreeMap<&str, f64>) -> BTreeMap<String, f64> {
    let total: f64 = entries.iter().map(|e| e.share).sum();
    let mut demand: BTreeMap<String, f64> = BTreeMap::new();
    if total > 0.0 {
        for e in entries {
            for (svc, n) in e.root.calls() {
                *demand.entry(svc.to_owned()).or_insert(0.0) += load * e.share / total * f64::from(n);
            }
        }
    }
    for (svc, d) in demand.iter_mut() {
        *d = d.max(observed.get(svc.as_str()).copied().unwrap_or(0.0));
    }
    demand
}

/// The fewest replicas (at least 1) keeping each service's per-container load within
/// `trusted(service)` (its trusted per-container load); services without one get no floor.
pub fn floors(demand: &BTreeMap<String, f64>, trusted: impl Fn(&str) -> Option<f64>) -> BTreeMap<String, u32> {
    demand
        .iter()
        .filter_map(|(svc, d)| {
            let w = trusted(svc).filter(|w| w.is_finite() && *w > 0.0)?;
            Some((svc.clone(), ((d / w - 1e-9).ceil() as u32).max(1)))
        })
        .collect()
}

/// The highest per-container load the evidence supports: `trusted`, raised through the
/// `levels` above it in increasing load while each one's measured rate is at least
/// `1 / REFIT_FACTOR` of the rate `model` (the profile in use) predicted at its load. The
/// walk stops at the first level that fails: an overload window's latencies are minutes, its
/// rate far below any prediction, and the loads above it are not evidence either. Faster
/// than predicted is no reason to distrust a load.
pub fn supported_load(model: &Profile, levels: &[Level], trusted: f64) -> f64 {
    let mut above: Vec<&Level> = levels.iter().filter(|l| l.w_rps.is_finite() && l.w_rps > trusted).collect();
    above.sort_by(|a, b| a.w_rps.total_cmp(&b.w_rps));
    let mut supported = trusted;
    for l in above {
        let predicted = model.rate(l.w_rps);
        if !(predicted > 0.0 && l.rate_per_ms >= predicted / REFIT_FACTOR) {
            break;
        }
        supported = l.w_rps;
    }
    supported
}

/// `refit`, accepted in place of `model` (the profile in use), with the trust region's base
/// carried over: `model`'s, raised only through the refit's levels it predicted.
pub fn carry(model: &Profile, refit: Profile) -> Profile {
    let w_max_rps = supported_load(model, &refit.fit, model.w_max_rps);
    Profile { w_max_rps, ..refit }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;

    #[test]
    fn floors_keep_each_container_within_the_trusted_load() {
        let entries = vec![
            Entry { id: "a".into(), share: 3.0, count: 0, root: Node::chain(["front", "db", "db"].map(String::from)) },
            Entry { id: "b".into(), share: 1.0, count: 0, root: Node::leaf("front".to_owned()) },
        ];
        // 100 rps: front gets all of it, db twice per request of graph a (75%).
        let observed = BTreeMap::from([("front", 130.0), ("cache", 5.0)]);
        let d = demand(&entries, 100.0, &observed);
        assert_eq!(d.len(), 2);
        assert!((d["front"] - 130.0).abs() < 1e-9, "observed wins when higher");
        assert!((d["db"] - 150.0).abs() < 1e-9);
        let f = floors(&d, |svc| (svc == "db").then_some(40.0));
        // 150 / 40 = 3.75 -> 4 replicas; front has no trusted load: no floor.
        assert_eq!(f, BTreeMap::from([("db".to_owned(), 4)]));
        assert!(floors(&d, |_| Some(f64::NAN)).is_empty());
    }

    #[test]
    fn the_region_grows_only_through_levels_the_model_predicted() {
        // Rate 0.1/ms at no load, zero at 100 rps; trusted so far up to 60 rps.
        let model = Profile::line(1.0, -0.001, 0.1, 60.0);
        let level = |w_rps: f64, rate_per_ms: f64| Level { w_rps, samples: 200, rate_per_ms, ks: 0.05 };
        // 70 rps: predicted 0.03, measured 0.025 (within 1.5x): supported. 80 rps: predicted
        // 0.02, measured 0.002 (an overload window): the walk stops, and 90 rps, which looks
        // fine, is not reached. Levels below the trusted load do not matter.
        let levels = [level(90.0, 0.02), level(30.0, 0.0001), level(80.0, 0.002), level(70.0, 0.025)];
        assert_eq!(supported_load(&model, &levels, 60.0), 70.0);
        // Faster than predicted everywhere: every level counts.
        let fast = [level(70.0, 0.05), level(95.0, 0.04)];
        assert_eq!(supported_load(&model, &fast, 60.0), 95.0);
        // Beyond the line's capacity nothing is supported; no levels above: unchanged.
        assert_eq!(supported_load(&model, &[level(120.0, 0.05)], 60.0), 60.0);
        assert_eq!(supported_load(&model, &[], 60.0), 60.0);
        assert_eq!(supported_load(&model, &[level(f64::NAN, 0.05)], 60.0), 60.0);
    }
}
