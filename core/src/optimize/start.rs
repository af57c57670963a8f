//! Starting points of the KKT iteration ([`Start`]) and the shape they imply.

use super::kkt::{Space, Start};
use super::problem::Problem;
use super::root;

/// The tight member of the start's one-parameter family (see [`Start`]), within the
/// constraint window `w`.
pub(super) fn point(
    problem: &Problem,
    space: &Space,
    start: Start,
    w: root::Window,
    g_of: &dyn Fn(&[f64]) -> f64,
    approx: &dyn Fn(&[f64]) -> f64,
) -> Vec<f64> {
    let n = problem.services.len();
    let sens: Vec<f64> = problem.services.iter().map(|s| (-s.a).max(0.0).sqrt()).collect();
    let q: Vec<f64> = match start {
        Start::Erms | Start::Flat => sens.clone(),
        Start::Paired => {
            let mut order: Vec<usize> = (0..n).filter(|i| space.active[*i]).collect();
            order.sort_by(|x, y| problem.services[*x].a.total_cmp(&problem.services[*y].a));
            let mut q = sens.clone();
            for pair in order.chunks(2) {
                let mean = pair.iter().map(|i| sens[*i]).sum::<f64>() / pair.len() as f64;
                pair.iter().for_each(|i| q[*i] = mean);
            }
            q
        }
    };
    // One-parameter family from the box's top (s = 0) down; find the tight member.
    let family = |s: f64| -> Vec<f64> {
        (0..n)
            .map(|i| {
                if !space.active[i] {
                    return space.fixed[i];
                }
                let b = problem.services[i].b;
                let r = match start {
                    Start::Flat => b * (1.0 - s / (1.0 + s)),
                    _ => b / (1.0 + s * q[i]),
                };
                space.clip(i, r)
            })
            .collect()
    };
    // In x = -ln s the constraint increases. The exact search starts where the normal
    // stand-in meets the window (from s = 1), its first step the stand-in's log-odds slope
    // there; from s = 1 itself when the stand-in never meets it.
    let g = |x: f64| g_of(&family((-x).exp()));
    let guess = |x: f64| approx(&family((-x).exp()));
    let a0 = guess(0.0);
    let x0 = root::search(&guess, w, (0.0, a0), 2.0f64.copysign(w.target - a0));
    let x0 = if x0.abs() < root::LIMIT { x0 } else { 0.0 };
    let g0 = g(x0);
    let d = 0.05;
    let slope = (root::logit(guess(x0 + d)) - root::logit(guess(x0 - d))) / (2.0 * d);
    let miss = root::logit(w.target + 0.5 * w.tol) - root::logit(g0);
    let first = if slope > 0.0 && slope.is_finite() && miss != 0.0 {
        (miss / slope).clamp(-4.0, 4.0)
    } else {
        2.0f64.copysign(w.target - g0)
    };
    family((-root::search(&g, w, (x0, g0), first)).exp())
}

/// The shape (`ln kappa`) for which the start is stationary, `kappa_i ~ W_i |a_i| / u_i^2` with
/// `rate_i = b_i / (1 + u_i)`, shifted to the median level of the first gradient's: the first
/// step then moves from the start's shape within the trust region like every other step.
/// Services at a bound of their box (no stationarity there) or that no weighted graph calls
/// take the gradient's.
pub(super) fn implied_shape(
    problem: &Problem,
    space: &Space,
    rates: &[f64],
    grad: &[f64],
    fresh: &[f64],
    log_kappa: &mut [f64],
) {
    log_kappa.copy_from_slice(fresh);
    let inner: Vec<usize> = (0..rates.len())
        .filter(|&i| space.active[i] && grad[i] > 0.0 && rates[i] > space.lo[i] && rates[i] < space.hi[i])
        .collect();
    if inner.is_empty() {
        return;
    }
    let implied = |i: usize| {
        let s = &problem.services[i];
        let u = s.b / rates[i] - 1.0;
        (s.demand_rps * -s.a).ln() - 2.0 * u.ln()
    };
    // The median: services off every critical path sit at the gradient's floor.
    let shift = median(inner.iter().map(|&i| fresh[i] - implied(i)).collect());
    for &i in &inner {
        log_kappa[i] = implied(i) + shift;
    }
}

/// Median (upper) of a list; 0 when empty.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f64::total_cmp).1
}
