//! One-dimensional boundary search for an increasing probability `G(x)`: a point with
//! `target <= G(x) < target + tol`, in as few evaluations of `G` as possible (each is an exact
//! constraint evaluation of every graph).
//!
//! `G` is sigmoid-like in the search parameter (a log-multiplier or a log-scale), often steep
//! (a 400-service graph goes from 0.05 to 0.9999 within a tenth of a decade of the
//! multiplier), so secant steps on `G` itself crawl along its flat ends. Steps are taken on
//! the log-odds `logit G` instead, which is close to linear over the whole range. They aim at
//! the middle of the window, `target + tol / 2`, not at its edge: a step aimed at the edge
//! lands on either side with equal odds and needs extra steps to come back to the feasible
//! side, while one aimed at the middle is accepted as soon as it is within `tol / 2` of it.

/// Limit of `|x|`.
pub const LIMIT: f64 = 80.0;

/// Smallest step when `G` gives no slope to follow (flat at 0 or 1).
const MIN_JUMP: f64 = 0.05;

/// Log-odds, with `G` kept off 0 and 1 (where it is flat anyway).
pub fn logit(g: f64) -> f64 {
    let g = g.clamp(1e-15, 1.0 - 1e-15);
    (g / (1.0 - g)).ln()
}

/// The window and the aim of a search.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub target: f64,
    pub tol: f64,
}

impl Window {
    fn holds(self, g: f64) -> bool {
        g >= self.target && g - self.target < self.tol
    }
    /// Distance from the aim in log-odds (negative below it).
    fn z(self, g: f64) -> f64 {
        logit(g) - logit(self.target + 0.5 * self.tol)
    }
}

/// From `(x0, G(x0))` and a first step, find the window: secant extrapolation on the log-odds
/// (a little past the predicted point, at most four times the last step) until `G` crosses
/// the target, then [`boundary`]. Returns the limit in the direction of the target if
/// it is never crossed.
pub fn search(g: &dyn Fn(f64) -> f64, w: Window, (x0, g0): (f64, f64), first: f64) -> f64 {
    if w.holds(g0) {
        return x0;
    }
    let (mut a, mut ga) = (x0, g0);
    let mut b = (x0 + first).clamp(-LIMIT, LIMIT);
    let mut gb = g(b);
    while (ga < w.target) == (gb < w.target) {
        if w.holds(gb) {
            return b;
        }
        let dir = if gb < w.target { 1.0 } else { -1.0 };
        if (b.abs() >= LIMIT && b.signum() == dir) || gb.is_nan() {
            return if gb >= w.target { b } else { LIMIT };
        }
        let width = (b - a).abs().max(1e-9);
        let (za, zb) = (w.z(ga), w.z(gb));
        // Secant towards the aim when the last step made progress; doubling otherwise.
        let secant = if zb.abs() < za.abs() { -zb * (b - a) / (zb - za) } else { f64::NAN };
        let d = if secant.is_finite() && secant * dir > 0.0 {
            (1.2 * secant.abs()).clamp(0.1 * width, 4.0 * width)
        } else {
            (2.0 * width).max(MIN_JUMP)
        };
        (a, ga) = (b, gb);
        b = (b + dir * d).clamp(-LIMIT, LIMIT);
        gb = g(b);
    }
    let (lo, hi) = if ga < w.target { ((a, ga), (b, gb)) } else { ((b, gb), (a, ga)) };
    boundary(g, w, lo, hi)
}

/// For `G` increasing with `G(lo) < target <= G(hi)`: a point in the bracket inside the window
/// (or the bracket's top once it is tiny). Secant steps on the log-odds through the two latest
/// points (superlinear near the window), safeguarded by the bracket: a step that leaves it is
/// replaced by regula falsi with the Illinois modification.
pub fn boundary(g: &dyn Fn(f64) -> f64, w: Window, (mut lo, g_lo): (f64, f64), (mut hi, g_hi): (f64, f64)) -> f64 {
    if w.holds(g_hi) {
        return hi;
    }
    // `lo` is below the target, hence below the aim; `hi` is above the window, above the aim.
    let (mut z_lo, mut z_hi) = (w.z(g_lo), w.z(g_hi));
    // The two latest points, for the secant (the bracket's ends at first).
    let (mut p, mut q) = ((lo, z_lo), (hi, z_hi));
    let (mut side, mut evals) = (0, 0);
    while hi - lo > 1e-12 * (1.0 + hi.abs()) && evals < 60 {
        evals += 1;
        let inner = |m: f64| m > lo + 1e-3 * (hi - lo) && m < hi - 1e-3 * (hi - lo);
        let secant = if q.1 != p.1 { q.0 - q.1 * (q.0 - p.0) / (q.1 - p.1) } else { f64::NAN };
        let m = if inner(secant) {
            secant
        } else {
            let m = if z_hi - z_lo > 0.0 { hi - z_hi * (hi - lo) / (z_hi - z_lo) } else { 0.5 * (lo + hi) };
            m.clamp(lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo))
        };
        let gm = g(m);
        if w.holds(gm) {
            return m;
        }
        let zm = w.z(gm);
        (p, q) = (q, (m, zm));
        if gm >= w.target {
            (hi, z_hi) = (m, zm);
            if side == 1 {
                z_lo *= 0.5;
            }
            side = 1;
        } else {
            (lo, z_lo) = (m, zm);
            if side == -1 {
                z_hi *= 0.5;
            }
            side = -1;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn finds_the_window_of_a_sigmoid_from_either_side() {
        for x0 in [-6.0, -1.0, 0.3, 2.0, 7.0] {
            // Steep, and not a logistic in x: log-odds are not linear.
            let sigmoid = |x: f64| 0.5 * (1.0 + ((x - 1.234) * 20.0).tanh().powi(3));
            let n = Cell::new(0);
            let g = |x: f64| {
                n.set(n.get() + 1);
                sigmoid(x)
            };
            let w = Window { target: 0.95, tol: 1e-6 };
            let x = search(&g, w, (x0, g(x0)), 0.5);
            let v = sigmoid(x) - 0.95;
            assert!((0.0..1e-6).contains(&v), "x0 {x0}: G - target = {v}");
            assert!(n.get() < 20, "x0 {x0}: {} evaluations", n.get());
        }
    }

    #[test]
    fn a_root_beyond_the_limit_returns_the_limit() {
        let g = |x: f64| 1.0 / (1.0 + (500.0 - x).exp());
        let w = Window { target: 0.95, tol: 1e-6 };
        assert_eq!(search(&g, w, (0.0, g(0.0)), 1.0), LIMIT);
    }
}
