//! A graph's independent subtrees on separate threads.
//!
//! The children of a maximum (parallel calls) and the maxima convolved into a sum do not
//! depend on each other. Each node of the graph's tree records its subtree's operations,
//! buffers and phases (contiguous: the plan is in post-order) and an estimated cost; a node's
//! children are split into two halves of about equal cost and run under `rayon::join` when
//! both halves are worth a thread ([`FORK_MIN`]), then the node's own operations run. The
//! reverse sweep runs the node's own operations first, then its children's halves. A sum
//! whose factors split that way is also planned split ([`Node::chain`]): each side's partial
//! sums are convolved on the thread that computed its factors, and one convolution joins the
//! two (on the benchmark's 400-call graph the root's own operations, 14 convolutions and its
//! phases, had run on one core after both halves joined: 118 of 300 us of an evaluation). The
//! plan is the same whether or not an evaluation forks. Every
//! operation computes the same thing wherever it runs, and the gradient is summed afterwards
//! in the serial order ([`ops::gradient`]): results are bit-identical to a serial run.
//!
//! Off unless the caller asks ([`crate::latency::Workspace::set_forking`]): the optimizer
//! evaluates graphs in parallel and forks only a graph holding more than one thread's share
//! of the work, e.g. a single 400-call graph, which would otherwise use one core.

use pulp::{Arch, Simd, WithSimd};

use super::ops::{self, Adjoints, Plan, Values};
use super::{Buf, Op};
use crate::latency::Params;
use crate::optimize::awake::busy;

/// Estimated cost (about nanoseconds) below which half of a split is not worth a thread: a
/// steal costs a microsecond or two when the other workers spin (the optimizer keeps them
/// awake while it forks), tens when they must be woken.
pub(super) const FORK_MIN: f64 = 15_000.0;

/// A sum or maximum of the graph, as a subtree of the plan.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Node {
    /// The subtree's first operation; the node's own first operation; one past its last.
    pub start: usize,
    pub own: usize,
    pub end: usize,
    /// The subtree's first buffer offset and first phase.
    pub off: usize,
    pub phase: usize,
    /// Its children: `kids[a..b]` of the tree.
    pub kids: (usize, usize),
    /// Estimated cost of the subtree.
    pub cost: f64,
    /// Whether some split in the subtree is worth a thread.
    pub fork: bool,
    /// Its own buffers (indices).
    pub bufs: (usize, usize),
    /// A sum split in two ([`super::layout::Layout`]): how many of its factors are on the left
    /// (its first `chain` operations are their partial sums, the next `kids - chain - 1` the
    /// right side's, then the convolution of the two); 0 when not split.
    pub chain: usize,
}

/// The nodes (post-order: the root last) and their children lists.
#[derive(Clone, Copy)]
pub(super) struct Tree<'a> {
    pub nodes: &'a [Node],
    pub kids: &'a [usize],
}

/// Estimated cost of one operation (about nanoseconds: measured per cell on the benchmark's
/// 400-call graph; a convolution's supports are not known before it runs, so its full
/// windows stand in).
pub(super) fn cost(op: &Op, bufs: &[Buf]) -> f64 {
    let len = |b: usize| bufs[b].len() as f64;
    match *op {
        Op::Point { out, .. } => 0.1 * len(out),
        Op::Shift { out, .. } => 0.5 * len(out),
        Op::Conv { a, b, .. } => CONV_COST * len(a) * len(b),
        Op::Exps { count, out, .. } => count as f64 * len(out),
        Op::Max { kids, out } => 1.5 * (kids.1 - kids.0) as f64 * len(out),
    }
}

/// Cost of one multiply-add of a convolution (about nanoseconds, vectorised).
const CONV_COST: f64 = 0.1;

/// Estimated cost of a convolution of two windows of `len` nodes, as [`cost`].
pub(super) fn conv_cost(len: i64) -> f64 {
    CONV_COST * (len as f64).powi(2)
}

impl Tree<'_> {
    fn kids_of(&self, n: usize) -> &[usize] {
        let (a, b) = self.nodes[n].kids;
        &self.kids[a..b]
    }

    /// Where to split `list` into two halves of about equal cost, if both are worth a thread.
    pub fn split(&self, list: &[usize]) -> Option<usize> {
        self.split_with(list, 0.0)
    }

    /// [`Self::split`] with `extra` added to each element's cost.
    pub fn split_with(&self, list: &[usize], extra: f64) -> Option<usize> {
        let total: f64 = list.iter().map(|&k| self.nodes[k].cost + extra).sum();
        let mut left = 0.0;
        let mut best: Option<(usize, f64)> = None;
        for (m, &k) in list.iter().enumerate().take(list.len().saturating_sub(1)) {
            left += self.nodes[k].cost + extra;
            let smaller = left.min(total - left);
            if best.is_none_or(|(_, s)| smaller > s) {
                best = Some((m + 1, smaller));
            }
        }
        best.filter(|(_, s)| *s >= FORK_MIN).map(|(m, _)| m)
    }

    /// Whether node `n`'s subtree forks anywhere (its children are already set).
    pub fn forks(&self, n: usize) -> bool {
        let kids = self.kids_of(n);
        kids.iter().any(|&k| self.nodes[k].fork) || self.split(kids).is_some()
    }
}

/// Runs node `n`'s subtree forward on `part` (which holds the whole subtree).
pub(super) fn forward(tree: Tree<'_>, plan: Plan<'_>, params: &[Params], h: f64, part: &mut Values<'_>, n: usize) {
    let node = tree.nodes[n];
    if !node.fork {
        return serial_forward(plan, params, h, part, node.start..node.end);
    }
    let kids = tree.kids_of(n);
    let rest = match node.chain {
        0 => {
            forward_list(tree, plan, params, h, part, kids);
            node.own
        }
        // A split sum: each side's subtrees, then its partial sums, on its own thread.
        m => {
            let right_end = node.own + kids.len() - 1;
            let mid = tree.nodes[kids[m]];
            let (mut left, mut right) = part.split(mid.off, mid.phase);
            rayon::join(
                || {
                    busy(|| {
                        forward_list(tree, plan, params, h, &mut left, &kids[..m]);
                        serial_forward(plan, params, h, &mut left, node.own..node.own + m);
                    })
                },
                || {
                    busy(|| {
                        forward_list(tree, plan, params, h, &mut right, &kids[m..]);
                        serial_forward(plan, params, h, &mut right, node.own + m..right_end);
                    })
                },
            );
            right_end
        }
    };
    serial_forward(plan, params, h, part, rest..node.end);
}

fn forward_list(tree: Tree<'_>, plan: Plan<'_>, params: &[Params], h: f64, part: &mut Values<'_>, list: &[usize]) {
    match tree.split(list) {
        Some(m) => {
            let mid = tree.nodes[list[m]];
            let (mut left, mut right) = part.split(mid.off, mid.phase);
            // Marked as a solve's work: a thief never starts an awake loop above it.
            rayon::join(
                || busy(|| forward_list(tree, plan, params, h, &mut left, &list[..m])),
                || busy(|| forward_list(tree, plan, params, h, &mut right, &list[m..])),
            );
        }
        None => list.iter().for_each(|&k| forward(tree, plan, params, h, part, k)),
    }
}

/// Runs node `n`'s subtree in reverse on `part`.
pub(super) fn backward(tree: Tree<'_>, plan: Plan<'_>, part: &mut Adjoints<'_>, n: usize) {
    let node = tree.nodes[n];
    if !node.fork {
        return serial_backward(plan, part, node.start..node.end);
    }
    let kids = tree.kids_of(n);
    match node.chain {
        0 => {
            serial_backward(plan, part, node.own..node.end);
            backward_list(tree, plan, part, kids);
        }
        m => {
            let right_end = node.own + kids.len() - 1;
            serial_backward(plan, part, right_end..node.end);
            let mid = tree.nodes[kids[m]];
            let (mut left, mut right) = part.split(mid.off, mid.phase);
            rayon::join(
                || {
                    busy(|| {
                        serial_backward(plan, &mut left, node.own..node.own + m);
                        backward_list(tree, plan, &mut left, &kids[..m]);
                    })
                },
                || {
                    busy(|| {
                        serial_backward(plan, &mut right, node.own + m..right_end);
                        backward_list(tree, plan, &mut right, &kids[m..]);
                    })
                },
            );
        }
    }
}

fn backward_list(tree: Tree<'_>, plan: Plan<'_>, part: &mut Adjoints<'_>, list: &[usize]) {
    match tree.split(list) {
        Some(m) => {
            let mid = tree.nodes[list[m]];
            let (mut left, mut right) = part.split(mid.off, mid.phase);
            rayon::join(
                || busy(|| backward_list(tree, plan, &mut left, &list[..m])),
                || busy(|| backward_list(tree, plan, &mut right, &list[m..])),
            );
        }
        // Reverse order, as the serial sweep (only for readability: the subtrees are disjoint).
        None => list.iter().rev().for_each(|&k| backward(tree, plan, part, k)),
    }
}

thread_local! {
    /// Scratch of the operations run on this thread outside the graph's own (forked runs).
    static TMP: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

// A forked run is a new call on another thread: it dispatches to the widest vector unit
// again (see `latency`'s dispatch note), or it would run baseline code.

struct ForwardRun<'a, 'b> {
    plan: Plan<'a>,
    params: &'a [Params],
    h: f64,
    part: &'a mut Values<'b>,
    tmp: &'a mut Vec<f64>,
    ops: std::ops::Range<usize>,
}

impl WithSimd for ForwardRun<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        ops::forward(self.plan, self.params, self.h, self.part, self.tmp, self.ops)
    }
}

fn serial_forward(plan: Plan<'_>, params: &[Params], h: f64, part: &mut Values<'_>, ops: std::ops::Range<usize>) {
    TMP.with_borrow_mut(|tmp| Arch::new().dispatch(ForwardRun { plan, params, h, part, tmp, ops }))
}

struct BackwardRun<'a, 'b> {
    plan: Plan<'a>,
    part: &'a mut Adjoints<'b>,
    tmp: &'a mut Vec<f64>,
    ops: std::ops::Range<usize>,
}

impl WithSimd for BackwardRun<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        ops::backward(self.plan, self.part, self.tmp, self.ops)
    }
}

fn serial_backward(plan: Plan<'_>, part: &mut Adjoints<'_>, ops: std::ops::Range<usize>) {
    TMP.with_borrow_mut(|tmp| Arch::new().dispatch(BackwardRun { plan, part, tmp, ops }))
}

#[cfg(test)]
mod tests {
    use crate::generate::instance::Spec;
    use crate::latency::{Compiled, Params, Workspace};

    /// A large random graph, its params at 30% of each service's zero-load rate, and its SLA.
    fn big_graph(seed: u64) -> (Compiled, Vec<Params>, f64) {
        let inst = Spec { services: 400, graphs: 1, graph_size: (400, 400), parallel: 0.3, seed }.generate();
        let names: Vec<&String> = inst.profiles.services.keys().collect();
        let c = Compiled::new(&inst.graphs[0].root, |s| names.iter().position(|n| *n == s)).expect("compiles");
        let params =
            inst.profiles.services.values().map(|p| Params { l0_ms: p.l0_ms, rate_per_ms: 0.3 * p.b }).collect();
        (c, params, inst.sla_ms)
    }

    /// How many sums a serial evaluation splits: the same plan as a forked one.
    fn ws_splits(c: &Compiled, params: &[Params], sla: f64) -> usize {
        let mut ws = Workspace::new();
        c.cdf_with(&mut ws, params, sla);
        ws.grid.split_sums()
    }

    #[test]
    fn forked_evaluation_is_bit_identical_to_serial() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        for seed in [2, 5] {
            let (c, params, sla) = big_graph(seed);
            let mut serial_grad = vec![0.0; params.len()];
            let serial = c.cdf_grad_with(&mut Workspace::new(), &params, sla, &mut serial_grad);
            let (forked, forked_grad, forks) = pool.install(|| {
                let mut ws = Workspace::new();
                ws.set_forking(true);
                let mut grad = vec![0.0; params.len()];
                let f = c.cdf_grad_with(&mut ws, &params, sla, &mut grad);
                (f, grad, ws.grid.forks())
            });
            assert!(forks, "seed {seed}: the graph should be large enough to fork");
            assert!(ws_splits(&c, &params, sla) > 0, "seed {seed}: no sum split in two");
            assert!(serial > 0.01 && serial < 0.999, "seed {seed}: value {serial} says little");
            assert_eq!(forked.to_bits(), serial.to_bits(), "seed {seed}: value");
            let diff = forked_grad.iter().zip(&serial_grad).position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(diff, None, "seed {seed}: gradient differs at the first index shown");
            assert!(serial_grad.iter().filter(|g| **g > 0.0).count() > 100, "seed {seed}: gradient mostly zero");
        }
    }
}
