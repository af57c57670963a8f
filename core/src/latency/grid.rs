//! Series-parallel evaluator: distributions as measures on a lattice of step `h`, with the
//! gradient as the exact reverse-mode derivative of the computation.
//!
//! Operations, on node weights `w_j` (mass at `j h`) over an index window `[lo, hi]`:
//! - `Point`: the summed shift of a sum, split between its two nodes (exact mean);
//! - `Shift`: that split point mass convolved with a measure (two taps);
//! - `Conv`: convolution of two measures, exact on the lattice (`O(n^2 / 2)`, `axpy` form);
//! - `Exp`: convolution with [`Kernel`], the lattice stand-in for `Exp(rate)` with its exact
//!   mean, variance (less what the shift's split added) and third cumulant: a first-order
//!   recursion with one extra tap;
//! - `Max`: the product of the children's cumulative weights, less the tie term [`TIE`];
//! - the root's slowest phase, applied last and exactly to the piecewise-linear CDF through
//!   the cumulative weights (at `j + 1/2`, with `t` placed on such a point), so reading the
//!   value at `t` adds no lattice error (its 1/12 cell^2 of variance is absorbed too).
//!
//! Every window is exact: `lo` is the lattice index of the minimum latency, `hi` the last
//! index that can still reach `t`. The only other truncation: a convolution skips the top
//! tail of each operand that holds less than `TAIL` (1e-17) of its mass.
//!
//! A sum of many factors may be planned as two partial sums joined by one convolution, so
//! that [`fork`] can run each side on its own thread (the same plan serially).
//!
//! This module keeps each graph's plan and reads the root; [`layout`] plans (windows,
//! operations, buffers), [`ops`] runs the operations, [`exps`] fuses a sum's exponential
//! phases, and [`fork`] runs independent subtrees on separate threads when the caller allows
//! it.

mod exps;
mod fork;
mod layout;
mod ops;

use super::special::{chi, phi, psi};
use super::{Compiled, Params};
use layout::Layout;
use ops::{Adjoints, Plan, Values};

/// The tie correction of a maximum. On the lattice, children that fall in the same cell tie;
/// for smooth children (Euler-Maclaurin) the product of the lattice CDFs exceeds the lattice
/// CDF of the maximum by `(1/12) sum_{c<c'} w_c w_c' prod_{others} W`, a bias of the maximum
/// towards lower values that is second order per maximum but accumulates over many.
const TIE: f64 = 1.0 / 12.0;

/// The lattice may span at most this many times `cells` nodes (when `t` is close to the
/// minimum latency, the step grows so that no window exceeds `SPAN * cells`).
const SPAN: f64 = 8.0;

#[derive(Debug, Clone, Copy)]
struct Buf {
    off: usize,
    lo: i64,
    hi: i64,
}

impl Buf {
    #[inline(always)]
    fn len(self) -> usize {
        (self.hi - self.lo + 1) as usize
    }
    #[inline(always)]
    fn range(self) -> std::ops::Range<usize> {
        self.off..self.off + self.len()
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Point {
        pos: f64,
        out: usize,
    },
    Shift {
        pos: f64,
        b: usize,
        out: usize,
    },
    Conv {
        a: usize,
        b: usize,
        out: usize,
    },
    /// A sum's phases: `exps[first..first + count]`, outputs in buffers `out..out + count`
    /// (contiguous, equal windows), fused ([`exps`]).
    Exps {
        first: usize,
        count: usize,
        input: usize,
        out: usize,
    },
    Max {
        kids: (usize, usize),
        out: usize,
    },
}

/// Most layouts a [`Scratch`] keeps: the 2,500-service benchmark's solve evaluates 11 graphs
/// on two lattices and, once, its 29 rare graphs.
const LAYOUTS: usize = 64;

/// Buffers reused across calls: the layouts of the graphs evaluated lately ([`layout`]), and
/// the values and adjoints of every operation.
#[derive(Debug, Default, Clone)]
pub(super) struct Scratch {
    /// Layouts with the evaluation that last used each; `cur` is this evaluation's.
    layouts: Vec<(u64, Layout)>,
    cur: usize,
    clock: u64,
    /// Whether the caller lets this evaluation fork ([`Scratch::set_forking`]).
    forking: bool,
    kernels: Vec<Kernel>,
    sums: Vec<exps::Sums>,
    val: Vec<f64>,
    adj: Vec<f64>,
    tmp: Vec<f64>,
}

/// `P(Z <= t)` for `t > minlat`, all rates positive and finite; adds the gradient into `grad`.
#[inline(always)]
pub(super) fn eval(
    c: &Compiled,
    s: &mut Scratch,
    params: &[Params],
    t: f64,
    minlat: f64,
    grad: Option<&mut [f64]>,
) -> f64 {
    let cells = c.grid_cells as f64;
    let h = ((t - minlat) / cells).max(t / (cells * SPAN));
    let top = (t / h - 0.5).floor();
    let off_root = t - (top + 0.5) * h;
    let top = top as i64;
    let root = c.sums.len() - 1;
    let rate = |i: usize| params[i].rate_per_ms;
    let root_services = c.sum_services(root);
    let mut fin = 0;
    for (n, &i) in root_services.iter().enumerate() {
        if rate(i) < rate(root_services[fin]) {
            fin = n;
        }
    }
    s.plan(c, params, h, off_root, top, fin);
    s.forward(params, h);
    let lay = &s.layouts[s.cur].1;

    // The slowest root phase, applied exactly to the piecewise-linear CDF through the cell
    // averages W_j (at j + 1/2, and t sits at top + 1/2):
    // F = alpha W_top + gamma sum_{m>=0} q^m W_{top-1-m}.
    let service = root_services[fin];
    let x = rate(service) * h;
    let (q, ph, ch) = ((-x).exp(), phi(x), chi(x));
    let (alpha, gamma) = (psi(x), x * ph * ph);
    let rb = lay.bufs[lay.sum_out[root]];
    let w = &s.val[rb.range()];
    let len = w.len();
    s.tmp.clear();
    let mut acc = 0.0;
    s.tmp.extend(w.iter().map(|&v| {
        acc += v;
        acc
    }));
    let (mut s0, mut s1, mut qm, mut qm1) = (0.0, 0.0, 1.0, 0.0);
    for (m, &cum) in s.tmp[..len - 1].iter().rev().enumerate() {
        s0 += qm * cum;
        s1 += m as f64 * qm1 * cum;
        qm1 = qm;
        qm *= q;
    }
    let f = alpha * s.tmp[len - 1] + gamma * s0;
    let Some(grad) = grad else { return f };
    grad[service] += h * (ch * s.tmp[len - 1] + ph * (ph - 2.0 * x * ch) * s0 - gamma * q * s1);

    // Every buffer feeds exactly one operation, whose backward step assigns its adjoint:
    // no zeroing needed.
    grow(&mut s.adj, s.val.len());
    let adj = &mut s.adj[rb.range()];
    let mut acc = alpha;
    adj[len - 1] = acc;
    let mut qm = 1.0;
    for a in adj[..len - 1].iter_mut().rev() {
        acc += gamma * qm;
        qm *= q;
        *a = acc;
    }
    s.backward(h, grad);
    f
}

impl Scratch {
    /// Makes `c`'s layout for this lattice current (kept, or built in place of the one used
    /// longest ago), with its phases for these rates, and sizes the buffers.
    fn plan(&mut self, c: &Compiled, params: &[Params], h: f64, off_root: f64, top: i64, fin: usize) {
        self.clock += 1;
        let found = self.layouts.iter().position(|(_, l)| l.fits(c, params, h, off_root, top));
        self.cur = match found {
            Some(n) => n,
            None if self.layouts.len() < LAYOUTS => {
                self.layouts.push((0, Layout::new(c, params, h, off_root, top)));
                self.layouts.len() - 1
            }
            None => {
                let n = (0..self.layouts.len()).min_by_key(|&n| self.layouts[n].0).unwrap_or(0);
                self.layouts[n].1.rebuild(c, params, h, off_root, top);
                n
            }
        };
        let (used, layout) = &mut self.layouts[self.cur];
        *used = self.clock;
        layout.phases(c, params, fin);
        // The buffers only grow: graphs of different sizes take turns on a thread, and
        // truncating then growing again zeroed megabytes per evaluation (4% of the 2,500-service
        // solve's samples). Every operation writes its whole output, so what a larger graph
        // left behind is never read.
        grow(&mut self.val, layout.total);
        if self.kernels.len() < layout.exps.len() {
            self.kernels.resize(layout.exps.len(), Kernel::default());
            self.sums.resize(layout.exps.len(), [0.0; 4]);
        }
    }

    /// Lets evaluations split their subtrees over threads ([`fork`]); off by default: worth
    /// it only when the pool would otherwise idle (fewer large graphs than threads).
    pub(super) fn set_forking(&mut self, on: bool) {
        self.forking = on;
    }

    /// How many layouts this scratch keeps.
    #[cfg(test)]
    pub(super) fn layouts(&self) -> usize {
        self.layouts.len()
    }

    /// How many sums the last plan split in two ([`fork::Node::chain`]).
    #[cfg(test)]
    pub(super) fn split_sums(&self) -> usize {
        self.layouts[self.cur].1.nodes.iter().filter(|n| n.chain > 0).count()
    }

    /// Whether this evaluation splits its subtrees over threads: when allowed, and only from
    /// a rayon worker (from outside the pool every fork would be a cross-thread hand-off).
    fn forks(&self) -> bool {
        self.forking
            && self.layouts[self.cur].1.nodes.last().is_some_and(|n| n.fork)
            && rayon::current_thread_index().is_some()
    }

    #[inline(always)]
    fn forward(&mut self, params: &[Params], h: f64) {
        let forks = self.forks();
        let Scratch { layouts, cur, val, kernels, tmp, .. } = self;
        let Layout { ops, bufs, kids, exps, nodes, node_kids, .. } = &layouts[*cur].1;
        let plan = Plan { ops, bufs, kids, exps };
        let mut part = Values { val, base: 0, kernels, ebase: 0 };
        if forks {
            fork::forward(fork::Tree { nodes, kids: node_kids }, plan, params, h, &mut part, nodes.len() - 1);
        } else {
            ops::forward(plan, params, h, &mut part, tmp, 0..ops.len());
        }
    }

    /// Reverse sweep: `adj` holds the root's adjoint; adds `dF/d rate` into `grad`.
    #[inline(always)]
    fn backward(&mut self, h: f64, grad: &mut [f64]) {
        let forks = self.forks();
        let Scratch { layouts, cur, val, adj, kernels, sums, tmp, .. } = self;
        let Layout { ops, bufs, kids, exps, nodes, node_kids, .. } = &layouts[*cur].1;
        let plan = Plan { ops, bufs, kids, exps };
        let mut part = Adjoints { val, kernels, adj, base: 0, sums, ebase: 0 };
        if forks {
            fork::backward(fork::Tree { nodes, kids: node_kids }, plan, &mut part, nodes.len() - 1);
        } else {
            ops::backward(plan, &mut part, tmp, 0..ops.len());
        }
        ops::gradient(plan, kernels, sums, h, grad);
    }
}

/// Makes `buf` at least `len` long without writing to it. What it held need not be kept
/// (every value and adjoint is assigned before it is read), so it is replaced by fresh
/// zeroed memory (`calloc`: no `memset` of megabytes that `resize` did). For the adjoints, a
/// process's first solve of the 400-service instance went from 11.2 to 10.6 ms (medians of
/// ten processes).
fn grow(buf: &mut Vec<f64>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

/// Mass a convolution may leave out at the top of a measure, beyond its support.
const TAIL: f64 = 1e-17;

/// The length of the prefix of `w` that holds all but `TAIL` of its mass: the tail of a
/// latency measure decays exponentially, and a convolution need not multiply it out.
#[inline(always)]
fn support(w: &[f64]) -> usize {
    let mut tail = 0.0;
    for (i, &v) in w.iter().enumerate().rev() {
        tail += v.abs();
        if tail >= TAIL {
            return i + 1;
        }
    }
    0
}

/// The lattice stand-in for `Exp(rate)`, `x = rate h` (lengths in cells): weight `a` at 0,
/// `c + b` at 1 and `b q^(j-1)` at `j >= 2`, chosen to have the exact mean `mu = 1/x`,
/// variance `mu^2 - absorb` and third cumulant `2 mu^3` of the exponential (from its
/// factorial moments `f2 = E[J(J-1)]`, `f3 = E[J(J-1)(J-2)]`: `q/(1-q) = f3 / (3 f2)`). All
/// weights are non-negative whenever `f2 > 0` (checked over `x < 2`, `absorb <= 1/3`). When
/// `f2 <= 0` (fast phases, `x >= 2`: the exponential sits inside one cell) the variance is
/// clamped to its smallest value on the lattice, `mu (1 - mu)`: two points. `da`, ... are
/// derivatives in `x`.
#[derive(Debug, Clone, Copy, Default)]
struct Kernel {
    a: f64,
    c: f64,
    b: f64,
    q: f64,
    da: f64,
    dc: f64,
    db: f64,
    dq: f64,
}

impl Kernel {
    fn new(x: f64, absorb: f64) -> Self {
        let mu = 1.0 / x;
        let dmu = -mu * mu;
        let f2 = 2.0 * mu * mu - mu - absorb;
        if f2 <= 0.0 {
            return Kernel { a: 1.0 - mu, c: mu, b: 0.0, q: 0.0, da: -dmu, dc: dmu, db: 0.0, dq: 0.0 };
        }
        let df2 = (4.0 * mu - 1.0) * dmu;
        let f3 = 6.0 * mu * mu * mu - 6.0 * mu * mu + 2.0 * mu - 3.0 * mu * absorb + 3.0 * absorb;
        let df3 = (18.0 * mu * mu - 12.0 * mu + 2.0 - 3.0 * absorb) * dmu;
        let r = f3 / (3.0 * f2);
        let dr = (df3 * f2 - f3 * df2) / (3.0 * f2 * f2);
        let q = r / (1.0 + r);
        let dq = dr / ((1.0 + r) * (1.0 + r));
        let b = f2 / (2.0 * r * (1.0 + r) * (1.0 + r));
        let db = b * (df2 / f2 - dr / r - 2.0 * dr / (1.0 + r));
        // c = mu - 3 f2^2 / (2 f3), expanded so that nothing cancels.
        let n = mu * mu * (1.0 + 6.0 * absorb) - 3.0 * absorb * absorb;
        let dn = 2.0 * mu * (1.0 + 6.0 * absorb) * dmu;
        let c = n / (2.0 * f3);
        let dc = (dn * f3 - n * df3) / (2.0 * f3 * f3);
        let a = 1.0 - c - b * (1.0 + r);
        let da = -dc - db * (1.0 + r) - b * dr;
        Kernel { a, c, b, q, da, dc, db, dq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mass, mean, variance and third cumulant of the kernel, in cells.
    fn moments(k: &Kernel) -> [f64; 4] {
        let mut m = [0.0; 4];
        let mut w = |j: f64, p: f64| {
            for (i, v) in m.iter_mut().enumerate() {
                *v += p * j.powi(i as i32);
            }
        };
        w(0.0, k.a);
        w(1.0, k.c);
        let mut p = k.b;
        for j in 1..200_000 {
            w(f64::from(j), p);
            p *= k.q;
            if p < 1e-300 {
                break;
            }
        }
        let mean = m[1];
        let var = m[2] - mean * mean;
        let k3 = m[3] - 3.0 * mean * m[2] + 2.0 * mean.powi(3);
        [m[0], mean, var, k3]
    }

    #[test]
    fn kernel_matches_three_moments_with_non_negative_weights() {
        for x in [1e-3, 0.01, 0.3, 1.0, 1.7, 1.99] {
            for absorb in [0.0, 0.1, 1.0 / 3.0] {
                let k = Kernel::new(x, absorb);
                assert!(
                    k.a >= 0.0 && k.c + k.b >= 0.0 && k.b >= 0.0 && (0.0..1.0).contains(&k.q),
                    "{x} {absorb}: {k:?}"
                );
                let mu = 1.0 / x;
                let [mass, mean, var, k3] = moments(&k);
                let want = [1.0, mu, (mu * mu - absorb).max(mu * (1.0 - mu)), 2.0 * mu.powi(3)];
                for (got, want) in [mass, mean, var].iter().zip(&want) {
                    assert!((got - want).abs() <= 1e-9 * want.max(1.0), "{x} {absorb}: {got} vs {want}");
                }
                if 2.0 * mu * mu - mu - absorb > 0.0 {
                    assert!((k3 - want[3]).abs() <= 1e-8 * want[3].max(1.0), "{x} {absorb}: k3 {k3} vs {}", want[3]);
                }
            }
        }
    }

    #[test]
    fn kernel_derivatives_match_finite_differences() {
        for x in [0.01, 0.3, 1.0, 1.7, 2.5] {
            for absorb in [0.0, 0.2] {
                let (k, e) = (Kernel::new(x, absorb), 1e-6 * x);
                let (p, m) = (Kernel::new(x + e, absorb), Kernel::new(x - e, absorb));
                for (d, hi, lo) in [(k.da, p.a, m.a), (k.dc, p.c, m.c), (k.db, p.b, m.b), (k.dq, p.q, m.q)] {
                    let fd = (hi - lo) / (2.0 * e);
                    assert!((d - fd).abs() <= 1e-6 * fd.abs().max(1e-3), "x {x} absorb {absorb}: {d} vs {fd}");
                }
            }
        }
    }
}
