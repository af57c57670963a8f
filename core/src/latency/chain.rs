//! Exact evaluator for a sequential sum of exponential phases: uniformization of the acyclic
//! phase-type chain, vectorised across phases, with the gradient by the copy-of-a-phase identity.
//!
//! With `Lambda = max rate` and `p_k = rate_k / Lambda`, each phase is a geometric number of
//! steps of a Poisson clock of rate `Lambda`, so for `x = Lambda * tau`
//!
//! ```text
//! F(tau) = sum_m Poisson(m; x) * C_m,        C_m = P(N <= m),  N = G_1 + ... + G_K,
//! ```
//!
//! with `G_k ~ Geometric(p_k)` on `1, 2, ...`. The pmf of the partial sums obeys
//! `P(S_k = m) = (1 - p_k) P(S_k = m-1) + p_k P(S_{k-1} = m-1)`: for one `m` all `k` are
//! independent, so one step is an elementwise update of a `K`-vector (it vectorises) and every
//! quantity is a sum of non-negative terms: equal, near-equal and distinct rates are all exact.
//!
//! Gradient: with `Y_k` an independent copy of phase `k`,
//! `dF/d rate_k = (F_Z - F_{Z+Y_k}) / rate_k`. Under uniformization `Z + Y_k` has step count
//! `N + G_k`, and the difference `D_m = P(N <= m) - P(N + G_k <= m)` obeys
//! `D_m = (1 - p_k) D_{m-1} + P(N = m)`, again non-negative, so
//! `dF/d rate_k = sum_m Poisson(m; x) D^k_m / rate_k` with no subtraction anywhere.
//!
//! Truncation: the Poisson weights are generated outward from the mode and normalised over the
//! window that holds all but [`POISSON_TAIL`] of their mass (tail bounds
//! `P(>= m) <= pi_m / (1 - x/(m+1))` and `P(<= m) <= pi_m / (1 - m/x)`); since `0 <= C_m <= 1`
//! and `0 <= D_m <= 1`, the value errs by at most `2 * POISSON_TAIL` (plus rounding) and each
//! partial derivative by `2 * POISSON_TAIL / rate_k`. Cost: `O(K * (x + 8 sqrt(x)))` steps.

use super::Params;

/// Poisson mass left outside the window, each side, relative to the mass inside.
pub(super) const POISSON_TAIL: f64 = 1e-16;
/// Probabilities below this are flushed to zero every few steps (at most `K * steps / 16`
/// flushes, so under 1e-24 in all): this keeps them out of the subnormal range (~100x slower
/// per operation on x86) and lets dead partial sums leave the active band.
const FLUSH_BELOW: f64 = 1e-30;
const FLUSH_EVERY: usize = 16;

/// An upper bound on the number of steps [`eval`] takes for `x = Lambda * tau`.
pub(super) fn steps(x: f64) -> f64 {
    x + 9.0 * x.sqrt() + 40.0
}

/// Buffers reused across calls.
#[derive(Debug, Default, Clone)]
pub(super) struct Scratch {
    order: Vec<usize>,
    p: Vec<f64>,
    a: Vec<f64>,
    v: Vec<f64>,
    next: Vec<f64>,
    d: Vec<f64>,
    g: Vec<f64>,
    pois: Vec<f64>,
}

/// `P(sum of Exp(rate of each phase) <= tau)` for `tau > 0` and rates positive and finite,
/// adding `dF/d rate` of each phase into `grad[service]` when asked.
#[inline(always)]
pub(super) fn eval(phases: &[usize], params: &[Params], tau: f64, grad: Option<&mut [f64]>, s: &mut Scratch) -> f64 {
    let k = phases.len();
    let rate = |n: usize| params[phases[n]].rate_per_ms;
    // Fastest phases first: their partial sums die out early and leave the active band.
    s.order.clear();
    s.order.extend(0..k);
    s.order.sort_unstable_by(|&x, &y| rate(y).total_cmp(&rate(x)));
    let lambda = rate(s.order[0]);
    s.p.clear();
    s.a.clear();
    for &n in &s.order {
        s.p.push(rate(n) / lambda);
        s.a.push((lambda - rate(n)) / lambda);
    }
    let x = lambda * tau;
    let lo = poisson_window(x, &mut s.pois);
    let hi = lo + s.pois.len() - 1;

    // v[j] = P(S_j = m) for j = 0..=k (S_0 = 0), non-zero only on the band klo..=min(m, k)
    // (below klo, flushed to zero for good: v[klo - 1] = 0 in both buffers).
    for buf in [&mut s.v, &mut s.next] {
        buf.clear();
        buf.resize(k + 1, 0.0);
    }
    s.v[0] = 1.0;
    let with_grad = grad.is_some();
    for buf in [&mut s.d, &mut s.g] {
        buf.clear();
        buf.resize(k, 0.0);
    }

    let mut klo = 1;
    let mut cdf_n = 0.0; // C_m
    let mut f = 0.0;
    for m in 1..=hi {
        let khi = m.min(k);
        if klo <= khi {
            // Equal-length slices, indexed: this is the form that vectorises.
            let len = khi + 1 - klo;
            let (prev, cur) = (&s.v[klo - 1..][..len], &s.v[klo..][..len]);
            let (a, p, next) = (&s.a[klo - 1..][..len], &s.p[klo - 1..][..len], &mut s.next[klo..][..len]);
            for i in 0..len {
                next[i] = a[i] * cur[i] + p[i] * prev[i];
            }
        }
        std::mem::swap(&mut s.v, &mut s.next);
        if m == 1 {
            s.v[0] = 0.0;
            s.next[0] = 0.0;
        }
        let c = s.v[k];
        cdf_n += c;
        let pi = if m >= lo { s.pois[m - lo] } else { 0.0 };
        f += pi * cdf_n;
        if with_grad && cdf_n > 0.0 {
            let (d, g, a) = (&mut s.d[..k], &mut s.g[..k], &s.a[..k]);
            if m >= lo {
                for i in 0..k {
                    d[i] = a[i] * d[i] + c;
                    g[i] += pi * d[i];
                }
            } else {
                for i in 0..k {
                    d[i] = a[i] * d[i] + c;
                }
            }
        }
        if m % FLUSH_EVERY == 0 {
            flush(&mut s.v[klo..=khi]);
            while klo <= khi && s.v[klo] == 0.0 {
                s.next[klo] = 0.0;
                klo += 1;
            }
            if with_grad {
                flush(&mut s.d);
            }
        }
    }
    if let Some(grad) = grad {
        for (&n, &g) in s.order.iter().zip(&s.g) {
            grad[phases[n]] += g / rate(n);
        }
    }
    f
}

#[inline(always)]
fn flush(v: &mut [f64]) {
    for x in v {
        *x = if *x < FLUSH_BELOW { 0.0 } else { *x };
    }
}

/// Fills `w` with the Poisson(`x`) pmf on `lo..lo + w.len()`, generated outward from the mode
/// (no factorials, no underflow at large `x`) and normalised over the window, which is extended
/// until the bound on the mass beyond it on each side is below `POISSON_TAIL` of the mass in it.
/// Returns `lo`.
fn poisson_window(x: f64, w: &mut Vec<f64>) -> usize {
    w.clear();
    let mode = x.floor() as usize;
    let mut sum = 1.0;
    w.push(1.0);
    let (mut m, mut wm) = (mode, 1.0);
    while m > 0 {
        let next = wm * m as f64 / x;
        let tail = next / (1.0 - (m - 1) as f64 / x);
        if tail < POISSON_TAIL * sum {
            break;
        }
        m -= 1;
        wm = next;
        w.push(wm);
        sum += wm;
    }
    let lo = m;
    w.reverse();
    let (mut m, mut wm) = (mode, 1.0);
    loop {
        let next = wm * x / (m + 1) as f64;
        let tail = next / (1.0 - x / (m + 2) as f64);
        if tail < POISSON_TAIL * sum {
            break;
        }
        m += 1;
        wm = next;
        w.push(wm);
        sum += wm;
    }
    let inv = 1.0 / sum;
    w.iter_mut().for_each(|v| *v *= inv);
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use statrs::distribution::{Discrete, Poisson};

    #[test]
    fn poisson_window_matches_pmf_and_holds_the_mass() {
        for x in [1e-9, 0.3, 1.0, 7.5, 60.0, 1234.5, 2e5] {
            let mut w = Vec::new();
            let lo = poisson_window(x, &mut w);
            let pois = Poisson::new(x).expect("positive mean");
            let inside: f64 = (lo..lo + w.len()).map(|m| pois.pmf(m as u64)).sum();
            // statrs' pmf is good to ~1e-14 relative, so its sum is the looser check.
            assert!(1.0 - inside < 1e-12, "x={x}: window holds {inside}");
            // statrs goes through exp(ln Gamma), which loses ~x * 1e-16 relative.
            let tol = 1e-13 * x.max(10.0);
            for (i, &v) in w.iter().enumerate() {
                let exact = pois.pmf((lo + i) as u64);
                assert!((v - exact).abs() <= tol * exact + 1e-300, "x={x} m={}: {v} vs {exact}", lo + i);
            }
            assert!((w.len() as f64) < steps(x));
        }
        // And to 1e-14 against a 40-digit value (mpmath): Poisson(978; 1234.5).
        let mut w = Vec::new();
        let lo = poisson_window(1234.5, &mut w);
        assert_relative_eq!(w[978 - lo], 4.325_728_288_844_213_4e-15, max_relative = 1e-14);
    }

    #[test]
    fn single_phase_is_the_exponential() {
        let params = [Params { l0_ms: 0.0, rate_per_ms: 0.7 }];
        let mut s = Scratch::default();
        let mut grad = [0.0];
        for tau in [1e-6, 0.5, 3.0, 40.0] {
            grad[0] = 0.0;
            let f = eval(&[0], &params, tau, Some(&mut grad), &mut s);
            assert_relative_eq!(f, -(-0.7 * tau).exp_m1(), max_relative = 1e-13);
            assert_relative_eq!(grad[0], tau * (-0.7 * tau).exp(), max_relative = 1e-12, epsilon = 1e-300);
        }
    }
}
