//! The constraint function: weighted share of requests within the SLA, with its gradient.
//! Graphs are evaluated in parallel (rayon) and summed in graph order, so results do not
//! depend on the number of threads.

use std::cell::RefCell;

use rayon::prelude::*;

use super::problem::Problem;
use crate::latency::{Params, Workspace};

thread_local! {
    /// Per-thread evaluator scratch (rayon's workers persist, so it is reused).
    static SCRATCH: RefCell<(Workspace, Vec<f64>)> = RefCell::new((Workspace::new(), Vec::new()));
}

/// Runs `f` with this thread's scratch. A forking graph's evaluation may, on a thread that
/// waits for its other half, start another graph's evaluation meanwhile: that one finds the
/// scratch in use and gets a fresh one.
fn with_scratch<T>(f: impl FnOnce(&mut Workspace, &mut Vec<f64>) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let (ws, full) = &mut *s;
            f(ws, full)
        }
        Err(_) => f(&mut Workspace::new(), &mut Vec::new()),
    })
}

/// Which graphs may fork their evaluation over threads: those holding more than one
/// thread's share of the work (calls times lattice cells), which would leave the pool idle
/// while they run.
pub(super) fn forking(problem: &Problem) -> Vec<bool> {
    let threads = rayon::current_num_threads();
    let work: Vec<usize> = problem.graphs.iter().map(|g| g.compiled.calls_total() * g.compiled.grid_cells()).collect();
    let total: usize = work.iter().sum();
    work.iter().map(|w| threads > 1 && w * threads > total).collect()
}

/// Which constraint to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Derm: sum_g weight_g * F_g >= p.
    Weighted,
    /// Uniform: min_g over frequent graphs of F_g >= p.
    EveryGraph,
}

/// Per-graph probabilities of meeting the SLA.
pub fn per_graph(problem: &Problem, params: &[Params]) -> Vec<f64> {
    let forks = forking(problem);
    problem
        .graphs
        .par_iter()
        .enumerate()
        .map(|(gi, g)| {
            with_scratch(|ws, _| {
                ws.set_forking(forks[gi]);
                g.compiled.cdf_with(ws, params, problem.sla_ms)
            })
        })
        .collect()
}

/// Id of the constrained graph (weight > 0) least likely to meet the SLA at `params`.
pub fn weakest(problem: &Problem, weights: &[f64], params: &[Params]) -> String {
    let f = per_graph(problem, params);
    let (worst, _) = problem
        .graphs
        .iter()
        .zip(&f)
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|((g, f), _)| (g.id.as_str(), *f))
        .fold(("", f64::INFINITY), |acc, x| if x.1 < acc.1 { x } else { acc });
    worst.to_owned()
}

/// Constraint value (minus the target is the slack).
pub fn value(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> f64 {
    value_parts(problem, kind, weights, params).0
}

/// Constraint value and the per-graph probabilities it combines.
pub fn value_parts(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> (f64, Vec<f64>) {
    let f = per_graph(problem, params);
    (combine(kind, weights, &f).0, f)
}

fn combine(kind: Kind, weights: &[f64], f: &[f64]) -> (f64, Option<usize>) {
    match kind {
        Kind::Weighted => (weights.iter().zip(f).map(|(w, f)| w * f).sum(), None),
        Kind::EveryGraph => weights
            .iter()
            .zip(f)
            .enumerate()
            .filter(|(_, (w, _))| **w > 0.0)
            .map(|(i, (_, f))| (*f, Some(i)))
            .fold((1.0, None), |acc, x| if x.0 < acc.0 { x } else { acc }),
    }
}

/// Constraint value and its gradient with respect to every service's rate (for
/// [`Kind::EveryGraph`], the gradient of the binding graph).
pub fn value_grad(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params], grad: &mut [f64]) -> f64 {
    let n = params.len();
    let forks = forking(problem);
    // Each graph returns its value and the partial derivatives of its own services only.
    let parts: Vec<(f64, Vec<f64>)> = problem
        .graphs
        .par_iter()
        .zip(weights.par_iter())
        .enumerate()
        .map(|(gi, (g, w))| {
            with_scratch(|ws, full| {
                ws.set_forking(forks[gi]);
                if *w <= 0.0 {
                    return (g.compiled.cdf_with(ws, params, problem.sla_ms), Vec::new());
                }
                full.clear();
                full.resize(n, 0.0);
                let f = g.compiled.cdf_grad_with(ws, params, problem.sla_ms, full);
                (f, g.compiled.services().iter().map(|i| full[*i]).collect())
            })
        })
        .collect();
    grad.iter_mut().for_each(|x| *x = 0.0);
    let f: Vec<f64> = parts.iter().map(|p| p.0).collect();
    let (value, binding) = combine(kind, weights, &f);
    let mut add = |gi: usize, scale: f64| {
        for (i, d) in problem.graphs[gi].compiled.services().iter().zip(&parts[gi].1) {
            grad[*i] += scale * d;
        }
    };
    match kind {
        Kind::Weighted => {
            for (gi, w) in weights.iter().enumerate() {
                if *w > 0.0 {
                    add(gi, *w);
                }
            }
        }
        Kind::EveryGraph => {
            if let Some(gi) = binding {
                add(gi, 1.0);
            }
        }
    }
    value
}
