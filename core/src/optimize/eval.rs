//! The constraint function: weighted share of requests within the SLA, with its gradient.
//! Graphs are evaluated in parallel (rayon) and summed in graph order, so results do not
//! depend on the number of threads. Only constrained graphs (weight > 0) are evaluated: rare
//! graphs leave the constraint, and with heavy-tailed popularity they are most of the graphs
//! (29 of the 2,500-service benchmark's 40).

use std::cell::RefCell;

use statrs::distribution::{ContinuousCDF, Normal};

use super::awake;
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

/// Which of the `wanted` graphs may fork their evaluation over threads: those holding more
/// than one thread's share of the wanted work (calls times lattice cells), which would leave
/// the pool idle while they run.
pub(super) fn forking(problem: &Problem, wanted: &[bool]) -> Vec<bool> {
    let threads = rayon::current_num_threads();
    let work: Vec<usize> = problem
        .graphs
        .iter()
        .zip(wanted)
        .map(|(g, w)| if *w { g.compiled.calls_total() * g.compiled.grid_cells() } else { 0 })
        .collect();
    let total: usize = work.iter().sum();
    work.iter().map(|w| threads > 1 && w * threads > total).collect()
}

/// The graphs in the constraint.
pub(super) fn constrained(weights: &[f64]) -> Vec<bool> {
    weights.iter().map(|w| *w > 0.0).collect()
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
    let all = vec![true; problem.graphs.len()];
    per_graph_of(problem, params, &all).into_iter().map(|f| f.unwrap_or(f64::NAN)).collect()
}

/// `f` on each `wanted` graph (`None` for the others), each graph its own rayon task, run
/// as a solve's work ([`awake::busy`]).
///
/// One task per graph: with a parallel iterator, rayon's adaptive split stopped at a few
/// contiguous runs of graphs when called from a worker, and the frequent graphs come first in
/// popularity order, so one run held most of the work (the 2,500-service solve took 140 ms
/// on one core's worth instead of 85).
fn each_graph<T: Send>(problem: &Problem, wanted: &[bool], f: impl Fn(usize) -> T + Sync) -> Vec<Option<T>> {
    let mut out: Vec<Option<T>> = problem.graphs.iter().map(|_| None).collect();
    let todo: Vec<usize> = (0..wanted.len()).filter(|g| wanted[*g]).collect();
    split(&todo, &mut out, 0, &f);
    out
}

/// Halves of `todo` under `rayon::join`, down to single graphs; `out` holds the graphs from
/// `base` on.
fn split<T: Send, F: Fn(usize) -> T + Sync>(todo: &[usize], out: &mut [Option<T>], base: usize, f: &F) {
    match todo {
        [] => {}
        [g] => out[g - base] = Some(f(*g)),
        _ => {
            let (first, rest) = todo.split_at(todo.len() / 2);
            let (left, right) = out.split_at_mut(rest[0] - base);
            rayon::join(
                || awake::busy(|| split(first, left, base, f)),
                || awake::busy(|| split(rest, right, rest[0], f)),
            );
        }
    }
}

/// Per-graph probabilities of the `wanted` graphs (`None` for the others).
pub fn per_graph_of(problem: &Problem, params: &[Params], wanted: &[bool]) -> Vec<Option<f64>> {
    let forks = forking(problem, wanted);
    each_graph(problem, wanted, |gi| {
        with_scratch(|ws, _| {
            ws.set_forking(forks[gi]);
            problem.graphs[gi].compiled.cdf_with(ws, params, problem.sla_ms)
        })
    })
}

/// Id of the constrained graph (weight > 0) least likely to meet the SLA at `params`.
pub fn weakest(problem: &Problem, weights: &[f64], params: &[Params]) -> String {
    let f = per_graph_of(problem, params, &constrained(weights));
    let (worst, _) = problem
        .graphs
        .iter()
        .zip(&f)
        .filter_map(|(g, f)| f.map(|f| (g.id.as_str(), f)))
        .fold(("", f64::INFINITY), |acc, x| if x.1 < acc.1 { x } else { acc });
    worst.to_owned()
}

/// Constraint value (minus the target is the slack).
pub fn value(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> f64 {
    value_parts(problem, kind, weights, params).0
}

/// Constraint value and the per-graph probabilities it combines (`None` for graphs outside
/// the constraint, which are not evaluated).
pub fn value_parts(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> (f64, Vec<Option<f64>>) {
    let f = per_graph_of(problem, params, &constrained(weights));
    (combine(kind, weights, &f).0, f)
}

/// A rough and cheap stand-in for [`value`]: each constrained graph's latency taken as a
/// normal ([`crate::latency::Compiled::normal_moments`]). Only to guess where a search starts.
pub fn approx_value(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params]) -> f64 {
    let normal = Normal::standard();
    let f: Vec<Option<f64>> = problem
        .graphs
        .iter()
        .zip(weights)
        .map(|(g, w)| {
            (*w > 0.0).then(|| {
                let (mean, var) = g.compiled.normal_moments(params);
                normal.cdf((problem.sla_ms - mean) / var.sqrt().max(f64::MIN_POSITIVE))
            })
        })
        .collect();
    combine(kind, weights, &f).0
}

/// [`value_parts`] at `params`, given each constrained graph's value at a point that
/// differs from `params` only in the services `moved`: only the graphs that call one of them
/// are evaluated again. A graph's value depends on its own services' rates alone, so the
/// result is the full evaluation's, bit for bit (the integer repair's later rounds move a
/// few services, which most graphs do not call).
pub fn value_parts_moved(
    problem: &Problem,
    kind: Kind,
    weights: &[f64],
    params: &[Params],
    known: &[Option<f64>],
    moved: &[usize],
) -> (f64, Vec<Option<f64>>) {
    let mut touched = vec![false; params.len()];
    moved.iter().for_each(|&i| touched[i] = true);
    let wanted: Vec<bool> = problem
        .graphs
        .iter()
        .zip(weights)
        .zip(known)
        .map(|((g, w), k)| *w > 0.0 && (k.is_none() || g.compiled.services().iter().any(|&i| touched[i])))
        .collect();
    let mut f = per_graph_of(problem, params, &wanted);
    for ((f, k), w) in f.iter_mut().zip(known).zip(&wanted) {
        if !*w {
            *f = *k;
        }
    }
    (combine(kind, weights, &f).0, f)
}

/// The constraint from the constrained graphs' values (the others are `None`).
fn combine(kind: Kind, weights: &[f64], f: &[Option<f64>]) -> (f64, Option<usize>) {
    let terms = weights.iter().zip(f).enumerate().filter_map(|(i, (w, f))| f.map(|f| (i, *w, f)));
    match kind {
        Kind::Weighted => (terms.map(|(_, w, f)| w * f).sum(), None),
        Kind::EveryGraph => {
            terms.map(|(i, _, f)| (f, Some(i))).fold((1.0, None), |acc, x| if x.0 < acc.0 { x } else { acc })
        }
    }
}

/// One constrained graph's value and partial derivatives, over its services
/// (`Compiled::services`).
#[derive(Debug, Clone)]
pub struct GraphGrad {
    pub value: f64,
    pub partials: Vec<f64>,
}

/// Each constrained graph's value and partial derivatives at some rates (`None` for the
/// graphs outside the constraint): what the searches' per-graph model is built from.
#[derive(Debug, Clone, Default)]
pub struct Gradient {
    pub at: Vec<f64>,
    pub graphs: Vec<Option<GraphGrad>>,
}

impl Gradient {
    /// One exact evaluation with gradients at `rates`.
    pub fn at(problem: &Problem, kind: Kind, weights: &[f64], rates: &[f64]) -> Self {
        let mut grad = vec![0.0; rates.len()];
        let (_, graphs) = value_grad_graphs(problem, kind, weights, &problem.params(rates), &mut grad);
        Gradient { at: rates.to_vec(), graphs }
    }
}

/// Constraint value and its gradient with respect to every service's rate (for
/// [`Kind::EveryGraph`], the gradient of the binding graph).
pub fn value_grad(problem: &Problem, kind: Kind, weights: &[f64], params: &[Params], grad: &mut [f64]) -> f64 {
    value_grad_graphs(problem, kind, weights, params, grad).0
}

/// [`value_grad`], with each constrained graph's own value and partial derivatives (`None`
/// for the graphs outside the constraint).
pub fn value_grad_graphs(
    problem: &Problem,
    kind: Kind,
    weights: &[f64],
    params: &[Params],
    grad: &mut [f64],
) -> (f64, Vec<Option<GraphGrad>>) {
    let n = params.len();
    let wanted = constrained(weights);
    let forks = forking(problem, &wanted);
    // Each constrained graph returns its value and the partial derivatives of its own
    // services only.
    let parts: Vec<Option<GraphGrad>> = each_graph(problem, &wanted, |gi| {
        let g = &problem.graphs[gi];
        with_scratch(|ws, full| {
            ws.set_forking(forks[gi]);
            full.clear();
            full.resize(n, 0.0);
            let value = g.compiled.cdf_grad_with(ws, params, problem.sla_ms, full);
            GraphGrad { value, partials: g.compiled.services().iter().map(|i| full[*i]).collect() }
        })
    });
    grad.iter_mut().for_each(|x| *x = 0.0);
    let f: Vec<Option<f64>> = parts.iter().map(|p| p.as_ref().map(|p| p.value)).collect();
    let (value, binding) = combine(kind, weights, &f);
    let mut add = |gi: usize, scale: f64| {
        let Some(part) = &parts[gi] else { return };
        for (i, d) in problem.graphs[gi].compiled.services().iter().zip(&part.partials) {
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
    (value, parts)
}
