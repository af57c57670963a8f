//! A large synthetic application with the statistics of Alibaba's 2021 microservice traces,
//! generated from a fixed seed (the application is the same for every run seed).
//!
//! - 30 graph types (request types) over a pool of 1,500 services; each graph is a random
//!   series-parallel tree (a call joins its parent's last stage with probability 0.4, else
//!   opens a new stage) whose size is heavy-tailed: `min(150, floor(4 U^(-1/1.3)))`, at least 3.
//!   Services are drawn with Zipf(0.8) popularity over the pool, so hub services (caches,
//!   databases) are shared by many graphs; only services that some graph calls are kept.
//! - Popularity: Zipf(1.1) over types; each type's weight drifts by up to 30% (sine, period
//!   15-50 min, random phase) and scales with `(load / peak)^beta`, `beta` from -0.5 for the
//!   smallest graphs to 1.5 for the largest (shape positively correlated with load).
//! - Every third type with more than 10 calls has a high-load variant without its root's last
//!   stage, taken above 90% of peak load (degraded mode).
//! - Services: mean service time lognormal with median 30 ms (sigma 0.8, clamped to 3-300 ms),
//!   `l0` uniform in 0.1-1.5 ms; 70% one worker, 20% two, 10% four; 10% lognormal service
//!   times (cv 1.5).
//! - Load: diurnal 130-400 requests/s, one cycle per hour; sampling 0.05.
//!
//! Time scale: Alibaba's calls take a few ms at thousands of requests/s. Here service times
//! are about 10x longer and the entry rate about 10x lower, which keeps the work per service
//! relative to one container (what autoscaling is about: busy services need tens of
//! containers, the long tail one) while an hour simulates in seconds.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::app::{App, Curve, RequestType, Service, ServiceTime};
use super::super::{Error, Pattern};
use super::Scenario;
use crate::graph::Node;

const APP_SEED: u64 = 2021;
const POOL: usize = 1_500;
const TYPES: usize = 30;
pub const PEAK_RPS: f64 = 400.0;
pub const TROUGH_RPS: f64 = 130.0;

fn zipf_pick(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
    let u = rng.random::<f64>() * cdf[cdf.len() - 1];
    cdf.partition_point(|c| *c <= u).min(cdf.len() - 1)
}

/// A random series-parallel tree of `size` calls rooted at `root`.
fn tree(rng: &mut ChaCha8Rng, root: usize, size: usize, cdf: &[f64]) -> Node {
    // (service, parent, stage) per node; stage numbers per parent.
    let mut nodes: Vec<(usize, usize, usize)> = vec![(root, usize::MAX, 0)];
    let mut stages: Vec<usize> = vec![0];
    for _ in 1..size {
        let parent = rng.random_range(0..nodes.len());
        let mut svc = zipf_pick(rng, cdf);
        while svc == nodes[parent].0 {
            svc = zipf_pick(rng, cdf);
        }
        let stage = if stages[parent] > 0 && rng.random::<f64>() < 0.4 {
            stages[parent]
        } else {
            stages[parent] += 1;
            stages[parent]
        };
        nodes.push((svc, parent, stage));
        stages.push(0);
    }
    build(&nodes, 0)
}

fn build(nodes: &[(usize, usize, usize)], at: usize) -> Node {
    let mut by_stage: BTreeMap<usize, Vec<Node>> = BTreeMap::new();
    for (i, (_, parent, stage)) in nodes.iter().enumerate() {
        if *parent == at && i != at {
            by_stage.entry(*stage).or_default().push(build(nodes, i));
        }
    }
    Node { service: name(nodes[at].0), stages: by_stage.into_values().collect() }
}

fn name(i: usize) -> String {
    format!("ms-{i:04}")
}

pub fn scenario() -> Result<Scenario, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(APP_SEED);
    // Service popularity: Zipf(0.8) over the pool, entries excluded (the first 8 ids).
    let entries = 8;
    let mut cdf = Vec::with_capacity(POOL - entries);
    let mut acc = 0.0;
    for k in 0..POOL - entries {
        acc += 1.0 / ((k + 1) as f64).powf(0.8);
        cdf.push(acc);
    }
    let mut graphs: Vec<Node> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut sizes = Vec::new();
    while graphs.len() < TYPES {
        let u: f64 = rng.random_range(1e-6..1.0);
        let size = ((4.0 * u.powf(-1.0 / 1.3)).floor() as usize).clamp(3, 150);
        let root = rng.random_range(0..entries);
        let mut g = tree(&mut rng, 0, size, &cdf);
        // Pool ids: entries first, then the popular services.
        relabel(&mut g, root, entries);
        let g = g.canonical();
        if seen.insert(g.id()) {
            graphs.push(g);
            sizes.push(size);
        }
    }
    // Rank sizes for the load exponent.
    let mut order: Vec<usize> = (0..TYPES).collect();
    order.sort_by_key(|i| (sizes[*i], *i));
    let mut rank = vec![0.0; TYPES];
    for (r, i) in order.iter().enumerate() {
        rank[*i] = r as f64 / (TYPES - 1) as f64;
    }
    let mut types = Vec::new();
    let mut all = graphs.clone();
    for (k, g) in graphs.iter().enumerate() {
        let base = 1.0 / ((k + 1) as f64).powf(1.1);
        let period = rng.random_range(900.0..3000.0);
        let phase = rng.random_range(0.0..period);
        let high = if k % 3 == 0 && g.size() > 10 && g.stages.len() > 1 {
            let mut simple = g.clone();
            simple.stages.pop();
            let simple = simple.canonical();
            all.push(simple);
            all.len() - 1
        } else {
            k
        };
        types.push(RequestType {
            name: format!("type-{k:02}"),
            weight: Curve { base, amplitude: 0.3 * base, period_s: period, phase_s: phase },
            load_exponent: -0.5 + 2.0 * rank[k],
            argument: None,
            graphs: vec![[k, high]],
        });
    }
    let mut used = BTreeSet::new();
    for g in &all {
        g.walk(&mut |n| {
            used.insert(n.service.clone());
        });
    }
    let services = used
        .into_iter()
        .map(|name| {
            let mean = (30.0f64.ln() + 0.8 * normal(&mut rng)).exp().clamp(3.0, 300.0);
            let l0 = rng.random_range(0.1..1.5);
            let u: f64 = rng.random();
            let workers = if u < 0.7 {
                1
            } else if u < 0.9 {
                2
            } else {
                4
            };
            let time = if rng.random::<f64>() < 0.1 {
                ServiceTime::LogNormal { mean_ms: mean, cv: 1.5 }
            } else {
                ServiceTime::Exponential { mean_ms: mean }
            };
            Service { name, l0_ms: l0, time, workers }
        })
        .collect();
    let app = App::new("alibaba", services, all, types, 0.9 * PEAK_RPS, PEAK_RPS)?;
    let pattern = Pattern::Diurnal { min_rps: TROUGH_RPS, max_rps: PEAK_RPS, period_s: 3600.0, phase_s: 0.0 };
    Scenario::new(app, pattern, 0.05, Vec::new())
}

/// Map tree-local service ids to pool names: the root becomes entry `root`, other services
/// are shifted past the entries.
fn relabel(node: &mut Node, root: usize, entries: usize) {
    fn go(node: &mut Node, entries: usize) {
        for c in node.stages.iter_mut().flatten() {
            let id: usize = c.service[3..].parse().unwrap_or(0);
            c.service = name(id + entries);
            go(c, entries);
        }
    }
    node.service = name(root);
    go(node, entries);
}

/// Standard normal by Box-Muller (keeps the generator free of extra distributions).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(1e-12..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
