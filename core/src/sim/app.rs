//! The ground truth of a simulated application: services (containers' service-time law,
//! worker threads, fixed delay), call graphs, request types with time-varying shares and
//! arguments, and the function that picks a request's graph from its type, its argument and
//! the current load.
//!
//! Everything here is deterministic: the simulator draws from these distributions, the
//! `derm-oracle` policy and `static-peak` read them directly.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use super::Error;
use crate::graph::Node;

/// Law of a container's service time (the time a worker is busy with one call).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    Exponential {
        mean_ms: f64,
    },
    /// Lognormal with this mean and coefficient of variation: the model-mismatch case.
    LogNormal {
        mean_ms: f64,
        cv: f64,
    },
}

impl ServiceTime {
    pub fn mean_ms(&self) -> f64 {
        match *self {
            ServiceTime::Exponential { mean_ms } | ServiceTime::LogNormal { mean_ms, .. } => mean_ms,
        }
    }
}

/// One microservice as the simulator runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// Fixed network and processing delay of every call, ms, spent before the call queues
    /// (no worker held). Must be >= 0.01 ms so that spans last at least 10 us.
    pub l0_ms: f64,
    pub time: ServiceTime,
    /// Worker threads per container (a FIFO queue in front of them).
    pub workers: u32,
}

impl Service {
    /// Calls per second one container can serve at full utilisation.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.workers) * 1000.0 / self.time.mean_ms()
    }
}

/// `base + amplitude * sin(2 pi (t - phase_s) / period_s)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    pub base: f64,
    pub amplitude: f64,
    pub period_s: f64,
    pub phase_s: f64,
}

impl Curve {
    pub const fn flat(base: f64) -> Self {
        Curve { base, amplitude: 0.0, period_s: 1.0, phase_s: 0.0 }
    }

    pub fn at(&self, t_s: f64) -> f64 {
        if self.amplitude == 0.0 {
            return self.base;
        }
        self.base + self.amplitude * (2.0 * PI * (t_s - self.phase_s) / self.period_s).sin()
    }
}

/// A request argument with discrete values: `P(value k) ∝ ratio(t)^k` (geometric), so a
/// ratio that drifts over time moves the argument distribution (e.g. longer journeys).
#[derive(Debug, Clone, PartialEq)]
pub struct Argument {
    /// Root span tag that carries it (e.g. `distance`).
    pub tag: String,
    pub values: Vec<String>,
    pub ratio: Curve,
}

impl Argument {
    /// Probabilities of the values at time `t_s`.
    pub fn weights(&self, t_s: f64) -> Vec<f64> {
        let r = self.ratio.at(t_s).clamp(1e-6, 1e6);
        let raw: Vec<f64> = (0..self.values.len()).map(|k| r.powi(k as i32)).collect();
        let total: f64 = raw.iter().sum();
        raw.into_iter().map(|x| x / total).collect()
    }
}

/// A kind of request (an API): its share, its argument and its graphs.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestType {
    pub name: String,
    /// Relative weight over time (clamped at 0).
    pub weight: Curve,
    /// Weight multiplied by `(rps / peak_rps)^load_exponent`: types that grow with load.
    pub load_exponent: f64,
    pub argument: Option<Argument>,
    /// Graph index per argument value (one entry without an argument): `[normal, high load]`.
    pub graphs: Vec<[usize; 2]>,
}

/// A call graph compiled for the simulator: nodes in pre-order, stages as index ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    pub nodes: Vec<FlatNode>,
    /// `(start, end)` ranges into `children`, per stage.
    pub stages: Vec<(u32, u32)>,
    pub children: Vec<u32>,
}

/// One call of a [`Flat`] graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlatNode {
    pub service: u32,
    /// This node's stages: `stages[first_stage .. first_stage + stage_count]`.
    pub first_stage: u32,
    pub stage_count: u32,
}

impl Flat {
    fn compile(root: &Node, index: &BTreeMap<&str, u32>) -> Self {
        let mut flat = Flat { nodes: Vec::new(), stages: Vec::new(), children: Vec::new() };
        flat.add(root, index);
        flat
    }

    fn add(&mut self, node: &Node, index: &BTreeMap<&str, u32>) -> u32 {
        let me = self.nodes.len() as u32;
        self.nodes.push(FlatNode { service: index[node.service.as_str()], first_stage: 0, stage_count: 0 });
        let mut stage_ranges = Vec::new();
        for stage in &node.stages {
            let ids: Vec<u32> = stage.iter().map(|c| self.add(c, index)).collect();
            let start = self.children.len() as u32;
            self.children.extend(ids);
            stage_ranges.push((start, self.children.len() as u32));
        }
        let first = self.stages.len() as u32;
        self.stages.extend(stage_ranges);
        self.nodes[me as usize].first_stage = first;
        self.nodes[me as usize].stage_count = node.stages.len() as u32;
        me
    }

    /// Children of `node` in its stage `k`.
    pub fn stage(&self, node: u32, k: u32) -> &[u32] {
        let n = self.nodes[node as usize];
        let (a, b) = self.stages[(n.first_stage + k) as usize];
        &self.children[a as usize..b as usize]
    }
}

/// A whole application.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub services: Vec<Service>,
    /// Canonical graphs with their ids and compiled forms.
    pub graphs: Vec<Node>,
    pub ids: Vec<String>,
    pub flat: Vec<Flat>,
    pub types: Vec<RequestType>,
    /// Above this entry rate requests take their high-load graph (degraded mode).
    pub high_load_rps: f64,
    /// Reference peak rate for `load_exponent`.
    pub peak_rps: f64,
    /// Calls per service per request, per graph: `(service, calls)`.
    pub calls: Vec<Vec<(u32, f64)>>,
}

impl App {
    /// Validate and compile. Errors name the service, graph or type at fault.
    pub fn new(
        name: &str,
        services: Vec<Service>,
        graphs: Vec<Node>,
        types: Vec<RequestType>,
        high_load_rps: f64,
        peak_rps: f64,
    ) -> Result<Self, Error> {
        let bad = |field: String, value: String, expected: &'static str| Error::Invalid { field, value, expected };
        let mut index = BTreeMap::new();
        for (i, s) in services.iter().enumerate() {
            if index.insert(s.name.as_str(), i as u32).is_some() {
                return Err(bad(format!("services.{}", s.name), "defined twice".into(), "unique names"));
            }
            if !(s.l0_ms.is_finite() && s.l0_ms >= 0.01) {
                return Err(bad(format!("services.{}.l0_ms", s.name), s.l0_ms.to_string(), "a delay >= 0.01 ms"));
            }
            let m = s.time.mean_ms();
            if !(m.is_finite() && m > 0.0) {
                return Err(bad(format!("services.{}.mean_ms", s.name), m.to_string(), "a mean > 0"));
            }
            if let ServiceTime::LogNormal { cv, .. } = s.time
                && !(cv.is_finite() && cv > 0.0)
            {
                return Err(bad(format!("services.{}.cv", s.name), cv.to_string(), "a number > 0"));
            }
            if s.workers == 0 {
                return Err(bad(format!("services.{}.workers", s.name), "0".into(), "at least 1"));
            }
        }
        let graphs: Vec<Node> = graphs.into_iter().map(Node::canonical).collect();
        for (g, root) in graphs.iter().enumerate() {
            let mut problem = None;
            check_graph(root, &index, &mut problem);
            if let Some(p) = problem {
                return Err(bad(format!("graphs[{g}]"), p, "known services, no service calling itself directly"));
            }
        }
        for t in &types {
            let arms = t.argument.as_ref().map_or(1, |a| a.values.len());
            if t.graphs.len() != arms || arms == 0 {
                return Err(bad(
                    format!("types.{}.graphs", t.name),
                    t.graphs.len().to_string(),
                    "one entry per argument value",
                ));
            }
            if t.graphs.iter().flatten().any(|g| *g >= graphs.len()) {
                return Err(bad(format!("types.{}.graphs", t.name), "out of range".into(), "graph indices"));
            }
        }
        if types.is_empty() {
            return Err(bad("types".into(), "none".into(), "at least one request type"));
        }
        let ids = graphs.iter().map(Node::id).collect();
        let flat = graphs.iter().map(|g| Flat::compile(g, &index)).collect();
        let calls =
            graphs.iter().map(|g| g.calls().into_iter().map(|(s, n)| (index[s], f64::from(n))).collect()).collect();
        Ok(App { name: name.to_owned(), services, graphs, ids, flat, types, high_load_rps, peak_rps, calls })
    }

    /// Index of a service by name.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// Relative weights of the request types at time `t_s` and entry rate `rps`.
    pub fn type_weights(&self, t_s: f64, rps: f64) -> Vec<f64> {
        let x = (rps / self.peak_rps).max(1e-3);
        self.types.iter().map(|t| t.weight.at(t_s).max(0.0) * x.powf(t.load_exponent)).collect()
    }

    /// The graph a request of type `ty` with argument value `arg` takes at entry rate `rps`.
    pub fn graph_of(&self, ty: usize, arg: usize, rps: f64) -> usize {
        self.types[ty].graphs[arg][usize::from(rps > self.high_load_rps)]
    }

    /// True graph mix (share per graph index) at time `t_s` and entry rate `rps`.
    pub fn mix(&self, t_s: f64, rps: f64) -> Vec<f64> {
        let mut mix = vec![0.0; self.graphs.len()];
        let tw = self.type_weights(t_s, rps);
        let total: f64 = tw.iter().sum();
        if total <= 0.0 {
            return mix;
        }
        for (ty, w) in tw.iter().enumerate() {
            let share = w / total;
            match &self.types[ty].argument {
                None => mix[self.graph_of(ty, 0, rps)] += share,
                Some(a) => {
                    for (k, p) in a.weights(t_s).into_iter().enumerate() {
                        mix[self.graph_of(ty, k, rps)] += share * p;
                    }
                }
            }
        }
        mix
    }

    /// Calls per second to each service for a mix and an entry rate.
    pub fn demand(&self, mix: &[f64], rps: f64) -> Vec<f64> {
        let mut d = vec![0.0; self.services.len()];
        for (g, share) in mix.iter().enumerate() {
            for (s, n) in &self.calls[g] {
                d[*s as usize] += rps * share * n;
            }
        }
        d
    }

    /// Replicas that run every service at `utilisation` of its true capacity.
    pub fn replicas_for(&self, demand: &[f64], utilisation: f64) -> Vec<u32> {
        self.services
            .iter()
            .zip(demand)
            .map(|(s, d)| ((d / (utilisation * s.capacity_rps()) - 1e-9).ceil() as u32).max(1))
            .collect()
    }

    /// Mean latency along the slowest path at zero load (l0 + mean service time per call).
    pub fn zero_load_critical_path_ms(&self, graph: usize) -> f64 {
        fn walk(app: &App, flat: &Flat, node: u32) -> f64 {
            let n = flat.nodes[node as usize];
            let s = &app.services[n.service as usize];
            let own = s.l0_ms + s.time.mean_ms();
            own + (0..n.stage_count)
                .map(|k| flat.stage(node, k).iter().map(|c| walk(app, flat, *c)).fold(0.0, f64::max))
                .sum::<f64>()
        }
        walk(self, &self.flat[graph], 0)
    }

    /// Time-averaged mix over `[from_s, to_s]` (1 s grid) for a rate pattern.
    pub fn mean_mix(&self, pattern: &super::Pattern, from_s: f64, to_s: f64) -> Vec<f64> {
        let n = ((to_s - from_s).ceil() as usize).max(1);
        let dt = (to_s - from_s) / n as f64;
        let mut acc = vec![0.0; self.graphs.len()];
        let mut total = 0.0;
        for k in 0..n {
            let t = from_s + (k as f64 + 0.5) * dt;
            let rps = pattern.rps(t);
            for (a, m) in acc.iter_mut().zip(self.mix(t, rps)) {
                *a += rps * m;
            }
            total += rps;
        }
        if total > 0.0 {
            acc.iter_mut().for_each(|a| *a /= total);
        }
        acc
    }

    /// [`Self::mean_mix`] by graph id (ground-truth graphs of the same shape share an id),
    /// without graphs of no share: what a policy's mix is compared with.
    pub fn mean_mix_by_id(&self, pattern: &super::Pattern, from_s: f64, to_s: f64) -> BTreeMap<String, f64> {
        let mut mix = BTreeMap::new();
        for (id, s) in self.ids.iter().zip(self.mean_mix(pattern, from_s, to_s)).filter(|(_, s)| *s > 0.0) {
            *mix.entry(id.clone()).or_insert(0.0) += s;
        }
        mix
    }
}

fn check_graph(node: &Node, index: &BTreeMap<&str, u32>, problem: &mut Option<String>) {
    if !index.contains_key(node.service.as_str()) {
        problem.get_or_insert_with(|| format!("unknown service `{}`", node.service));
    }
    for c in node.stages.iter().flatten() {
        if c.service == node.service {
            problem.get_or_insert_with(|| format!("`{}` calls itself", node.service));
        }
        check_graph(c, index, problem);
    }
}
