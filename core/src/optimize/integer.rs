//! From continuous rates to whole containers: round up, then take back what holds.
//!
//! `replicas_i = ceil(W_i / w_i*)` can only raise rates, so it keeps the constraint unless
//! a max bound cut it; then replicas are added (best predicted gain per container first)
//! until it holds. Removal runs in rounds. Each round orders the removable services by
//! predicted loss `g_i * (rate_i(n) - rate_i(n - 1))` at the current plan and searches for the
//! longest prefix that can lose one replica each ([`Repair::prefix`]): a few value-only trials,
//! interpolating in probit space, where the constraint is close to linear in the containers
//! removed (in probability it is not: far in the tail a removal costs almost nothing). The
//! gradient `g` and the first trial come from the per-graph model ([`Model`]) built from the
//! KKT solver's last gradient and moved onto each accepted plan with the per-graph values its
//! trial gave, so a round costs no gradient: the first trial is the longest prefix the model
//! says holds, and the first round ranks by the model's gradient at the continuous optimum,
//! where the constraint is tight. Rounds repeat until nothing can go, and every accepted plan
//! is checked with the exact evaluator. A trial evaluates again only the graphs that call a
//! service it moves ([`eval::value_parts_moved`]): the first round moves hundreds of services,
//! the later ones a few, which most graphs do not call.

use statrs::distribution::{ContinuousCDF, Normal};

use super::eval::{self, Kind};
use super::kkt::Space;
use super::model::Model;
use super::problem::Problem;

/// Whole replicas per service and the constraint value they reach.
#[derive(Debug, Clone)]
pub struct Integer {
    pub replicas: Vec<u32>,
    pub probability: f64,
    /// Exact constraint evaluations made by the repair.
    pub evaluations: u32,
    /// Per-graph probabilities of `replicas` that the repair evaluated without a gradient
    /// (the constrained graphs; empty when unknown): the plan reports them.
    pub per_graph: Vec<Option<f64>>,
}

/// Value-only trials per removal round.
const TRIALS: u32 = 4;

/// Continuous replicas for given rates.
fn raw_replicas(problem: &Problem, space: &Space, rates: &[f64]) -> Vec<f64> {
    problem
        .services
        .iter()
        .zip(rates)
        .enumerate()
        .map(|(i, (s, r))| {
            if s.demand_rps <= 0.0 {
                0.0
            } else if space.active[i] {
                s.containers_for(*r)
            } else {
                // Fixed services: the replicas that gave their fixed rate.
                s.demand_rps * -s.a.min(-f64::MIN_POSITIVE) / (s.b - r).max(f64::MIN_POSITIVE)
            }
        })
        .collect()
}

/// Replicas for given rates (rounded up), within bounds.
pub fn round_up(problem: &Problem, space: &Space, rates: &[f64]) -> Vec<u32> {
    ceil(problem, &raw_replicas(problem, space, rates))
}

fn ceil(problem: &Problem, raw: &[f64]) -> Vec<u32> {
    problem
        .services
        .iter()
        .zip(raw)
        .map(|(s, x)| {
            let n = (x - 1e-9).ceil().max(0.0) as u32;
            n.max(s.bounds.min).min(s.bounds.max).max(1)
        })
        .collect()
}

fn rates_of(problem: &Problem, space: &Space, replicas: &[u32]) -> Vec<f64> {
    problem
        .services
        .iter()
        .zip(replicas)
        .enumerate()
        .map(|(i, (s, n))| if space.active[i] { s.rate_at(*n) } else { space.fixed[i] })
        .collect()
}

/// What a prefix search knows: the longest prefix known to hold (length, probit, value) with
/// its per-graph values, and the shortest known not to (length, probit).
struct Bracket {
    lo: (usize, f64, f64),
    hi: Option<(usize, f64)>,
    parts: Vec<Option<f64>>,
}

impl Bracket {
    /// Record the trial of the first `k` services and its value.
    fn record(&mut self, k: usize, (v, parts): (f64, Vec<Option<f64>>), target: f64, z: impl Fn(f64) -> f64) {
        if v >= target {
            self.lo = (k, z(v), v);
            self.parts = parts;
        } else {
            self.hi = Some((k, z(v)));
        }
    }
}

/// The problem and constraint a plan is repaired against.
struct Repair<'a> {
    problem: &'a Problem,
    kind: Kind,
    weights: &'a [f64],
    space: &'a Space,
}

impl Repair<'_> {
    fn value(&self, replicas: &[u32]) -> (f64, Vec<Option<f64>>) {
        let params = self.problem.params(&rates_of(self.problem, self.space, replicas));
        eval::value_parts(self.problem, self.kind, self.weights, &params)
    }

    /// [`Repair::value`] of `replicas` less one replica of each service in `moved`, given the
    /// per-graph values `known` of `replicas` ([`eval::value_parts_moved`]).
    fn value_less(&self, replicas: &[u32], moved: &[usize], known: &[Option<f64>]) -> (f64, Vec<Option<f64>>) {
        let mut trial = replicas.to_vec();
        moved.iter().for_each(|&i| trial[i] -= 1);
        let params = self.problem.params(&rates_of(self.problem, self.space, &trial));
        eval::value_parts_moved(self.problem, self.kind, self.weights, &params, known, moved)
    }

    fn value_grad(&self, replicas: &[u32], grad: &mut [f64]) -> (f64, Vec<Option<f64>>) {
        let params = self.problem.params(&rates_of(self.problem, self.space, replicas));
        let (value, graphs) = eval::value_grad_graphs(self.problem, self.kind, self.weights, &params, grad);
        (value, graphs.iter().map(|g| g.as_ref().map(|g| g.value)).collect())
    }

    /// Predicted loss of one replica less of service `i`, or `None` when it cannot lose one
    /// (its bounds, or its rate box).
    fn loss(&self, replicas: &[u32], grad: &[f64], i: usize) -> Option<f64> {
        let s = &self.problem.services[i];
        let n = replicas[i];
        let ok = self.space.active[i] && n > s.bounds.min.max(1) && s.rate_at(n - 1) >= self.space.lo[i];
        ok.then(|| grad[i] * (s.rate_at(n) - s.rate_at(n - 1)))
    }

    /// The longest prefix of `order` whose services can each lose one replica with the
    /// constraint held, starting from a guess `k0`; `replicas` hold with value `v0`. At most
    /// [`TRIALS`] value-only evaluations: each next trial is where the line through the
    /// nearest holding and failing prefixes (in probit space; from the start only, an
    /// extrapolation) meets the target, rounded towards holding. Returns the prefix length
    /// (0 when none holds), its value and per-graph probabilities, and the evaluations made.
    fn prefix(
        &self,
        replicas: &[u32],
        known: &[Option<f64>],
        order: &[usize],
        k0: usize,
        v0: f64,
    ) -> (usize, f64, Vec<Option<f64>>, u32) {
        let target = self.problem.percentile;
        let normal = Normal::standard();
        let z = |v: f64| normal.inverse_cdf(v.clamp(1e-12, 1.0 - 1e-12));
        let (z0, zt) = (z(v0), z(target));
        let mut b = Bracket { lo: (0, z0, v0), hi: None, parts: Vec::new() };
        let mut k = k0.clamp(1, order.len().max(1));
        let mut trials = 0;
        while trials < TRIALS && k > b.lo.0 && k <= order.len() && b.hi.is_none_or(|h| k < h.0) {
            b.record(k, self.value_less(replicas, &order[..k], known), target, z);
            trials += 1;
            let lo = b.lo;
            k = match b.hi {
                Some((kh, zh)) if kh > lo.0 + 1 => {
                    let f = (lo.1 - zt) / (lo.1 - zh).max(f64::MIN_POSITIVE);
                    ((lo.0 as f64 + f * (kh - lo.0) as f64).floor() as usize).clamp(lo.0 + 1, kh - 1)
                }
                Some(_) => lo.0,
                None if lo.0 < order.len() && z0 > lo.1 => {
                    let drop = (z0 - lo.1) / lo.0 as f64;
                    (lo.0 + ((lo.1 - zt) / drop).floor() as usize).clamp(lo.0 + 1, order.len())
                }
                None => order.len(),
            };
        }
        // No trial held: the probit line overshot, as when a graph near its SLA flips
        // between trials (a rare long graph in the constraint: the first round stopped at
        // 0.993 against 0.95 on the 2,500-service app with every graph counted). Halve the
        // shortest failing prefix until one holds or one service alone fails.
        while b.lo.0 == 0
            && let Some((kh, _)) = b.hi
            && kh > 1
        {
            b.record(kh / 2, self.value_less(replicas, &order[..kh / 2], known), target, z);
            trials += 1;
        }
        (b.lo.0, b.lo.2, b.parts, trials)
    }
}

/// Round `rates` up to replicas and repair against the constraint. `gradient`, when given,
/// is the constraint's gradient near `rates` (the KKT solver's last); otherwise it is
/// evaluated at `rates`.
pub fn plan(
    problem: &Problem,
    kind: Kind,
    weights: &[f64],
    space: &Space,
    rates: &[f64],
    gradient: Option<&eval::Gradient>,
) -> Integer {
    let repair = Repair { problem, kind, weights, space };
    let target = problem.percentile;
    let raw = raw_replicas(problem, space, rates);
    let mut replicas = ceil(problem, &raw);
    let n = replicas.len();
    let mut grad = vec![0.0; n];
    // The rounded-up plan usually holds: its gradient is needed only to add replicas.
    let (mut value, parts) = repair.value(&replicas);
    let mut per_graph = parts;
    let mut evaluations = 1;
    if value < target {
        (value, per_graph) = repair.value_grad(&replicas, &mut grad);
        evaluations += 1;
    }
    // Rounding up only raises rates, so adding is needed only where max bounds cut the
    // rounding; a budget keeps a target the bounds cannot reach from adding without end.
    let mut budget = 4 * n + 16;
    while value < target && budget > 0 {
        budget -= 1;
        let best = (0..n)
            .filter(|i| space.active[*i] && replicas[*i] < problem.services[*i].bounds.max)
            .map(|i| {
                let s = &problem.services[i];
                (i, grad[i] * (s.rate_at(replicas[i] + 1) - s.rate_at(replicas[i])))
            })
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let Some((i, _)) = best else { break };
        replicas[i] += 1;
        (value, per_graph) = repair.value_grad(&replicas, &mut grad);
        evaluations += 1;
    }
    if value < target {
        // The bounds cannot reach the target: nothing to take back.
        return Integer { replicas, probability: value, evaluations, per_graph };
    }
    // The per-graph model (see [`Model`]) replaces a gradient per round: built where the KKT
    // solver last took the gradient, moved onto each accepted plan with the per-graph values
    // its trial gave. The first round orders by the model's gradient at the continuous
    // optimum, where the constraint is tight: at the rounded-up plan, far in the tail, a
    // gradient ranks services by what matters beyond the target (session 6, with exact
    // gradients: 3,086 against 3,074 replicas on the 400-service benchmark graph).
    let owned;
    let gradient = match gradient {
        Some(g) => g,
        None => {
            owned = eval::Gradient::at(problem, kind, weights, rates);
            evaluations += 1;
            &owned
        }
    };
    let mut model = Model::new(problem, kind, weights, &gradient.at, &gradient.graphs);
    // The model's slopes were taken where the last step started; a phase's own rate
    // dominates its partial derivative, about `kappa / rate^2` (the KKT shape's local model),
    // which carries each one to the optimum: 3,071 replicas on the 400-service graph against
    // 3,086 without (and 32,087 against 32,084 on the 2,500-service app).
    let mut rank = model.gradient(rates);
    for (i, g) in rank.iter_mut().enumerate() {
        if rates[i] > 0.0 && gradient.at.get(i).is_some_and(|a| *a > 0.0) {
            *g *= (gradient.at[i] / rates[i]).powi(2);
        }
    }
    model.rebase(&rates_of(problem, space, &replicas), &per_graph);
    while value >= target {
        let mut candidates: Vec<(usize, f64)> =
            (0..n).filter_map(|i| repair.loss(&replicas, &rank, i).map(|l| (i, l))).collect();
        if candidates.is_empty() {
            break;
        }
        candidates.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
        let order: Vec<usize> = candidates.iter().map(|c| c.0).collect();
        let steps: Vec<(usize, f64)> = order
            .iter()
            .map(|&i| {
                let s = &problem.services[i];
                (i, s.rate_at(replicas[i] - 1) - s.rate_at(replicas[i]))
            })
            .collect();
        let k0 = model.longest(&steps, target);
        let (k, v, parts, trials) = repair.prefix(&replicas, &per_graph, &order, k0, value);
        evaluations += trials;
        if k == 0 {
            break;
        }
        order[..k].iter().for_each(|&i| replicas[i] -= 1);
        (value, per_graph) = (v, parts);
        let now = rates_of(problem, space, &replicas);
        model.rebase(&now, &per_graph);
        rank = model.gradient(&now);
    }
    Integer { replicas, probability: value, evaluations, per_graph }
}

/// Constraint value of given replicas (exact evaluator).
pub fn verify(problem: &Problem, kind: Kind, weights: &[f64], space: &Space, replicas: &[u32]) -> f64 {
    eval::value(problem, kind, weights, &problem.params(&rates_of(problem, space, replicas)))
}

/// Rates at given replicas.
pub fn rates(problem: &Problem, space: &Space, replicas: &[u32]) -> Vec<f64> {
    rates_of(problem, space, replicas)
}
