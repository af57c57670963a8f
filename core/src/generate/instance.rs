//! Random optimisation instances: profiles and heavy-tailed mixes of random series-parallel
//! graphs, for tests and benchmarks of the latency evaluator and the optimizer.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::graph::Node;
use crate::graph::catalog::Entry;
use crate::optimize::Input;
use crate::profile::{Profile, Profiles};

/// Shape of a random instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub services: usize,
    pub graphs: usize,
    /// Calls per graph, inclusive range.
    pub graph_size: (usize, usize),
    /// Probability that a call joins its parent's last stage (parallel) instead of opening a
    /// new stage.
    pub parallel: f64,
    pub seed: u64,
}

/// A generated instance: profiles, graphs with Zipf shares, and an SLA that binds.
#[derive(Debug, Clone)]
pub struct Instance {
    pub profiles: Profiles,
    pub graphs: Vec<Entry>,
    pub sla_ms: f64,
}

impl Instance {
    /// The optimizer's input for this instance at `load_rps`, with the settings the benchmark
    /// and `derm solve`'s defaults use: P95, graphs below a 2% share left out of the
    /// constraint, no replica bounds, containers at most 90% busy.
    pub fn input(&self, load_rps: f64) -> Input<'_> {
        Input {
            profiles: &self.profiles,
            graphs: &self.graphs,
            load_rps,
            sla_ms: self.sla_ms,
            percentile: 0.95,
            rare_threshold: 0.02,
            bounds: BTreeMap::new(),
            max_utilization: 0.9,
        }
    }
}

/// The optimizer benchmark's instances (`cargo bench --bench optimize`, `derm generate
/// --instance`): name, shape and total load (requests/s).
pub fn benchmarks() -> [(&'static str, Spec, f64); 3] {
    [
        ("50svc_5graphs", Spec { services: 50, graphs: 5, graph_size: (10, 30), parallel: 0.3, seed: 1 }, 1_000.0),
        ("400svc_1graph", Spec { services: 400, graphs: 1, graph_size: (400, 400), parallel: 0.3, seed: 2 }, 1_000.0),
        (
            "2500svc_40graphs",
            Spec { services: 2_500, graphs: 40, graph_size: (20, 400), parallel: 0.3, seed: 3 },
            20_000.0,
        ),
    ]
}

/// A random profile: l0 0.2-3 ms, zero-load mean 0.5-5 ms, capacity 50-500 req/s.
pub fn profile(rng: &mut impl Rng) -> Profile {
    let b = 1.0 / rng.random_range(0.5..5.0);
    let cap = rng.random_range(50.0..500.0);
    Profile::line(rng.random_range(0.2..3.0), -b / cap, b, cap)
}

/// A random series-parallel tree of `size` calls over `services` (the root is `services[0]`).
pub fn graph(rng: &mut impl Rng, services: &[String], size: usize, parallel: f64) -> Node {
    // Build as parent links with stage numbers, then assemble.
    let mut nodes: Vec<(String, Option<usize>, usize)> = vec![(services[0].clone(), None, 0)];
    let mut last_stage: Vec<usize> = vec![0];
    let mut stages: Vec<usize> = vec![0];
    // Distinct services while they last (partial Fisher-Yates), then repeats.
    let mut pool: Vec<usize> = (1..services.len()).collect();
    for k in 1..size.max(1) {
        let parent = rng.random_range(0..nodes.len());
        let svc = if k <= pool.len() {
            let j = rng.random_range(k - 1..pool.len());
            pool.swap(k - 1, j);
            services[pool[k - 1]].clone()
        } else {
            services[rng.random_range(1..services.len().max(2)).min(services.len() - 1)].clone()
        };
        let stage = if stages[parent] > 0 && rng.random::<f64>() < parallel {
            last_stage[parent]
        } else {
            stages[parent] += 1;
            last_stage[parent] = stages[parent];
            stages[parent]
        };
        nodes.push((svc, Some(parent), stage));
        last_stage.push(0);
        stages.push(0);
    }
    build(&nodes, 0).canonical()
}

fn build(nodes: &[(String, Option<usize>, usize)], at: usize) -> Node {
    let mut by_stage: BTreeMap<usize, Vec<Node>> = BTreeMap::new();
    for (i, (_, parent, stage)) in nodes.iter().enumerate() {
        if *parent == Some(at) {
            by_stage.entry(*stage).or_default().push(build(nodes, i));
        }
    }
    Node { service: nodes[at].0.clone(), stages: by_stage.into_values().collect() }
}

/// Critical path of zero-load means plus shifts: a yardstick for choosing SLAs.
pub fn critical_path_ms(node: &Node, profiles: &Profiles) -> f64 {
    let own = profiles.services.get(&node.service).map(|p| p.l0_ms + 1.0 / p.b).unwrap_or(0.0);
    own + node.stages.iter().map(|s| s.iter().map(|n| critical_path_ms(n, profiles)).fold(0.0, f64::max)).sum::<f64>()
}

impl Spec {
    /// Generate. Shares follow Zipf(1) over graphs; the SLA is 2.5 times the longest
    /// zero-load critical path, so that the constraint binds well below saturation.
    pub fn generate(&self) -> Instance {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let names: Vec<String> = (0..self.services.max(2)).map(|i| format!("s{i:04}")).collect();
        let mut profiles = Profiles::default();
        for n in &names {
            profiles.services.insert(n.clone(), profile(&mut rng));
        }
        let zipf: Vec<f64> = (1..=self.graphs.max(1)).map(|k| 1.0 / k as f64).collect();
        let total: f64 = zipf.iter().sum();
        let mut graphs = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let (lo, hi) = self.graph_size;
        while graphs.len() < self.graphs.max(1) {
            let size = rng.random_range(lo.max(1)..=hi.max(lo.max(1)));
            let root = graph(&mut rng, &names, size, self.parallel);
            let id = root.id();
            if !seen.insert(id.clone()) {
                continue;
            }
            let share = zipf[graphs.len()] / total;
            graphs.push(Entry { id, share, count: 0, root });
        }
        let sla_ms = 2.5 * graphs.iter().map(|g| critical_path_ms(&g.root, &profiles)).fold(0.0, f64::max);
        Instance { profiles, graphs, sla_ms }
    }
}
