//! The continuous problem in rate form and its KKT solution.
//!
//! With `rate_i = a_i * w_i + b_i`, containers are `R_i(rate) = W_i |a_i| / (b_i - rate)`:
//! convex and increasing. Minimise `sum R_i` subject to `G(rate) >= p`, `G` increasing in
//! every rate. Stationarity: `R_i'(rate_i) = mu * dG/drate_i`, i.e.
//! `rate_i = b_i - sqrt(W_i |a_i| / (mu * g_i))`, and the constraint is tight at the optimum.
//!
//! Each iteration evaluates `G` and its gradient once, each graph's part separately (all
//! graphs in parallel), then chooses the smallest `mu` whose `rate(mu)` meets the
//! constraint, and moves there. This is sequential quadratic programming with the exact
//! separable objective; a fixed point is a KKT point. The multiplier is searched through a
//! per-graph model built from that evaluation ([`Model`]: each graph's log-odds linear in
//! the rates), in the model's log-odds, with secant steps on the true constraint's
//! ([`root`](super::root); one to six evaluations without gradient), so every iterate is
//! feasible and tight and only the shape of the gradient iterates. Iterations stop at a
//! rate step below [`TOLERANCE`] (relative to `b`): the objective's error is second order
//! in that step, far below one container. The answer is the best iterate, or the start
//! when that is feasible and no step improved on it (a step is not always a descent: one
//! from the coarse pass's answer of a random 2,500-service app went the wrong way by 4x).
//!
//! Starting points ([`Start`]): `Erms` (the deterministic square-root split of Erms: with a
//! budget on the mean path latency, `rate_i = b_i / (1 + s sqrt|a_i|)`, scaled by `s` until
//! `G = p`), `Paired` (Derm's observation that optimal rates pair up: services sorted by load
//! sensitivity `a_i` are paired and each pair shares the pair's Erms rate), and `Flat` (every
//! container at the same utilisation, as a CPU HPA would leave it).

use super::Error;
use super::eval::{self, Kind};
use super::model::{self, Model};
use super::problem::Problem;
use super::{root, start};

/// Starting point of the KKT iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    Paired,
    Erms,
    Flat,
}

/// Step in rates (relative to `b`) and constraint error at which the iteration stops.
pub const TOLERANCE: f64 = 1e-4;
/// Relative objective progress over [`STALL_WINDOW`] iterations below which the iteration stops.
pub const OBJECTIVE_TOLERANCE: f64 = 1e-5;
/// Iterations over which progress is measured.
pub const STALL_WINDOW: usize = 3;
/// How far above the target the tight multiplier may leave the constraint.
pub const CONSTRAINT_TOLERANCE: f64 = 1e-6;
/// Largest change of a service's `ln kappa` in one iteration (a trust region on the shape).
const SHAPE_STEP: f64 = 2.0 * std::f64::consts::LN_2;
/// Iteration cap; the best feasible point is kept if it is reached.
pub const MAX_ITERATIONS: u32 = 200;
/// Fraction of `b` kept as the upper end of a rate (infinitely many containers otherwise).
const RATE_CEILING: f64 = 1.0 - 1e-9;

/// The continuous optimum.
#[derive(Debug, Clone)]
pub struct Solution {
    pub rates: Vec<f64>,
    pub probability: f64,
    pub iterations: u32,
    /// Sum of continuous containers over optimised services.
    pub objective: f64,
    /// Exact evaluations made, by phase.
    pub evaluations: Evaluations,
    /// Each graph's value and gradient where the last step started (the integer repair's
    /// model is built from it).
    pub gradient: eval::Gradient,
}

/// Exact constraint evaluations of a solve, by phase (the cost model of the solver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluations {
    /// Values (no gradient) to place the starting point on the boundary.
    pub start: u32,
    /// Values and gradients, one per iteration.
    pub gradients: u32,
    /// Values to make each iterate's multiplier tight.
    pub tight: u32,
    /// Values after the iteration (feasibility check, final probability).
    pub finish: u32,
    /// All evaluations of the coarse pass, on its cheaper lattice (see [`solve`]).
    pub coarse: u32,
}

impl Evaluations {
    /// Evaluations of every phase (a gradient counted as one).
    pub fn total(&self) -> u32 {
        self.start + self.gradients + self.tight + self.finish + self.coarse
    }
}

/// Which rates the solver chooses and their box.
#[derive(Debug, Clone)]
pub struct Space {
    pub active: Vec<bool>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    /// Rates of services the solver does not choose (rare-only, load-insensitive).
    pub fixed: Vec<f64>,
}

/// Utilisation for services seen only in rare graphs: a safe minimum with a wide margin.
pub const RARE_UTILIZATION: f64 = 0.7;

impl Space {
    pub fn new(problem: &Problem) -> Self {
        let n = problem.services.len();
        let mut space = Space { active: vec![false; n], lo: vec![0.0; n], hi: vec![0.0; n], fixed: vec![0.0; n] };
        for (i, s) in problem.services.iter().enumerate() {
            if s.demand_rps <= 0.0 {
                space.fixed[i] = s.b.max(f64::MIN_POSITIVE);
            } else if !s.sensitive() {
                // Load-insensitive by the profile: never load a container beyond what was seen.
                let n_i = ((s.demand_rps / s.w_max_rps).ceil() as u32).max(s.bounds.min).min(s.bounds.max).max(1);
                space.fixed[i] = s.rate_at(n_i);
            } else if !s.frequent {
                let cap = s.b / -s.a;
                let n_i = ((s.demand_rps / (RARE_UTILIZATION * cap)).ceil() as u32)
                    .max(s.bounds.min)
                    .min(s.bounds.max)
                    .max(1);
                space.fixed[i] = s.rate_at(n_i);
            } else {
                space.active[i] = true;
                let hi = if s.bounds.max == u32::MAX {
                    s.b * RATE_CEILING
                } else {
                    s.rate_at(s.bounds.max).min(s.b * RATE_CEILING)
                };
                let lo = s.rate_at(s.bounds.min.max(1)).max((1.0 - problem.max_utilization) * s.b);
                space.hi[i] = hi;
                space.lo[i] = lo.min(hi);
            }
        }
        space
    }

    /// Rates with the fixed services filled in.
    pub fn full(&self, active_rates: &[f64]) -> Vec<f64> {
        active_rates.iter().zip(&self.active).zip(&self.fixed).map(|((r, a), f)| if *a { *r } else { *f }).collect()
    }

    pub fn clip(&self, i: usize, r: f64) -> f64 {
        r.clamp(self.lo[i], self.hi[i])
    }
}

/// The coarse pass's lattices are this many times coarser (see [`solve`]) ...
pub const COARSE_FACTOR: usize = 4;
/// ... with at least this many cells.
pub const COARSE_MIN_CELLS: usize = 64;
/// Stopping tolerances of the coarse pass: its answer is only the fine pass's start.
const COARSE_TOLERANCE: f64 = 1e-2;
const COARSE_OBJECTIVE_TOLERANCE: f64 = 1e-3;
const COARSE_CONSTRAINT_TOLERANCE: f64 = 1e-3;

/// Where an iteration starts.
enum Init<'a> {
    /// From a start, to the coarse pass's looser tolerance.
    Coarse(Start),
    Start(Start),
    /// Rates of a nearby problem's solution (the coarse pass's), clipped to this box.
    Near(&'a [f64]),
}

/// Solve the continuous problem from `start`. `weights` are the graphs' constraint weights.
///
/// Coarse to fine: when a graph is evaluated on a lattice that [`COARSE_FACTOR`] can coarsen,
/// the iteration first runs on the coarse lattices (an evaluation costs about a quarter of a
/// fine one on the benchmark's graphs), to looser tolerances, and one fine step starts from
/// its solution instead of the whole descent. The fine step alone decides the answer, its
/// feasibility and infeasibility errors; a coarse pass
/// that fails (its lattice can misjudge a barely feasible target) falls back to a fine solve
/// from `start`.
pub fn solve(problem: &Problem, kind: Kind, weights: &[f64], start: Start) -> Result<Solution, Error> {
    let Some(coarse) = problem.coarse(COARSE_FACTOR, COARSE_MIN_CELLS) else {
        return iterate(problem, kind, weights, Init::Start(start));
    };
    match iterate(&coarse, kind, weights, Init::Coarse(start)) {
        Ok(first) => {
            let mut sol = iterate(problem, kind, weights, Init::Near(&first.rates))?;
            sol.iterations += first.iterations;
            sol.evaluations.coarse = first.evaluations.total();
            Ok(sol)
        }
        Err(_) => iterate(problem, kind, weights, Init::Start(start)),
    }
}

/// [`solve`] without the coarse pass: the whole descent on the problem's own lattices (the
/// reference the coarse-to-fine answer is tested against).
pub fn solve_fine(problem: &Problem, kind: Kind, weights: &[f64], start: Start) -> Result<Solution, Error> {
    iterate(problem, kind, weights, Init::Start(start))
}

fn iterate(problem: &Problem, kind: Kind, weights: &[f64], init: Init<'_>) -> Result<Solution, Error> {
    let space = Space::new(problem);
    let target = problem.percentile;
    let count = std::cell::Cell::new(0u32);
    // The last point and its value: the final checks usually ask again for the last iterate.
    let last = std::cell::RefCell::new((Vec::new(), 0.0));
    let g_of = |rates: &[f64]| {
        if let Some(v) = last.borrow().0.eq(rates).then_some(last.borrow().1) {
            return v;
        }
        count.set(count.get() + 1);
        let v = eval::value(problem, kind, weights, &problem.params(rates));
        *last.borrow_mut() = (rates.to_vec(), v);
        v
    };
    // From a nearby solution one step on the fine lattice: a second step only ever served
    // as the stopping test, and was worse than the first on all three benchmark instances
    // (the 2,500-service app: 32,142 continuous containers against 28,473).
    let (tolerance, stall, window, window_tol, cap) = match init {
        Init::Coarse(_) => {
            (COARSE_TOLERANCE, COARSE_OBJECTIVE_TOLERANCE, STALL_WINDOW, COARSE_CONSTRAINT_TOLERANCE, MAX_ITERATIONS)
        }
        Init::Start(_) => (TOLERANCE, OBJECTIVE_TOLERANCE, STALL_WINDOW, CONSTRAINT_TOLERANCE, MAX_ITERATIONS),
        Init::Near(_) => (TOLERANCE, OBJECTIVE_TOLERANCE, 1, CONSTRAINT_TOLERANCE, 1),
    };
    let window_of = root::Window { target, tol: window_tol };
    let mut rates = match init {
        Init::Start(start) | Init::Coarse(start) => {
            let approx = |rates: &[f64]| eval::approx_value(problem, kind, weights, &problem.params(rates));
            start::point(problem, &space, start, window_of, &g_of, &approx)
        }
        // No search: the step's model-guided multiplier absorbs the small deficit.
        Init::Near(near) => near
            .iter()
            .enumerate()
            .map(|(i, r)| if space.active[i] { space.clip(i, *r) } else { space.fixed[i] })
            .collect(),
    };
    // Whether the target is reachable at all (the box top, an evaluation) is asked only when
    // the start's search ended below it: its last evaluation is usually the point it returns,
    // so a reachable target costs nothing more. From a nearby solution the target is all but
    // known to be reachable: the check is left to the end, where a point that cannot be made
    // feasible means the same.
    if !matches!(init, Init::Near(_)) && g_of(&rates) < target && g_of(&space.full(&space.hi)) < target {
        return Err(infeasible(problem, kind, weights, &space));
    }
    let mut evaluations = Evaluations { start: count.replace(0), ..Evaluations::default() };
    let active: Vec<usize> = (0..rates.len()).filter(|i| space.active[*i]).collect();
    let mut grad = vec![0.0; rates.len()];
    let mut last_gradient = eval::Gradient::default();
    let mut kappa = vec![0.0; rates.len()];
    let mut log_kappa = vec![0.0; rates.len()];
    let mut alpha = vec![1.0f64; rates.len()];
    let mut direction = vec![0.0f64; rates.len()];
    let mut history: Vec<f64> = Vec::new();
    // The best iterate: objective, rates, and its constraint value when the search left it in
    // the cache (its accepted trial), which spares evaluating it again at the end.
    let mut best: Option<(f64, Vec<f64>, Option<f64>)> = None;
    let mut iterations = 0;
    while iterations < cap {
        iterations += 1;
        let (value, parts) = eval::value_grad_graphs(problem, kind, weights, &problem.params(&rates), &mut grad);
        evaluations.gradients += 1;
        // A feasible start is an answer too: a step may land on a worse one than where it
        // started (one fine step from the coarse answer of a random 2,500-service app went from
        // 23,299 to 102,677 continuous containers).
        if iterations == 1 && value >= target {
            best = Some((objective(problem, &space, &rates), rates.clone(), Some(value)));
        }
        // A phase's own rate dominates its partial derivative, roughly `kappa / rate^2`
        // (dF/drate = f_{Z+Y}(t) / rate^2); the shape uses that local model.
        // Services in parallel branches switch between critical (large derivative) and
        // not (near zero) as their rate moves, which makes the shape alternate: each
        // service's kappa moves in log space by its own factor, halved whenever its rate
        // reverses direction and grown back while it does not (per-coordinate damping), and
        // by at most a factor of four relative to the others per iteration (a trust region: on large graphs the
        // undamped shape jumps by decades and the objective never settles). The first step
        // starts from the shape for which the start is stationary. The fixed point,
        // kappa = g * rate^2, is unchanged.
        let top = grad.iter().zip(&rates).map(|(g, r)| g * r * r).fold(0.0, f64::max);
        let floor = (top * 1e-30).max(f64::MIN_POSITIVE);
        let fresh: Vec<f64> = grad.iter().zip(&rates).map(|(g, r)| (g * r * r).max(floor).ln()).collect();
        if iterations == 1 {
            start::implied_shape(problem, &space, &rates, &grad, &fresh, &mut log_kappa);
        }
        // The trust region bounds the shape, not its level (a common factor of kappa is
        // absorbed by mu): steps are clamped about their median over the optimised services.
        // Services no weighted graph calls (zero gradient) have no say in the level.
        let level = start::median(
            active.iter().filter(|&&i| grad[i] > 0.0).map(|&i| alpha[i] * (fresh[i] - log_kappa[i])).collect(),
        );
        for i in 0..rates.len() {
            let step = alpha[i] * (fresh[i] - log_kappa[i]);
            log_kappa[i] += level + (step - level).clamp(-SHAPE_STEP, SHAPE_STEP);
            kappa[i] = log_kappa[i].exp();
        }
        let shape = Shape::new(problem, &space, &kappa);
        // The tight multiplier of the new shape, searched through the per-graph model built
        // here: every iterate is tight, so only the shape (the gradient's direction) iterates.
        *last.borrow_mut() = (rates.clone(), value);
        let model = Model::new(problem, kind, weights, &rates, &parts);
        let log_mu = shape.tight(&model, &rates, window_of, &g_of);
        let next = shape.rates(log_mu);
        let mut change: f64 = 0.0;
        for &i in &active {
            let d = next[i] - rates[i];
            change = change.max(d.abs() / problem.services[i].b);
            alpha[i] = if d * direction[i] < 0.0 { alpha[i] * 0.5 } else { (alpha[i] * 1.5).min(1.0) };
            direction[i] = d.signum();
        }
        last_gradient = eval::Gradient { at: std::mem::replace(&mut rates, next), graphs: parts };
        // Every iterate is tight (feasible), so the best one so far is a valid answer and the
        // objective's progress is a stopping test of its own: large instances always have some
        // service still moving by more than TOLERANCE while the total no longer changes.
        let obj = objective(problem, &space, &rates);
        history.push(obj);
        if best.as_ref().is_none_or(|(o, ..)| obj < *o) {
            let known = {
                let l = last.borrow();
                (l.0 == rates).then_some(l.1)
            };
            best = Some((obj, rates.clone(), known));
        }
        let stalled = history.len() > window && {
            let old = history[history.len() - 1 - window];
            let recent = history[history.len() - window..].iter().copied().fold(f64::INFINITY, f64::min);
            (old - recent) <= stall * recent.abs()
        };
        if change < tolerance || stalled {
            break;
        }
    }
    evaluations.tight = count.replace(0);
    if let Some((_, r, known)) = best {
        if let Some(v) = known {
            *last.borrow_mut() = (r.clone(), v);
        }
        rates = r;
    }
    // Make the point feasible (tight): raise the rates not held at their floor towards the
    // box top, by bisection on the fraction of the way.
    let mut probability = g_of(&rates);
    if probability < target {
        let base = rates.clone();
        let at = |t: f64, all: bool| -> Vec<f64> {
            base.iter()
                .zip(&space.hi)
                .zip(&space.lo)
                .map(|((r, h), l)| if all || *r > l * (1.0 + 1e-9) { r + t * (h - r) } else { *r })
                .collect()
        };
        let all = g_of(&at(1.0, false)) < target;
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if g_of(&at(mid, all)) >= target { hi = mid } else { lo = mid }
        }
        rates = at(hi, all);
        probability = g_of(&rates);
        if probability < target {
            return Err(infeasible(problem, kind, weights, &space));
        }
    }
    evaluations.finish = count.get();
    Ok(Solution {
        objective: objective(problem, &space, &rates),
        rates,
        probability,
        iterations,
        evaluations,
        gradient: last_gradient,
    })
}

/// Sum of continuous containers of the optimised services.
pub fn objective(problem: &Problem, space: &Space, rates: &[f64]) -> f64 {
    problem
        .services
        .iter()
        .zip(rates)
        .zip(&space.active)
        .filter(|(_, a)| **a)
        .map(|((s, r), _)| s.containers_for(*r))
        .sum()
}

/// Rates solving stationarity, `rate_i(mu) = b_i - sqrt(W_i |a_i| / (mu * g_i))` within the
/// box, for a fixed gradient `g`; parametrised by `log10 mu`.
struct Shape<'a> {
    problem: &'a Problem,
    space: &'a Space,
    kappa: &'a [f64],
    /// `sqrt(W_i |a_i| / kappa_i)`: `rate_i = b_i / (1 + scale_i / sqrt(mu))`.
    scale: Vec<f64>,
}

impl<'a> Shape<'a> {
    fn new(problem: &'a Problem, space: &'a Space, kappa: &'a [f64]) -> Self {
        let scale = problem.services.iter().zip(kappa).map(|(s, k)| (s.demand_rps * -s.a / k).sqrt()).collect();
        Shape { problem, space, kappa, scale }
    }

    /// Service `i`'s rate at `mu` (given as `1 / sqrt(mu)`), and its derivative in
    /// `log10 mu` (0 where the box clips it or the service is not optimised).
    fn rate(&self, i: usize, inv_sqrt_mu: f64) -> (f64, f64) {
        if !self.space.active[i] {
            return (self.space.fixed[i], 0.0);
        }
        if self.kappa[i] <= 0.0 {
            return (self.space.lo[i], 0.0);
        }
        // Stationarity with dG/drate_i = kappa_i / rate_i^2:
        // W_i |a_i| / (b_i - rate)^2 = mu kappa_i / rate^2.
        let s = &self.problem.services[i];
        let u = self.scale[i] * inv_sqrt_mu;
        let r = s.b / (1.0 + u);
        let clipped = self.space.clip(i, r);
        // d rate / d ln mu = b u / (2 (1 + u)^2).
        let d = if clipped == r { s.b * u / (2.0 * (1.0 + u).powi(2)) * std::f64::consts::LN_10 } else { 0.0 };
        (clipped, d)
    }

    fn rates(&self, log_mu: f64) -> Vec<f64> {
        let inv = 10f64.powf(-0.5 * log_mu);
        (0..self.problem.services.len()).map(|i| self.rate(i, inv).0).collect()
    }

    /// The log-multiplier nearest to `rates` on this shape: the median of what each optimised
    /// service's own rate implies (the search's start).
    fn nearest(&self, rates: &[f64]) -> f64 {
        let implied = (0..rates.len())
            .filter(|&i| self.space.active[i] && self.kappa[i] > 0.0)
            .filter(|&i| rates[i] > self.space.lo[i] && rates[i] < self.space.hi[i])
            .map(|i| {
                let s = &self.problem.services[i];
                let u = s.b / rates[i] - 1.0;
                (s.demand_rps * -s.a / (self.kappa[i] * u * u)).log10()
            })
            .filter(|x| x.is_finite())
            .collect();
        start::median(implied).clamp(-root::LIMIT, root::LIMIT)
    }

    /// The log-multiplier at which the model's log-odds are `u` (an end of the range where
    /// they never are): Newton steps from `x`, safeguarded by the bracket they build, and
    /// steps of a decade where the model is flat.
    fn invert(&self, model: &Model, u: f64, mut x: f64) -> f64 {
        // Only the rates the model reads: on the 2,500-service benchmark this search ran on
        // the solve's critical path while the other worker waited.
        let n = self.problem.services.len();
        let (mut r, mut d) = (vec![0.0; n], vec![0.0; n]);
        let mut h = |log_mu: f64| {
            let inv = 10f64.powf(-0.5 * log_mu);
            for &i in model.services() {
                (r[i], d[i]) = self.rate(i, inv);
            }
            let (m, dm) = model.value(&r, &d);
            (root::logit(m) - u, dm / model::spread(m))
        };
        let (mut lo, mut hi) = (-root::LIMIT, root::LIMIT);
        for _ in 0..100 {
            let (hx, dx) = h(x);
            if hx.abs() < 1e-9 {
                return x;
            }
            if hx < 0.0 {
                lo = x;
            } else {
                hi = x;
            }
            if hi - lo < 1e-12 * (1.0 + x.abs()) {
                break;
            }
            let newton = x - hx / dx;
            x = if dx > 0.0 && newton > lo && newton < hi {
                newton
            } else if hx < 0.0 && hi >= root::LIMIT {
                (x + 1.0).min(root::LIMIT)
            } else if hx > 0.0 && lo <= -root::LIMIT {
                (x - 1.0).max(-root::LIMIT)
            } else {
                0.5 * (lo + hi)
            };
        }
        if h(x).0 < 0.0 { hi } else { x }
    }

    /// The smallest multiplier (fewest containers) with `G(rate(mu)) >= target`, searched
    /// in the model's log-odds: where the model is right, the true constraint's log-odds
    /// move one for one with them, so the first try aims at the window's middle and the
    /// next corrects by what the first missed (at most four log-odds units); then secant
    /// steps on the log-odds ([`root::search`]; on the benchmark instances two to four
    /// evaluations per coarse iteration, five or six in the fine step's narrower window).
    fn tight(&self, model: &Model, rates: &[f64], w: root::Window, g_of: &dyn Fn(&[f64]) -> f64) -> f64 {
        // Each inversion starts from the one nearest in log-odds (the first from the shape's
        // multiplier nearest to `rates`), and the search's answer was inverted already.
        let start = self.nearest(rates);
        let done: std::cell::RefCell<Vec<(f64, f64)>> = Default::default();
        let at = |u: f64| {
            let near = done.borrow().iter().copied().min_by(|a, b| (a.0 - u).abs().total_cmp(&(b.0 - u).abs()));
            match near {
                Some((u0, x0)) if u0 == u => x0,
                _ => {
                    let x = self.invert(model, u, near.map_or(start, |(_, x0)| x0));
                    done.borrow_mut().push((u, x));
                    x
                }
            }
        };
        let g = |u: f64| g_of(&self.rates(at(u)));
        let aim = root::logit(w.target + 0.5 * w.tol);
        let g0 = g(aim);
        let first = (aim - root::logit(g0)).clamp(-4.0, 4.0);
        let u = root::search(&g, w, (aim, g0), first);
        at(u)
    }
}

/// Explain why the target cannot be reached even with unlimited containers.
fn infeasible(problem: &Problem, kind: Kind, weights: &[f64], space: &Space) -> Error {
    let params = problem.params(&space.full(&space.hi));
    for (g, w) in problem.graphs.iter().zip(weights) {
        if *w > 0.0 {
            let min = g.compiled.min_latency_ms(&params);
            if min >= problem.sla_ms {
                return Error::Infeasible { graph: g.id.clone(), min_latency_ms: min, sla_ms: problem.sla_ms };
            }
        }
    }
    Error::Unreachable {
        best: eval::value(problem, kind, weights, &params),
        percentile: problem.percentile,
        worst_graph: eval::weakest(problem, weights, &params),
    }
}
