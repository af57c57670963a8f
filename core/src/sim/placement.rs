//! The placement study behind `derm placement`: the same static deployment placed on a cluster
//! of nodes by kube-scheduler-like spreading or with Derm's extender, then simulated with a
//! per-hop network cost for cross-node calls ([`super::engine::Network`]).
//!
//! Pods are scheduled one at a time, round-robin over services (replica 1 of every service,
//! then replica 2, ...: every Deployment applied at once). Each node that has room (a pod
//! limit per node, the only filter) gets kube-scheduler's default scores, both 0..=100:
//!
//! ```text
//! least_allocated(n) = 100 * free_pods(n) / pods_per_node                        (NodeResourcesFit, weight 1)
//! topology_spread(n) = 100 * (max_m c(m) - c(n)) / max_m c(m), 100 if all 0      (PodTopologySpread, weight 2)
//! ```
//!
//! with `c(n)` the pod's service's replicas on n. `derm` adds the extender's score
//! ([`crate::placement::score`], 0..=10, no placement plan) times `extender_weight` times 10,
//! as kube-scheduler scales extender scores. The highest total wins, ties broken at random
//! (seeded), as kube-scheduler does. Call rates are those a DermApp's status publishes: the
//! scenario's time-averaged graph mix at the mean entry rate. Then every pod is rescheduled
//! once in the same order (a rolling restart, by either scheduler), so that the first pods
//! placed also see where their peers went.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::engine::{self, Engine, Network};
use super::run::quantile;
use super::{Error, Pattern, Scenario, app::App};
use crate::placement::{self, Candidate, Weights};

/// Who places the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placer {
    /// kube-scheduler's default scores: least allocated and topology spread.
    Spread,
    /// The same plus Derm's extender score.
    Derm,
}

impl Placer {
    pub fn as_str(self) -> &'static str {
        match self {
            Placer::Spread => "spread",
            Placer::Derm => "derm",
        }
    }
}

/// The cluster.
#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    pub nodes: u32,
    pub pods_per_node: u32,
}

/// Call rates between services, both directions summed: per service, `(peer, calls/s)`.
pub fn peers(app: &App, mix: &[f64], rps: f64) -> Vec<Vec<(u32, f64)>> {
    let n = app.services.len();
    let mut rate = std::collections::BTreeMap::<(u32, u32), f64>::new();
    for (g, share) in mix.iter().enumerate() {
        let flat = &app.flat[g];
        for (node, f) in flat.nodes.iter().enumerate() {
            for k in 0..f.stage_count {
                for &child in flat.stage(node as u32, k) {
                    let (a, b) = (f.service, flat.nodes[child as usize].service);
                    *rate.entry((a.min(b), a.max(b))).or_default() += rps * share;
                }
            }
        }
    }
    let mut out = vec![Vec::new(); n];
    for ((a, b), r) in rate {
        if r > 0.0 {
            out[a as usize].push((b, r));
            out[b as usize].push((a, r));
        }
    }
    out
}

/// Places `replicas[i]` pods of every service; returns the node of each, by service.
pub fn place(
    placer: Placer,
    replicas: &[u32],
    peers: &[Vec<(u32, f64)>],
    cluster: Cluster,
    extender_weight: f64,
    seed: u64,
) -> Result<Vec<Vec<u32>>, Error> {
    let total: u64 = replicas.iter().map(|r| u64::from(*r)).sum();
    let room = u64::from(cluster.nodes) * u64::from(cluster.pods_per_node);
    if cluster.nodes == 0 || total > room {
        return Err(Error::Invalid {
            field: "--nodes x --pods-per-node".into(),
            value: format!("{} x {} for {total} pods", cluster.nodes, cluster.pods_per_node),
            expected: "room for every pod",
        });
    }
    let nodes = cluster.nodes as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x91ace);
    // count[i][n]: replicas of service i on node n; used[n]: pods on n.
    let mut count = vec![vec![0u32; nodes]; replicas.len()];
    let mut used = vec![0u32; nodes];
    let mut placed: Vec<Vec<u32>> = replicas.iter().map(|r| Vec::with_capacity(*r as usize)).collect();
    let order: Vec<(usize, usize)> = (0..replicas.iter().copied().max().unwrap_or(0) as usize)
        .flat_map(|k| (0..replicas.len()).filter(move |&i| (replicas[i] as usize) > k).map(move |i| (i, k)))
        .collect();
    let weights = Weights::default();
    let mut choose = |i: usize, count: &[Vec<u32>], used: &[u32]| -> usize {
        let own = &count[i];
        let max_c = own.iter().copied().max().unwrap_or(0);
        let mut total: Vec<f64> = (0..nodes)
            .map(|n| {
                let least = 100.0 * f64::from(cluster.pods_per_node - used[n]) / f64::from(cluster.pods_per_node);
                let spread = if max_c == 0 { 100.0 } else { 100.0 * f64::from(max_c - own[n]) / f64::from(max_c) };
                least + 2.0 * spread
            })
            .collect();
        if placer == Placer::Derm {
            let candidates: Vec<Candidate> = (0..nodes)
                .map(|n| Candidate {
                    affinity: peers[i]
                        .iter()
                        .map(|&(j, r)| {
                            let all: u32 = count[j as usize].iter().sum();
                            if all == 0 { 0.0 } else { r * f64::from(count[j as usize][n]) / f64::from(all) }
                        })
                        .sum(),
                    here: own[n],
                    headroom: placement::headroom(used[n], Some(cluster.pods_per_node)),
                    planned_more: false,
                })
                .collect();
            let (scores, _) = placement::score(&candidates, own.iter().sum(), weights, false);
            for (t, s) in total.iter_mut().zip(scores) {
                *t += extender_weight * 10.0 * s.get() as f64;
            }
        }
        // Highest total among nodes with room; ties at random.
        let fits = |n: usize| used[n] < cluster.pods_per_node;
        let best = (0..nodes).filter(|&n| fits(n)).map(|n| total[n]).fold(f64::NEG_INFINITY, f64::max);
        let ties: Vec<usize> = (0..nodes).filter(|&n| fits(n) && total[n] >= best - 1e-9).collect();
        ties[rng.random_range(0..ties.len())]
    };
    for &(i, _) in &order {
        let n = choose(i, &count, &used);
        count[i][n] += 1;
        used[n] += 1;
        placed[i].push(n as u32);
    }
    // The rolling restart: each pod leaves and is scheduled again.
    for &(i, k) in &order {
        let old = placed[i][k] as usize;
        count[i][old] -= 1;
        used[old] -= 1;
        let n = choose(i, &count, &used);
        count[i][n] += 1;
        used[n] += 1;
        placed[i][k] = n as u32;
    }
    Ok(placed)
}

/// Settings of one study.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: Cluster,
    pub hop_ms: f64,
    /// Utilisation each service's replicas are sized for at its peak demand.
    pub utilisation: f64,
    pub extender_weight: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub seed: u64,
}

/// One placement under one routing mode.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub placement: Placer,
    /// Services route with `trafficDistribution: PreferSameNode`.
    pub prefer_same_node: bool,
    /// Share of container-to-container calls that crossed nodes.
    pub cross_node_share: f64,
    /// Quantiles of the E2E latency (unfinished requests count as infinite).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Requests started in the measured range that finished.
    pub requests: u64,
    pub unfinished: u64,
    /// Share of call traffic (by the published rates) between services on different nodes
    /// under uniform routing: `1 - sum_n share_i(n) share_j(n)`, rate-weighted.
    pub expected_cross_share: f64,
}

/// Everything a study produced.
#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub scenario: String,
    pub pods: u64,
    pub nodes: u32,
    pub pods_per_node: u32,
    pub hop_ms: f64,
    pub outcomes: Vec<Outcome>,
}

/// Replicas that keep every service at `utilisation` of its capacity at its peak demand over
/// `[0, duration_s)` (10 s grid).
pub fn static_replicas(app: &App, pattern: &Pattern, duration_s: f64, utilisation: f64) -> Vec<u32> {
    let mut peak = vec![0.0f64; app.services.len()];
    let steps = (duration_s / 10.0).ceil().max(1.0) as usize;
    for k in 0..=steps {
        let t = (k as f64 * 10.0).min(duration_s);
        let rps = pattern.rps(t);
        for (p, d) in peak.iter_mut().zip(app.demand(&app.mix(t, rps), rps)) {
            *p = p.max(d);
        }
    }
    app.replicas_for(&peak, utilisation)
}

/// Uniform-routing cross-node share of the published call traffic for a placement.
fn expected_cross(peers: &[Vec<(u32, f64)>], placed: &[Vec<u32>], nodes: usize) -> f64 {
    let shares: Vec<Vec<f64>> = placed
        .iter()
        .map(|on| {
            let mut s = vec![0.0; nodes];
            for n in on {
                s[*n as usize] += 1.0 / on.len() as f64;
            }
            s
        })
        .collect();
    let (mut total, mut local) = (0.0, 0.0);
    for (i, ps) in peers.iter().enumerate() {
        for &(j, r) in ps.iter().filter(|(j, _)| *j as usize > i) {
            total += r;
            local += r * shares[i].iter().zip(&shares[j as usize]).map(|(a, b)| a * b).sum::<f64>();
        }
    }
    if total > 0.0 { 1.0 - local / total } else { 0.0 }
}

/// Both placements, each simulated with uniform and same-node-preferring routing.
pub fn study(scenario: &Scenario, pattern: &Pattern, config: &Config) -> Result<Study, Error> {
    if !(config.hop_ms.is_finite() && config.hop_ms >= 0.0) {
        return Err(Error::Invalid { field: "--hop-ms".into(), value: config.hop_ms.to_string(), expected: ">= 0" });
    }
    let app = &scenario.app;
    let replicas = static_replicas(app, pattern, config.duration_s, config.utilisation);
    let mix = app.mean_mix(pattern, 0.0, config.duration_s);
    let steps = config.duration_s.ceil().max(1.0) as usize;
    let mean_rps = (0..steps).map(|k| pattern.rps(k as f64 + 0.5)).sum::<f64>() / steps as f64;
    let peers = peers(app, &mix, mean_rps);
    let placements = [Placer::Spread, Placer::Derm]
        .into_iter()
        .map(|p| {
            place(p, &replicas, &peers, config.cluster, config.extender_weight, config.seed).map(|nodes| (p, nodes))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runs: Vec<(Placer, bool, &Vec<Vec<u32>>)> =
        placements.iter().flat_map(|(p, nodes)| [(*p, false, nodes), (*p, true, nodes)]).collect();
    let outcomes = runs
        .into_par_iter()
        .map(|(placer, prefer_same_node, nodes)| {
            let engine_config = engine::Config {
                sampling: 0.0,
                startup_s: 0.0,
                seed: config.seed,
                origin_s: 0,
                start_s: -config.warmup_s,
                stop_s: config.duration_s,
                record_from_s: 0.0,
                window_s: config.duration_s,
            };
            let network = Network { hop_ms: config.hop_ms, prefer_same_node };
            let mut engine = Engine::placed(app, pattern, engine_config, nodes, network);
            engine.run_until(config.duration_s);
            engine.drain(config.duration_s + 120.0);
            let (same, cross) = engine.hops();
            let recorder = engine.finish();
            // Requests still unfinished 120 s after the run count as infinitely slow.
            let mut all: Vec<f32> = recorder.windows.into_iter().flatten().collect();
            let finished = all.len() as u64;
            all.extend(std::iter::repeat_n(f32::INFINITY, recorder.unfinished as usize));
            all.sort_by(f32::total_cmp);
            Outcome {
                placement: placer,
                prefer_same_node,
                cross_node_share: cross as f64 / (same + cross).max(1) as f64,
                p50_ms: quantile(&all, 0.5),
                p95_ms: quantile(&all, 0.95),
                p99_ms: quantile(&all, 0.99),
                requests: finished,
                unfinished: recorder.unfinished,
                expected_cross_share: expected_cross(&peers, nodes, config.cluster.nodes as usize),
            }
        })
        .collect();
    Ok(Study {
        scenario: app.name.clone(),
        pods: replicas.iter().map(|r| u64::from(*r)).sum(),
        nodes: config.cluster.nodes,
        pods_per_node: config.cluster.pods_per_node,
        hop_ms: config.hop_ms,
        outcomes,
    })
}

/// The study as a Markdown table.
pub fn markdown(s: &Study) -> String {
    let mut out = format!(
        "{}: {} pods on {} nodes of {} pods, {} ms per cross-node hop each way\n\n",
        s.scenario, s.pods, s.nodes, s.pods_per_node, s.hop_ms
    );
    out.push_str("| placement | routing | cross-node calls | P50 ms | P95 ms | P99 ms | requests | unfinished |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for o in &s.outcomes {
        out.push_str(&format!(
            "| {} | {} | {:.1}% | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            o.placement.as_str(),
            if o.prefer_same_node { "PreferSameNode" } else { "uniform" },
            100.0 * o.cross_node_share,
            o.p50_ms,
            o.p95_ms,
            o.p99_ms,
            o.requests,
            o.unfinished
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;
    use crate::sim::app::{Curve, RequestType, Service, ServiceTime};

    fn app(names: &[&str], graphs: Vec<Node>, workers: u32) -> App {
        let services = names
            .iter()
            .map(|n| Service {
                name: (*n).into(),
                l0_ms: 0.1,
                time: ServiceTime::Exponential { mean_ms: 1.0 },
                workers,
            })
            .collect();
        let types = (0..graphs.len())
            .map(|g| RequestType {
                name: format!("t{g}"),
                weight: Curve::flat(1.0),
                load_exponent: 0.0,
                argument: None,
                graphs: vec![[g, g]],
            })
            .collect();
        App::new("test", services, graphs, types, f64::INFINITY, 1.0).unwrap()
    }

    fn engine_config(stop_s: f64) -> engine::Config {
        engine::Config {
            sampling: 0.0,
            startup_s: 0.0,
            seed: 7,
            origin_s: 0,
            start_s: 0.0,
            stop_s,
            record_from_s: 0.0,
            window_s: stop_s,
        }
    }

    #[test]
    fn affinity_placement_lowers_cross_node_calls() {
        // a calls b and c calls d, each pair at 10 calls/s; 2 replicas each; 4 nodes of 3 pods.
        let app = app(
            &["a", "b", "c", "d"],
            vec![Node::leaf("a").then(Node::leaf("b")), Node::leaf("c").then(Node::leaf("d"))],
            1,
        );
        let pattern = Pattern::Constant { rps: 20.0 };
        let peers = peers(&app, &app.mix(0.0, 20.0), 20.0);
        assert_eq!(peers[0], vec![(1, 10.0)]);
        assert_eq!(peers[3], vec![(2, 10.0)]);
        let cluster = Cluster { nodes: 4, pods_per_node: 3 };
        let (mut spread_cross, mut derm_cross) = (0.0, 0.0);
        for seed in 0..8 {
            let spread = place(Placer::Spread, &[2; 4], &peers, cluster, 5.0, seed).unwrap();
            let derm = place(Placer::Derm, &[2; 4], &peers, cluster, 5.0, seed).unwrap();
            for placed in [&spread, &derm] {
                // Topology spread holds for both: one replica of a service per node.
                assert!(placed.iter().all(|on| on[0] != on[1]), "{placed:?}");
            }
            // Derm puts every b next to an a and every d next to a c.
            let mut a = derm[0].clone();
            let mut b = derm[1].clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "seed {seed}: {derm:?}");
            for (placed, total) in [(&spread, &mut spread_cross), (&derm, &mut derm_cross)] {
                let network = Network { hop_ms: 0.5, prefer_same_node: true };
                let mut e = Engine::placed(&app, &pattern, engine_config(50.0), placed, network);
                e.run_until(50.0);
                let (same, cross) = e.hops();
                assert!(same + cross > 500, "{same} {cross}");
                *total += cross as f64 / (same + cross) as f64;
            }
        }
        assert_eq!(derm_cross, 0.0, "co-located pairs never cross with PreferSameNode");
        let spread_cross = spread_cross / 8.0;
        eprintln!("spreading: {spread_cross:.3} of calls cross nodes on average");
        assert!(spread_cross > 0.25, "spreading leaves calls crossing nodes: {spread_cross}");
        // Too little room is an error, not a panic.
        assert!(place(Placer::Derm, &[2; 4], &peers, Cluster { nodes: 3, pods_per_node: 2 }, 5.0, 0).is_err());
    }

    #[test]
    fn hop_cost_adds_latency_only_to_cross_node_calls() {
        // One a -> b call per request; enough workers that no call waits, so a request's latency
        // is its delays and service times, and the same service times are drawn whatever the
        // network: the latencies differ exactly by the hops.
        let app = app(&["a", "b"], vec![Node::leaf("a").then(Node::leaf("b"))], 1_000);
        let pattern = Pattern::Constant { rps: 1.0 };
        let run = |nodes: &[Vec<u32>], hop_ms: f64| {
            let network = Network { hop_ms, prefer_same_node: false };
            let mut e = Engine::placed(&app, &pattern, engine_config(300.0), nodes, network);
            e.run_until(300.0);
            e.drain(400.0);
            let hops = e.hops();
            let rec = e.finish();
            (rec.windows.concat(), hops)
        };
        let same = vec![vec![0], vec![0]];
        let apart = vec![vec![0], vec![1]];
        let (base, base_hops) = run(&same, 0.0);
        assert!(base.len() > 200, "{}", base.len());
        let (same_hop, same_hops) = run(&same, 5.0);
        assert_eq!(same_hop, base, "no cross-node call, no cost");
        assert_eq!(same_hops, (base.len() as u64, 0));
        assert_eq!(base_hops, same_hops);
        let (cross, cross_hops) = run(&apart, 5.0);
        assert_eq!(cross_hops, (0, base.len() as u64));
        assert_eq!(cross.len(), base.len());
        let mean = |xs: &[f32]| xs.iter().map(|x| f64::from(*x)).sum::<f64>() / xs.len() as f64;
        let extra = mean(&cross) - mean(&base);
        assert!((extra - 10.0).abs() < 1e-3, "one cross-node call costs 2 x 5 ms: got {extra}");
        let fastest = |xs: &[f32]| xs.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(fastest(&cross) >= 10.2 && fastest(&base) < 10.0, "hops delay every request");
    }
}
