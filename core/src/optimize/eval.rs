//! The constraint function: weighted share of requests within the SLA, with its gradient.
//! Graphs are evaluated in parallel (rayon) and summed in graph order, so results do not
//! depend on the number of threads.

use rayon::prelude::*;

use super::problem::Problem;
use crate::latency::Params;

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
    problem.graphs.par_iter().map(|g| g.compiled.cdf(params, problem.sla_ms)).collect()
}

/// Constraint value (minus the target is the slack).
pub fn value(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> f64 {
    let f = per_graph(problem, params);
    combine(kind, weights, &f).0
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
    let parts: Vec<(f64, Vec<f64>)> = problem
        .graphs
        .par_iter()
        .zip(weights.par_iter())
        .map(|(g, w)| {
            let mut gr = vec![0.0; n];
            if *w <= 0.0 {
                return (g.compiled.cdf(params, problem.sla_ms), gr);
            }
            let f = g.compiled.cdf_grad(params, problem.sla_ms, &mut gr);
            (f, gr)
        })
        .collect();
    grad.iter_mut().for_each(|x| *x = 0.0);
    let f: Vec<f64> = parts.iter().map(|p| p.0).collect();
    let (value, binding) = combine(kind, weights, &f);
    match kind {
        Kind::Weighted => {
            for (w, (_, gr)) in weights.iter().zip(&parts) {
                if *w > 0.0 {
                    grad.iter_mut().zip(gr).for_each(|(a, b)| *a += w * b);
                }
            }
        }
        Kind::EveryGraph => {
            if let Some(i) = binding {
                grad.copy_from_slice(&parts[i].1);
            }
        }
    }
    value
}
