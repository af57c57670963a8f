//! Slow, simple reference solvers. For tests and benchmarks only: they check the KKT solver
//! and the integer repair on small instances.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::eval::{self, Kind};
use super::kkt::Space;
use super::problem::Problem;

/// Exhaustive integer search (branch and bound over active services, each within
/// `[fewest allowed, fewest + span]` replicas): the fewest total replicas meeting the
/// constraint. Returns (replicas, total) or None when nothing in range is feasible.
pub fn exhaustive(problem: &Problem, kind: Kind, weights: &[f64], span: u32) -> Option<(Vec<u32>, u64)> {
    let space = Space::new(problem);
    let n = problem.services.len();
    let mut lo = vec![1u32; n];
    let mut hi = vec![1u32; n];
    let mut fixed = vec![0u32; n];
    for (i, s) in problem.services.iter().enumerate() {
        if !space.active[i] {
            fixed[i] = super::integer::round_up(problem, &space, &space.full(&space.lo))[i];
            lo[i] = fixed[i];
            hi[i] = fixed[i];
            continue;
        }
        // Fewest replicas whose rate stays above the utilisation floor.
        let mut k = s.bounds.min.max(1);
        while s.rate_at(k) < space.lo[i] && k < s.bounds.max {
            k += 1;
        }
        lo[i] = k;
        hi[i] = k.saturating_add(span).min(s.bounds.max);
    }
    let feasible = |r: &[u32]| -> bool {
        let rates: Vec<f64> = problem
            .services
            .iter()
            .zip(r)
            .enumerate()
            .map(|(i, (s, k))| if space.active[i] { s.rate_at(*k) } else { space.fixed[i] })
            .collect();
        eval::value(problem, kind, weights, &problem.params(&rates)) >= problem.percentile
    };
    let mut best: Option<(Vec<u32>, u64)> = None;
    let mut cur = lo.clone();
    search(0, &mut cur, &lo, &hi, &feasible, &mut best);
    best
}

fn search(
    i: usize,
    cur: &mut Vec<u32>,
    lo: &[u32],
    hi: &[u32],
    feasible: &dyn Fn(&[u32]) -> bool,
    best: &mut Option<(Vec<u32>, u64)>,
) {
    let total = |v: &[u32]| v.iter().map(|x| u64::from(*x)).sum::<u64>();
    // Lower bound: the rest at their minimum.
    let bound: u64 = total(&cur[..i]) + total(&lo[i..]);
    if best.as_ref().is_some_and(|(_, b)| bound >= *b) {
        return;
    }
    // Monotone: if even the rest at their maximum fails, prune.
    let mut top = cur.clone();
    top[i..].copy_from_slice(&hi[i..]);
    if !feasible(&top) {
        return;
    }
    if i == cur.len() {
        let t = total(cur);
        if best.as_ref().is_none_or(|(_, b)| t < *b) {
            *best = Some((cur.clone(), t));
        }
        return;
    }
    for k in lo[i]..=hi[i] {
        cur[i] = k;
        for (j, l) in lo.iter().enumerate().skip(i + 1) {
            cur[j] = *l;
        }
        search(i + 1, cur, lo, hi, feasible, best);
    }
}

/// Continuous reference: Nelder-Mead over all active rates but the last (mapped into their
/// box), the last one found by bisection so the constraint is tight; best of several seeded
/// restarts. Returns the objective (continuous containers).
pub fn continuous(problem: &Problem, kind: Kind, weights: &[f64], restarts: u32, seed: u64) -> Option<f64> {
    let space = Space::new(problem);
    let active: Vec<usize> = (0..problem.services.len()).filter(|i| space.active[*i]).collect();
    let (&last, free) = active.split_last()?;
    let g = |rates: &[f64]| eval::value(problem, kind, weights, &problem.params(rates));
    let target = problem.percentile;
    let objective = |u: &[f64]| -> f64 {
        let mut rates = space.full(&space.lo);
        for (k, &i) in free.iter().enumerate() {
            let s = 1.0 / (1.0 + (-u[k]).exp());
            rates[i] = space.lo[i] + s * (space.hi[i] - space.lo[i]);
        }
        rates[last] = space.hi[last];
        if g(&rates) < target {
            return f64::INFINITY;
        }
        let (mut lo, mut hi) = (space.lo[last], space.hi[last]);
        rates[last] = lo;
        if g(&rates) < target {
            for _ in 0..80 {
                let mid = 0.5 * (lo + hi);
                rates[last] = mid;
                if g(&rates) >= target { hi = mid } else { lo = mid }
            }
            rates[last] = hi;
        }
        super::kkt::objective(problem, &space, &rates)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut best = f64::INFINITY;
    let dim = free.len();
    if dim == 0 {
        return Some(objective(&[]));
    }
    for _ in 0..restarts.max(1) {
        let start: Vec<f64> = (0..dim).map(|_| rng.random_range(-2.0..4.0)).collect();
        best = best.min(nelder_mead(&objective, start, 2_000));
    }
    best.is_finite().then_some(best)
}

/// Plain Nelder-Mead minimisation; returns the best value found.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, start: Vec<f64>, max_evals: usize) -> f64 {
    let n = start.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((start.clone(), f(&start)));
    for i in 0..n {
        let mut p = start.clone();
        p[i] += 1.0;
        let v = f(&p);
        simplex.push((p, v));
    }
    let mut evals = n + 1;
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (simplex[n].1 - simplex[0].1).abs() < 1e-12 * simplex[0].1.abs().max(1.0) && simplex[0].1.is_finite() {
            break;
        }
        let centroid: Vec<f64> = (0..n).map(|j| simplex[..n].iter().map(|p| p.0[j]).sum::<f64>() / n as f64).collect();
        let along =
            |t: f64| -> Vec<f64> { (0..n).map(|j| centroid[j] + t * (simplex[n].0[j] - centroid[j])).collect() };
        let r = along(-1.0);
        let fr = f(&r);
        evals += 1;
        if fr < simplex[0].1 {
            let e = along(-2.0);
            let fe = f(&e);
            evals += 1;
            simplex[n] = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (r, fr);
        } else {
            let c = along(0.5);
            let fc = f(&c);
            evals += 1;
            if fc < simplex[n].1 {
                simplex[n] = (c, fc);
            } else {
                let best = simplex[0].0.clone();
                for p in simplex.iter_mut().skip(1) {
                    p.0 = (0..n).map(|j| best[j] + 0.5 * (p.0[j] - best[j])).collect();
                    p.1 = f(&p.0);
                    evals += 1;
                }
            }
        }
    }
    simplex.iter().map(|p| p.1).fold(f64::INFINITY, f64::min)
}
