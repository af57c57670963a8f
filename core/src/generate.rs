//! Synthetic traces with known parameters: the ground truth for profiling tests, decoder
//! benchmarks and demos (the full discrete-event simulator is `sim`).
//!
//! Requests arrive as a Poisson process, one load level after another. Each request's graph
//! is drawn from a mix that shifts linearly with load; each call's exclusive latency is drawn
//! from the model itself, `l0 + Exp(a * w + b)`, with `w` the service's true per-container
//! load at that level. Only sampled requests are emitted (thinning the Poisson process), and
//! their root spans carry `sampler.type=probabilistic` and `sampler.param`.

pub mod instance;

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

use crate::graph::Node;
use crate::trace::{Config, Parent, RefKind, Span, Trace};

/// A service's true parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub l0_ms: f64,
    pub a: f64,
    pub b: f64,
    pub containers: u32,
}

impl Service {
    pub fn rate(&self, w_rps: f64) -> f64 {
        self.a * w_rps + self.b
    }
}

/// A graph whose share moves linearly from `share_low` at the lowest load level to
/// `share_high` at the highest (shares are renormalised at every level).
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub root: Node,
    pub share_low: f64,
    pub share_high: f64,
}

/// A generated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub services: Vec<Service>,
    pub graphs: Vec<Graph>,
    /// Entry load per level, requests/s, in time order.
    pub levels_rps: Vec<f64>,
    pub level_s: u32,
    pub sampling: f64,
    /// Root tag `distance`, drawn uniformly from 1..=max_distance (0: no tag).
    pub max_distance: u32,
    pub seed: u64,
}

impl Scenario {
    /// Seven services, a simple and a complex graph (with a parallel stage), ten load levels
    /// from 40 to 220 requests/s of four minutes each, sampling 0.1. Every service's capacity
    /// is 1.6 times its highest per-container load.
    pub fn acceptance(seed: u64) -> Self {
        let simple = Node::leaf("frontend").then(Node::leaf("auth")).then(Node::chain(["ticket", "route"]));
        let complex = Node::leaf("frontend")
            .then(Node::leaf("auth"))
            .then(Node::leaf("ticket").with_parallel([Node::leaf("route"), Node::leaf("seat"), Node::leaf("price")]))
            .then(Node::leaf("order"));
        let graphs = vec![
            Graph { root: simple, share_low: 0.8, share_high: 0.5 },
            Graph { root: complex, share_low: 0.2, share_high: 0.5 },
        ];
        let spec = [
            ("frontend", 1.0, 0.9, 2),
            ("auth", 0.5, 1.2, 1),
            ("ticket", 2.0, 0.6, 2),
            ("route", 1.5, 0.8, 1),
            ("seat", 0.8, 1.0, 1),
            ("price", 0.3, 1.5, 1),
            ("order", 3.0, 0.4, 1),
        ];
        let levels_rps: Vec<f64> = (0..10).map(|k| 40.0 + 20.0 * k as f64).collect();
        let mut scenario = Scenario {
            services: spec
                .iter()
                .map(|(n, l0, b, c)| Service { name: (*n).into(), l0_ms: *l0, a: 0.0, b: *b, containers: *c })
                .collect(),
            graphs,
            levels_rps,
            level_s: 240,
            sampling: 0.1,
            max_distance: 6,
            seed,
        };
        for i in 0..scenario.services.len() {
            let w_max = (0..scenario.levels_rps.len()).map(|k| scenario.per_container_rps(k)[i]).fold(0.0, f64::max);
            let s = &mut scenario.services[i];
            s.a = -s.b / (1.6 * w_max);
        }
        scenario
    }

    /// The same application scaled out `factor` times: `factor` times the load on `factor` times
    /// the containers, so every per-container load (and hence every latency) is unchanged and
    /// only the number of requests per window grows.
    pub fn scaled_out(mut self, factor: u32) -> Self {
        for w in &mut self.levels_rps {
            *w *= f64::from(factor);
        }
        for s in &mut self.services {
            s.containers *= factor;
        }
        self
    }

    /// Graph shares at level `k`.
    pub fn mix(&self, k: usize) -> Vec<f64> {
        let n = self.levels_rps.len().max(2) - 1;
        let x = (k as f64 / n as f64).clamp(0.0, 1.0);
        let raw: Vec<f64> = self.graphs.iter().map(|g| g.share_low + (g.share_high - g.share_low) * x).collect();
        let total: f64 = raw.iter().sum();
        raw.into_iter().map(|r| r / total).collect()
    }

    /// True per-container load of every service (in `services` order) at level `k`.
    pub fn per_container_rps(&self, k: usize) -> Vec<f64> {
        let mix = self.mix(k);
        let mut calls: BTreeMap<&str, f64> = BTreeMap::new();
        for (g, share) in self.graphs.iter().zip(&mix) {
            for (svc, n) in g.root.calls() {
                *calls.entry(svc).or_insert(0.0) += share * f64::from(n);
            }
        }
        self.services
            .iter()
            .map(|s| self.levels_rps[k] * calls.get(s.name.as_str()).copied().unwrap_or(0.0) / f64::from(s.containers))
            .collect()
    }

    /// Generate all sampled traces, in time order, starting at Unix time `origin_s`.
    pub fn traces(&self, origin_s: i64) -> Vec<Trace> {
        let mut out = Vec::new();
        self.generate(origin_s, &mut |t| out.push(t));
        out
    }

    /// Stream the sampled traces to `sink`.
    pub fn generate(&self, origin_s: i64, sink: &mut dyn FnMut(Trace)) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let index: BTreeMap<&str, usize> =
            self.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut next_id: u64 = 1;
        for (k, &load) in self.levels_rps.iter().enumerate() {
            let mix = self.mix(k);
            let w = self.per_container_rps(k);
            let exps: Vec<Option<Exp<f64>>> =
                self.services.iter().zip(&w).map(|(s, w)| Exp::new(s.rate(*w)).ok()).collect();
            let level_start = (origin_s + k as i64 * i64::from(self.level_s)) as f64 * 1e6;
            let level_end = level_start + f64::from(self.level_s) * 1e6;
            let Ok(gap) = Exp::new(load * self.sampling / 1e6) else {
                continue;
            };
            let mut t = level_start + gap.sample(&mut rng);
            while t < level_end {
                let g = pick(&mix, rng.random::<f64>());
                let mut b = TraceBuilder {
                    spans: Vec::new(),
                    next_id: &mut next_id,
                    rng: &mut rng,
                    scenario: self,
                    index: &index,
                    exps: &exps,
                };
                b.call(&self.graphs[g].root, t as i64, None);
                let mut spans = b.spans;
                if let Some(root) = spans.first_mut() {
                    root.tags.push((Config::SAMPLER_TYPE.into(), "probabilistic".into()));
                    root.tags.push((Config::SAMPLER_PARAM.into(), self.sampling.to_string()));
                    if self.max_distance > 0 {
                        let d = rng.random_range(1..=self.max_distance);
                        root.tags.push(("distance".into(), d.to_string()));
                    }
                }
                let id = format!("{:032x}", spans.first().map(|s| s.id).unwrap_or(0));
                sink(Trace { id, spans });
                t += gap.sample(&mut rng);
            }
        }
    }
}

fn pick(shares: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if u < acc {
            return i;
        }
    }
    shares.len().saturating_sub(1)
}

struct TraceBuilder<'a> {
    spans: Vec<Span>,
    next_id: &'a mut u64,
    rng: &'a mut ChaCha8Rng,
    scenario: &'a Scenario,
    index: &'a BTreeMap<&'a str, usize>,
    exps: &'a [Option<Exp<f64>>],
}

impl TraceBuilder<'_> {
    /// Emit the spans of `node` starting at `start_us`; returns the span's end.
    fn call(&mut self, node: &Node, start_us: i64, parent: Option<u64>) -> i64 {
        let id = *self.next_id;
        *self.next_id += 1;
        let slot = self.spans.len();
        let (own_us, container) = match self.index.get(node.service.as_str()) {
            Some(&i) => {
                let s = &self.scenario.services[i];
                let x = s.l0_ms + self.exps[i].map(|e| e.sample(&mut *self.rng)).unwrap_or(1e3);
                let c = self.rng.random_range(0..s.containers.max(1));
                ((x * 1000.0).round() as i64, format!("{}-{c}", s.name))
            }
            None => (1000, format!("{}-0", node.service)),
        };
        self.spans.push(Span {
            id,
            parent: parent.map(|p| Parent { id: p, kind: RefKind::ChildOf }),
            service: node.service.clone(),
            start_us,
            duration_us: 0,
            container: Some(container),
            tags: Vec::new(),
        });
        // Own work is split around the calls: a random part before, the rest after.
        let before = (own_us as f64 * self.rng.random::<f64>()).round() as i64;
        let mut t = start_us + before;
        for stage in &node.stages {
            let mut end = t;
            for child in stage {
                end = end.max(self.call(child, t, Some(id)));
            }
            t = end;
        }
        let end = t + (own_us - before);
        self.spans[slot].duration_us = end - start_us;
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_scenario_is_stable_and_below_capacity() {
        let s = Scenario::acceptance(1);
        for k in 0..s.levels_rps.len() {
            for (svc, w) in s.services.iter().zip(s.per_container_rps(k)) {
                assert!(svc.rate(w) > 0.0, "{} overloaded at level {k}", svc.name);
            }
            let mix = s.mix(k);
            assert!((mix.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn scaling_out_keeps_per_container_load() {
        let s = Scenario::acceptance(1);
        let big = s.clone().scaled_out(8);
        for k in 0..s.levels_rps.len() {
            assert_eq!(big.levels_rps[k], 8.0 * s.levels_rps[k]);
            for (a, b) in s.per_container_rps(k).iter().zip(big.per_container_rps(k)) {
                assert!((a - b).abs() < 1e-12 * a, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn spans_nest_inside_parents() {
        let mut s = Scenario::acceptance(2);
        s.levels_rps = vec![50.0];
        s.level_s = 20;
        let traces = s.traces(0);
        assert!(!traces.is_empty());
        for t in &traces {
            let by_id: BTreeMap<u64, &Span> = t.spans.iter().map(|s| (s.id, s)).collect();
            for span in &t.spans {
                if let Some(p) = span.parent {
                    let parent = by_id[&p.id];
                    assert!(span.start_us >= parent.start_us);
                    assert!(span.start_us + span.duration_us <= parent.start_us + parent.duration_us);
                }
            }
        }
    }
}
