//! Fixtures shared by the `latency_*` tests (included with `#[path]`; as a target of its own it
//! has no tests): seeded random chains and series-parallel graphs with realistic parameters,
//! a Monte Carlo sampler of the model, and a quantile finder.
#![allow(dead_code)]

use derm_core::graph::Node;
use derm_core::latency::{Compiled, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Service `s<i>` has index `i`.
pub fn index(name: &str) -> Option<usize> {
    name.strip_prefix('s')?.parse().ok()
}

pub fn name(i: usize) -> String {
    format!("s{i}")
}

/// Realistic parameters: `l0` in 0.1..5 ms, mean of the exponential in 1..20 ms.
pub fn realistic_params(rng: &mut impl Rng, n: usize) -> Vec<Params> {
    (0..n)
        .map(|_| Params { l0_ms: rng.random_range(0.1..5.0), rate_per_ms: 1.0 / rng.random_range(1.0..20.0) })
        .collect()
}

/// A random series-parallel graph of `size` calls on `services` services (repeats allowed):
/// nodes are added one by one under a random node of depth below `max_depth`, either as a new
/// sequential stage or as one more parallel call in an existing stage of at most `max_fanout`.
pub fn random_graph(rng: &mut impl Rng, size: usize, services: usize, max_fanout: usize, max_depth: usize) -> Node {
    struct Arena {
        service: usize,
        depth: usize,
        stages: Vec<Vec<usize>>,
    }
    let mut nodes = vec![Arena { service: 0, depth: 0, stages: Vec::new() }];
    while nodes.len() < size {
        let parent = loop {
            let p = rng.random_range(0..nodes.len());
            if nodes[p].depth < max_depth {
                break p;
            }
        };
        let child = nodes.len();
        let service = rng.random_range(0..services);
        nodes.push(Arena { service, depth: nodes[parent].depth + 1, stages: Vec::new() });
        let stages = &mut nodes[parent].stages;
        let open: Vec<usize> = (0..stages.len()).filter(|&s| stages[s].len() < max_fanout).collect();
        if open.is_empty() || rng.random_bool(0.4) {
            stages.push(vec![child]);
        } else {
            stages[open[rng.random_range(0..open.len())]].push(child);
        }
    }
    fn build(nodes: &[Arena], i: usize) -> Node {
        Node {
            service: name(nodes[i].service),
            stages: nodes[i].stages.iter().map(|s| s.iter().map(|&c| build(nodes, c)).collect()).collect(),
        }
    }
    build(&nodes, 0)
}

/// A chain of the given services (a nested chain: each calls the next).
pub fn chain(services: &[usize]) -> Node {
    Node::chain(services.iter().map(|&i| name(i)))
}

pub fn compile(g: &Node) -> Compiled {
    Compiled::new(g, index).expect("fixture services are indexed")
}

/// One draw of the model's E2E latency.
pub fn sample(node: &Node, params: &[Params], rng: &mut impl Rng) -> f64 {
    let p = params[index(&node.service).expect("indexed")];
    let u: f64 = rng.random();
    let mut z = p.l0_ms - (1.0 - u).ln() / p.rate_per_ms;
    for stage in &node.stages {
        z += stage.iter().map(|c| sample(c, params, rng)).fold(f64::NEG_INFINITY, f64::max);
    }
    z
}

/// Share of `n` seeded draws with `Z <= t`.
pub fn monte_carlo(node: &Node, params: &[Params], t: f64, n: usize, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hits = (0..n).filter(|_| sample(node, params, &mut rng) <= t).count();
    hits as f64 / n as f64
}

/// The `p`-quantile of the evaluator's distribution, by bisection.
pub fn quantile(c: &Compiled, params: &[Params], p: f64) -> f64 {
    let mut lo = c.min_latency_ms(params);
    let mut hi = lo + 1.0;
    while c.cdf(params, hi) < p {
        hi = lo + 2.0 * (hi - lo);
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if c.cdf(params, mid) < p { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

/// The benchmark's 400-call graph over 400 distinct services: a random recursive tree (each
/// call under a uniformly chosen earlier call, depth up to 12) where a call joins an existing
/// stage (up to 4 parallel calls) with probability 0.6, else opens a new sequential stage.
pub fn sp_benchmark_graph(rng: &mut impl Rng) -> Node {
    let mut g = random_graph(rng, 400, 400, 4, 12);
    // Distinct services: renumber calls in pre-order.
    let mut next = 0;
    fn renumber(n: &mut Node, next: &mut usize) {
        n.service = name(*next);
        *next += 1;
        for s in &mut n.stages {
            for c in s {
                renumber(c, next);
            }
        }
    }
    renumber(&mut g, &mut next);
    g
}
