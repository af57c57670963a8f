//! Derm's scaling optimisation: the fewest containers such that the weighted share of
//! requests within the SLA is at least `p`.
//!
//! - [`problem`]: validation (every error names its field) and the compiled problem.
//! - [`eval`]: the constraint and its gradient, graphs in parallel (rayon), deterministic.
//! - [`kkt`]: the continuous KKT solution in rate form, with three starting points.
//! - [`integer`]: round up and repair to whole replicas, verified exactly.
//! - [`reference`]: slow generic solvers used by tests to check optimality.
//! - [`trust`]: replica floors that keep each service near the loads its profile observed.
//! - [`awake`]: the pool's other workers kept awake while a solve runs.
//!
//! Policies: [`Policy::Derm`] (one weighted constraint over frequent graphs) and
//! [`Policy::Uniform`] (every frequent graph meets `p` on its own: the paper's ablation and
//! an Erms-like baseline; solved per graph, shared services take the highest rate, then
//! repaired against all graphs).

pub mod awake;
pub mod eval;
pub mod integer;
pub mod kkt;
mod model;
pub mod problem;
pub mod reference;
mod root;
mod start;
pub mod trust;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use kkt::Start;
pub use problem::{Bounds, Input, Problem};

use eval::Kind;

/// Errors; each names the field or graph at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A number outside its domain.
    #[error("{field}: got {value}, expected {expected}")]
    Invalid { field: String, value: String, expected: &'static str },
    /// A graph calls a service that has no profile.
    #[error("graph {graph}: service `{service}` has no profile")]
    UnknownService { graph: String, service: String },
    /// No graphs at all.
    #[error("graphs: empty (nothing to optimise)")]
    NoGraphs,
    /// A frequent graph cannot meet the SLA even with unlimited containers.
    #[error("graph {graph}: minimum achievable latency {min_latency_ms:.3} ms is above the SLA of {sla_ms} ms")]
    Infeasible { graph: String, min_latency_ms: f64, sla_ms: f64 },
    /// Even unlimited containers (within max bounds) give less than the target.
    #[error(
        "percentile {percentile} unreachable: at most {best:.6} of requests meet the SLA (weakest graph {worst_graph})"
    )]
    Unreachable { best: f64, percentile: f64, worst_graph: String },
}

/// Which optimisation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Derm,
    Uniform,
}

/// One service in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub replicas: u32,
    pub per_container_load_rps: f64,
    pub rate_per_ms: f64,
    /// Calls per second to the service (all replicas).
    pub demand_rps: f64,
    /// Per-container load at the continuous optimum, `w*`: what a load-only change keeps.
    pub target_load_rps: f64,
}

/// One graph in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphPlan {
    pub share: f64,
    pub sla_probability: f64,
    /// False for rare graphs, which are outside the constraint.
    pub frequent: bool,
}

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub policy: Policy,
    pub total_replicas: u64,
    /// Weighted share of requests of frequent graphs predicted within the SLA.
    pub predicted_sla_probability: f64,
    pub services: BTreeMap<String, ServicePlan>,
    pub graphs: BTreeMap<String, GraphPlan>,
    /// KKT iterations (the last solve; 0 when rescaled from a previous plan).
    pub iterations: u32,
    /// Sum of continuous containers at the KKT optimum, before rounding.
    pub continuous_containers: f64,
    pub solve_ms: f64,
    pub load_rps: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Plan {
    /// The predicted share of *all* requests within the SLA: every graph of the plan by its
    /// share, rare ones included (`predicted_sla_probability` covers the constraint's graphs).
    pub fn all_requests_probability(&self) -> f64 {
        let (within, total) =
            self.graphs.values().fold((0.0, 0.0), |(w, t), g| (w + g.share * g.sla_probability, t + g.share));
        if total > 0.0 { within / total } else { self.predicted_sla_probability }
    }
}

/// Solve a problem with a policy, from a starting point.
///
/// The whole solve runs on a rayon worker: each evaluation fans its graphs out to the pool,
/// and from a thread outside it every fan-out is a cross-thread hand-off and wake-up (tens
/// of microseconds, more than a small graph's evaluation); from a worker it is a push onto
/// its own queue. Whenever an evaluation has work for more than one thread (several graphs,
/// or one graph large enough to fork), the other workers stay awake meanwhile ([`awake`]):
/// woken per evaluation they arrive too late to help (the 50-service bench solves in
/// 0.89-0.99 ms with them awake, 1.11-1.13 ms without).
pub fn solve(problem: &Problem, policy: Policy, start: Start) -> Result<Plan, Error> {
    let constrained = eval::constrained(&problem.weights());
    if constrained.iter().filter(|c| **c).count() > 1 || eval::forking(problem, &constrained).contains(&true) {
        awake::run(|| solve_here(problem, policy, start))
    } else {
        rayon::scope(|_| awake::busy(|| solve_here(problem, policy, start)))
    }
}

fn solve_here(problem: &Problem, policy: Policy, start: Start) -> Result<Plan, Error> {
    let t0 = Instant::now();
    let weights = problem.weights();
    let space = kkt::Space::new(problem);
    let (kind, rates, iterations, continuous, gradient) = match policy {
        Policy::Derm => {
            let sol = kkt::solve(problem, Kind::Weighted, &weights, start)?;
            (Kind::Weighted, sol.rates, sol.iterations, sol.objective, Some(sol.gradient))
        }
        Policy::Uniform => {
            let mut rates: Vec<f64> = space.full(&space.lo);
            let mut iterations = 0;
            for (gi, g) in problem.graphs.iter().enumerate() {
                if g.weight <= 0.0 {
                    continue;
                }
                let mut one = vec![0.0; weights.len()];
                one[gi] = 1.0;
                let sol = kkt::solve(problem, Kind::Weighted, &one, start)?;
                iterations += sol.iterations;
                for &i in g.compiled.services() {
                    if space.active[i] {
                        rates[i] = rates[i].max(sol.rates[i]);
                    }
                }
            }
            let obj = kkt::objective(problem, &space, &rates);
            (Kind::EveryGraph, rates, iterations, obj, None)
        }
    };
    let int = integer::plan(problem, kind, &weights, &space, &rates, gradient.as_ref());
    if int.probability < problem.percentile {
        // Whole replicas within the bounds could not reach the target: say so rather than
        // publish a plan that misses it (callers keep their current replicas).
        let params = problem.params(&integer::rates(problem, &space, &int.replicas));
        let worst = eval::weakest(problem, &weights, &params);
        return Err(Error::Unreachable { best: int.probability, percentile: problem.percentile, worst_graph: worst });
    }
    let mut plan = assemble(problem, policy, &space, &int.replicas, &rates, int.per_graph);
    plan.iterations = iterations;
    plan.continuous_containers = continuous;
    plan.solve_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(plan)
}

/// Build the plan for given replicas (probabilities from the exact evaluator, except those
/// `known` at these replicas) and the continuous optimum's rates they came from.
pub fn assemble(
    problem: &Problem,
    policy: Policy,
    space: &kkt::Space,
    replicas: &[u32],
    optimum: &[f64],
    known: Vec<Option<f64>>,
) -> Plan {
    let rates = integer::rates(problem, space, replicas);
    let mut known = known;
    known.resize(problem.graphs.len(), None);
    let missing: Vec<bool> = known.iter().map(Option::is_none).collect();
    let fresh = eval::per_graph_of(problem, &problem.params(&rates), &missing);
    // Every graph is known or fresh.
    let per_graph: Vec<f64> = known.iter().zip(&fresh).map(|(k, f)| k.or(*f).unwrap_or(f64::NAN)).collect();
    let weighted: f64 = problem.graphs.iter().zip(&per_graph).map(|(g, f)| g.weight * f).sum();
    let services = problem
        .services
        .iter()
        .zip(replicas)
        .zip(&rates)
        .zip(optimum.iter().zip(&space.active))
        .map(|(((s, n), r), (opt, active))| {
            let w = s.demand_rps / f64::from((*n).max(1));
            let plan = ServicePlan {
                replicas: *n,
                per_container_load_rps: w,
                rate_per_ms: *r,
                demand_rps: s.demand_rps,
                target_load_rps: if *active { (s.b - opt) / -s.a } else { w },
            };
            (s.name.clone(), plan)
        })
        .collect();
    let graphs = problem
        .graphs
        .iter()
        .zip(&per_graph)
        .map(|(g, f)| (g.id.clone(), GraphPlan { share: g.share, sla_probability: *f, frequent: g.weight > 0.0 }))
        .collect();
    Plan {
        policy,
        total_replicas: replicas.iter().map(|n| u64::from(*n)).sum(),
        predicted_sla_probability: weighted,
        services,
        graphs,
        iterations: 0,
        continuous_containers: 0.0,
        solve_ms: 0.0,
        load_rps: problem.load_rps,
        warnings: problem.warnings.clone(),
    }
}

/// Load-only change: keep every per-container load `w*` and scale replicas with the new
/// total load (the paper's observation: `w*` does not depend on `W`). The caller re-solves
/// when the graph mix, profiles or SLA change; [`mix_distance`] measures the mix change.
/// Services whose optimum sat on a bound (min replicas, the utilisation floor) have no
/// load-independent `w*`: rescaling keeps their current per-container load, which is safe
/// but can step a one-replica service to two on a small rise; re-solve for those.
pub fn rescale(plan: &Plan, load_rps: f64, bounds: &BTreeMap<String, Bounds>) -> Plan {
    let factor = if plan.load_rps > 0.0 { load_rps / plan.load_rps } else { 1.0 };
    let mut out = plan.clone();
    out.load_rps = load_rps;
    out.iterations = 0;
    out.solve_ms = 0.0;
    for (name, s) in &mut out.services {
        let b = bounds.get(name).copied().unwrap_or_default();
        s.demand_rps *= factor;
        // The plan's own per-container load met the constraint at these rates, so it is a
        // safe lower bound on the target: a continuous optimum at the rate ceiling (target
        // near zero) must not turn into thousands of replicas.
        let target = s.target_load_rps.max(s.per_container_load_rps);
        let n = if target > 0.0 { (s.demand_rps / target - 1e-9).ceil() as u32 } else { 1 };
        s.replicas = n.max(b.min).min(b.max).max(1);
        s.per_container_load_rps = s.demand_rps / f64::from(s.replicas);
    }
    out.total_replicas = out.services.values().map(|s| u64::from(s.replicas)).sum();
    out
}

/// Total variation distance between two graph mixes (id -> share).
pub fn mix_distance(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> f64 {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    0.5 * keys.into_iter().map(|k| (a.get(k).unwrap_or(&0.0) - b.get(k).unwrap_or(&0.0)).abs()).sum::<f64>()
}
