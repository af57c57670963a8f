//! Replica floors from a trust region: no service is planned at more than [`TRUST_REGION`]
//! times the highest per-container load its profile observed. The linear rate model is a fit
//! over the loads seen while profiling; extrapolated far beyond them it overestimates the
//! capacity of multi-worker services by 15-35% (measured in the simulator's `trainticket`).
//! Shared by the simulator's profile-based policies and the adapter's online loop.

use std::collections::BTreeMap;

use crate::graph::catalog::Entry;

/// Highest per-container load planned for, as a multiple of the highest one observed.
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
}
