//! Scores and hard limits for one pod over its candidate nodes.
//!
//! The formula lives in [`derm_core::placement`] (shared with the simulator's placement study);
//! this module feeds it from the cluster snapshot, counting pods [in flight](crate::inflight).
//! Pods of no DermApp, and pods whose DermApp status is stale, get [`Score::NEUTRAL`]
//! everywhere and are never filtered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use derm_core::placement::{self, Candidate};
pub use derm_core::placement::{Score, Terms, WeightError, Weights};

use crate::knowledge::{Knowledge, ServiceId};

/// Scoring configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Term weights.
    pub weights: Weights,
    /// Hard limit: at most this many replicas of one service per node (filter).
    pub max_per_node: Option<u32>,
    /// DermApp status older than this is stale (None: never stale).
    pub max_age: Option<Duration>,
}

/// Why a pod got the scores it got (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
pub enum Outcome {
    /// A DermApp service with fresh status: scored.
    Scored,
    /// The pod belongs to no DermApp: neutral.
    NotDerm,
    /// Its DermApp's status is stale: neutral, never filtered.
    Stale,
}

/// Scores of a pod's candidates.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Why.
    pub outcome: Outcome,
    /// The pod's service.
    pub service: Option<ServiceId>,
    /// One score per candidate, in request order.
    pub scores: Vec<Score>,
    /// Terms per candidate (empty unless scored).
    pub terms: Vec<Terms>,
}

impl Scored {
    /// Index of the best candidate (first of equals), if scored and any.
    pub fn best(&self) -> Option<usize> {
        if self.outcome != Outcome::Scored {
            return None;
        }
        let max = self.scores.iter().max()?;
        self.scores.iter().position(|s| s == max)
    }
}

/// Counts per node for the request: bound replicas plus in-flight ones.
#[derive(Debug, Default)]
pub struct Counts {
    /// In-flight replicas per node of the pod's service.
    pub own: HashMap<Arc<str>, u32>,
    /// In-flight replicas per node of each peer, same order as the service's peers.
    pub peers: Vec<HashMap<Arc<str>, u32>>,
    /// The placement plan's replicas per node for the service (empty: no plan).
    pub planned: HashMap<Arc<str>, u32>,
}

/// Resolves the pod's service and whether Derm has an opinion on it.
pub fn classify(k: &Knowledge, service: Option<ServiceId>, cfg: &Config, now: std::time::SystemTime) -> Outcome {
    match service {
        None => Outcome::NotDerm,
        Some(s) if !k.fresh(s, now, cfg.max_age) => Outcome::Stale,
        Some(_) => Outcome::Scored,
    }
}

/// Scores `candidates` for a pod of `service` (already classified [`Outcome::Scored`]).
pub fn score(
    k: &Knowledge,
    service: ServiceId,
    candidates: &[impl AsRef<str>],
    counts: &Counts,
    cfg: &Config,
) -> Scored {
    let s = &k.services[service];
    // Affinity mass per node index, accumulated over the peers' (sparse) placements; in-flight
    // pods are keyed by name (they may sit on nodes the snapshot has not indexed).
    let mut mass = vec![0.0; k.node_info.len()];
    let mut mass_inflight: HashMap<&str, f64> = HashMap::new();
    for (p, &(j, rate)) in s.peers.iter().enumerate() {
        let peer = &k.services[j];
        let inflight = counts.peers.get(p);
        let total = peer.total + inflight.map_or(0, |m| m.values().sum());
        if total == 0 {
            continue;
        }
        let per_replica = rate / f64::from(total);
        for &(i, n) in &peer.placed {
            mass[i] += per_replica * f64::from(n);
        }
        for (node, n) in inflight.into_iter().flatten() {
            *mass_inflight.entry(node).or_default() += per_replica * f64::from(*n);
        }
    }
    let mut here = vec![0u32; k.node_info.len()];
    for &(i, n) in &s.placed {
        here[i] = n;
    }
    let own_total = s.total + counts.own.values().sum::<u32>();
    let by_name =
        |m: &HashMap<Arc<str>, u32>, name: &str| if m.is_empty() { 0 } else { m.get(name).copied().unwrap_or(0) };
    let candidates: Vec<Candidate> = candidates
        .iter()
        .map(|name| {
            let name = name.as_ref();
            let index = k.node_index.get(name).copied();
            let extra = if mass_inflight.is_empty() { 0.0 } else { mass_inflight.get(name).copied().unwrap_or(0.0) };
            let here = index.map_or(0, |i| here[i]) + by_name(&counts.own, name);
            Candidate {
                affinity: index.map_or(0.0, |i| mass[i]) + extra,
                here,
                headroom: index
                    .and_then(|i| k.node_info[i].as_ref())
                    .map_or(1.0, |info| placement::headroom(info.pods_used, info.pods_allocatable)),
                planned_more: by_name(&counts.planned, name) > here,
            }
        })
        .collect();
    let (scores, terms) = placement::score(&candidates, own_total, cfg.weights, !counts.planned.is_empty());
    Scored { outcome: Outcome::Scored, service: Some(service), scores, terms }
}

/// Neutral scores for `n` candidates.
pub fn neutral(outcome: Outcome, service: Option<ServiceId>, n: usize) -> Scored {
    Scored { outcome, service, scores: vec![Score::NEUTRAL; n], terms: Vec::new() }
}

/// The hard-limit check: for each candidate, `None` when it passes, else the reason.
pub fn filter(k: &Knowledge, service: ServiceId, candidates: &[impl AsRef<str>], cfg: &Config) -> Vec<Option<String>> {
    let s = &k.services[service];
    candidates
        .iter()
        .map(|name| {
            let limit = cfg.max_per_node?;
            let here = s.per_node.get(name.as_ref()).copied().unwrap_or(0);
            (here >= limit).then(|| {
                format!(
                    "derm: {here} replicas of service {} already on this node (limit {limit}, --max-replicas-per-node)",
                    s.key
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::knowledge::{App, Call, NodeInfo, Placement, Service, Workload};

    fn w(name: &str) -> Workload {
        Workload::new("shop", "Deployment", name)
    }

    /// frontend <-> cart at 100/s, cart <-> db at 10/s; frontend on n1 (3), db on n2 (1).
    fn shop() -> Knowledge {
        let svc = |n: &str| Service { name: n.into(), workload: w(n), desired: None };
        let app = App {
            namespace: "shop".into(),
            name: "shop".into(),
            services: vec![svc("frontend"), svc("cart"), svc("db")],
            calls: vec![
                Call { from: "frontend".into(), to: "cart".into(), rate: 100.0 },
                Call { from: "cart".into(), to: "db".into(), rate: 10.0 },
            ],
            updated: None,
        };
        let place = |s: &str, node: &str, count| Placement { workload: w(s), node: node.into(), count };
        let nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|n| NodeInfo { name: n.into(), pods_allocatable: Some(10), pods_used: 0 })
            .collect();
        Knowledge::build(&[app], &[place("frontend", "n1", 3), place("db", "n2", 1)], &nodes, SystemTime::UNIX_EPOCH)
    }

    fn cfg() -> Config {
        Config { weights: Weights::default(), max_per_node: None, max_age: None }
    }

    #[test]
    fn affinity_prefers_the_busiest_peer_and_scores_stay_in_range() {
        let k = shop();
        let cart = k.service_of(&w("cart")).unwrap();
        let got = score(&k, cart, &["n1", "n2", "n3", "unknown"], &Counts::default(), &cfg());
        assert_eq!(got.best(), Some(0));
        let s: Vec<i64> = got.scores.iter().map(|s| s.get()).collect();
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        assert_eq!(s[2], s[3], "an unknown node is like an empty one");
        assert!(s.iter().all(|v| (0..=10).contains(v)));
        assert!((got.terms[0].affinity - 1.0).abs() < 1e-12);
        assert!((got.terms[1].affinity - 0.1).abs() < 1e-12);
    }

    #[test]
    fn in_flight_replicas_spread_a_burst() {
        let k = shop();
        let db = k.service_of(&w("db")).unwrap();
        // db's only peer (cart) has no replicas: no affinity, so spread decides.
        let mut counts = Counts::default();
        let base = score(&k, db, &["n1", "n2"], &counts, &cfg());
        assert_eq!(base.best(), Some(0), "n2 already holds a db replica");
        counts.own.insert("n1".into(), 3);
        let after = score(&k, db, &["n1", "n2"], &counts, &cfg());
        assert_eq!(after.best(), Some(1), "three in flight on n1 outweigh one bound on n2");
    }

    #[test]
    fn full_nodes_lose_headroom() {
        let mut k = shop();
        let n3 = k.node_index["n3"];
        if let Some(n) = k.node_info[n3].as_mut() {
            n.pods_used = 10;
        }
        let db = k.service_of(&w("db")).unwrap();
        let got = score(&k, db, &["n1", "n3"], &Counts::default(), &cfg());
        assert!(got.terms[1].headroom == 0.0 && got.scores[0] > got.scores[1]);
    }

    #[test]
    fn plan_favours_nodes_below_their_planned_count() {
        let k = shop();
        let db = k.service_of(&w("db")).unwrap();
        let counts = Counts { planned: HashMap::from([("n3".into(), 2)]), ..Counts::default() };
        let got = score(&k, db, &["n1", "n3"], &counts, &cfg());
        assert_eq!(got.best(), Some(1));
        assert_eq!(got.terms[1].plan, 1.0);
    }

    #[test]
    fn filter_applies_the_hard_limit_with_a_reason() {
        let k = shop();
        let frontend = k.service_of(&w("frontend")).unwrap();
        let c = Config { max_per_node: Some(3), ..cfg() };
        let got = filter(&k, frontend, &["n1", "n2"], &c);
        assert_eq!(got[1], None);
        assert_eq!(
            got[0].as_deref(),
            Some(
                "derm: 3 replicas of service shop/shop/frontend already on this node (limit 3, --max-replicas-per-node)"
            )
        );
        assert!(filter(&k, frontend, &["n1"], &cfg())[0].is_none(), "no limit configured");
    }

    #[test]
    fn classify_neutral_cases() {
        let k = shop();
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(classify(&k, None, &cfg(), now), Outcome::NotDerm);
        let c = Config { max_age: Some(Duration::from_secs(60)), ..cfg() };
        assert_eq!(classify(&k, Some(0), &c, now), Outcome::Stale);
        assert_eq!(classify(&k, Some(0), &cfg(), now), Outcome::Scored);
        assert_eq!(neutral(Outcome::Stale, Some(0), 2).scores, [Score::NEUTRAL; 2]);
    }
}
