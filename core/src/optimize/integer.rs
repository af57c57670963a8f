//! From continuous rates to whole containers: round up, then repair.
//!
//! `replicas_i = ceil(W_i / w_i*)` can only raise rates, so it keeps the constraint unless
//! a max bound cut it. Repair adds replicas (best predicted gain per container first) until
//! the constraint holds, then removes replicas while it still holds: candidates ordered by
//! predicted loss `g_i * (rate_i(n) - rate_i(n - 1))`, a greedy prefix within the slack,
//! verified exactly and halved until it holds; rounds repeat until nothing can go. Every
//! accepted plan is checked with the exact evaluator.

use super::eval::{self, Kind};
use super::kkt::Space;
use super::problem::Problem;

/// Whole replicas per service and the constraint value they reach.
#[derive(Debug, Clone)]
pub struct Integer {
    pub replicas: Vec<u32>,
    pub probability: f64,
    /// Exact constraint evaluations made by the repair.
    pub evaluations: u32,
}

/// Replicas for given rates (rounded up), within bounds.
pub fn round_up(problem: &Problem, space: &Space, rates: &[f64]) -> Vec<u32> {
    problem
        .services
        .iter()
        .zip(rates)
        .enumerate()
        .map(|(i, (s, r))| {
            let raw = if s.demand_rps <= 0.0 {
                0.0
            } else if space.active[i] {
                s.containers_for(*r)
            } else {
                // Fixed services: the replicas that gave their fixed rate.
                s.demand_rps * -s.a.min(-f64::MIN_POSITIVE) / (s.b - r).max(f64::MIN_POSITIVE)
            };
            let n = (raw - 1e-9).ceil().max(0.0) as u32;
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

/// Round `rates` up to replicas and repair against the constraint.
pub fn plan(problem: &Problem, kind: Kind, weights: &[f64], space: &Space, rates: &[f64]) -> Integer {
    let target = problem.percentile;
    let mut replicas = round_up(problem, space, rates);
    let mut evaluations = 0;
    let n = replicas.len();
    let mut grad = vec![0.0; n];
    let eval_grad = |replicas: &[u32], grad: &mut [f64]| {
        let params = problem.params(&rates_of(problem, space, replicas));
        eval::value_grad(problem, kind, weights, &params, grad)
    };
    let mut value = eval_grad(&replicas, &mut grad);
    evaluations += 1;
    // Add where bounds or rounding broke the constraint.
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
        value = eval_grad(&replicas, &mut grad);
        evaluations += 1;
    }
    // Remove while the constraint holds.
    loop {
        let slack = value - target;
        let mut candidates: Vec<(usize, f64)> = (0..n)
            .filter(|i| {
                let s = &problem.services[*i];
                space.active[*i] && replicas[*i] > s.bounds.min.max(1) && s.rate_at(replicas[*i] - 1) >= space.lo[*i]
            })
            .map(|i| {
                let s = &problem.services[i];
                (i, grad[i] * (s.rate_at(replicas[i]) - s.rate_at(replicas[i] - 1)))
            })
            .collect();
        if candidates.is_empty() || slack < 0.0 {
            break;
        }
        candidates.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
        let mut take = 0;
        let mut predicted = 0.0;
        for (_, loss) in &candidates {
            if predicted + loss > slack && take > 0 {
                break;
            }
            predicted += loss;
            take += 1;
        }
        let mut accepted = false;
        while take > 0 {
            let mut trial = replicas.clone();
            candidates[..take].iter().for_each(|(i, _)| trial[*i] -= 1);
            let mut trial_grad = vec![0.0; n];
            let v = eval_grad(&trial, &mut trial_grad);
            evaluations += 1;
            if v >= target {
                replicas = trial;
                value = v;
                grad = trial_grad;
                accepted = true;
                break;
            }
            take /= 2;
        }
        if !accepted {
            break;
        }
    }
    Integer { replicas, probability: value, evaluations }
}

/// Constraint value of given replicas (exact evaluator).
pub fn verify(problem: &Problem, kind: Kind, weights: &[f64], space: &Space, replicas: &[u32]) -> f64 {
    eval::value(problem, kind, weights, &problem.params(&rates_of(problem, space, replicas)))
}

/// Rates at given replicas.
pub fn rates(problem: &Problem, space: &Space, replicas: &[u32]) -> Vec<f64> {
    rates_of(problem, space, replicas)
}
