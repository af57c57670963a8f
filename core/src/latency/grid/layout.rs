//! A graph's plan on one lattice: the windows, operations, buffers and subtree tree
//! [`super::Scratch`] runs. It depends on the graph, the lattice (`h`, the root's offset and
//! top index) and the services' shifts `l0`, none of which move while the optimizer searches
//! rates; the rates only choose each sum's slowest phase (which absorbs the variance the
//! lattice adds) and the root phase applied last to the CDF ([`Layout::phases`]). So a
//! layout is built once and kept ([`Layout::fits`]); building it had been about a tenth of a
//! 400-service evaluation, on the calling thread before any fork.

use super::fork;
use super::{Buf, Op};
use crate::latency::{Compiled, Item, Params};

/// What a layout was built for ([`Layout::fits`]).
#[derive(Debug, Default, Clone)]
struct Key {
    graph: u64,
    h: u64,
    off_root: u64,
    top: i64,
    /// The bits of each of the graph's services' `l0` (in `Compiled::services` order).
    l0: Vec<u64>,
}

/// The plan of one graph on one lattice.
#[derive(Debug, Default, Clone)]
pub(super) struct Layout {
    key: Key,
    sum_lo: Vec<i64>,
    sum_hi: Vec<i64>,
    sum_pos: Vec<f64>,
    pub sum_out: Vec<usize>,
    /// Each sum's first phase in `exps`, and the variance its slowest phase absorbs.
    sum_phase: Vec<usize>,
    sum_absorb: Vec<f64>,
    max_lo: Vec<i64>,
    max_hi: Vec<i64>,
    max_out: Vec<usize>,
    pub bufs: Vec<Buf>,
    pub ops: Vec<Op>,
    pub kids: Vec<usize>,
    /// (service, absorbed variance) of every phase ([`Self::phases`]).
    pub exps: Vec<(usize, f64)>,
    /// The graph's tree over the plan ([`fork`]; it also decides which sums split), and each
    /// sum's and maximum's node.
    pub nodes: Vec<fork::Node>,
    pub node_kids: Vec<usize>,
    sum_node: Vec<usize>,
    max_node: Vec<usize>,
    /// Length of all buffers together.
    pub total: usize,
}

impl Layout {
    /// A layout of `c` for the lattice `(h, off_root, top)` and the shifts in `params`.
    pub fn new(c: &Compiled, params: &[Params], h: f64, off_root: f64, top: i64) -> Self {
        let mut layout = Layout::default();
        layout.rebuild(c, params, h, off_root, top);
        layout
    }

    /// Builds this layout again for another graph or lattice, reusing its allocations.
    pub fn rebuild(&mut self, c: &Compiled, params: &[Params], h: f64, off_root: f64, top: i64) {
        self.key.graph = c.id;
        self.key.h = h.to_bits();
        self.key.off_root = off_root.to_bits();
        self.key.top = top;
        self.key.l0.clear();
        self.key.l0.extend(c.services.iter().map(|&i| params[i].l0_ms.to_bits()));
        self.build(c, params, h, off_root, top);
    }

    /// Whether this layout is `c`'s for this lattice and these shifts.
    pub fn fits(&self, c: &Compiled, params: &[Params], h: f64, off_root: f64, top: i64) -> bool {
        let k = &self.key;
        k.graph == c.id
            && k.h == h.to_bits()
            && k.off_root == off_root.to_bits()
            && k.top == top
            && k.l0.len() == c.services.len()
            && c.services.iter().zip(&k.l0).all(|(&i, &b)| params[i].l0_ms.to_bits() == b)
    }

    /// Each sum's phases for these rates: its services in order, but the root's phase `fin`
    /// (applied last, to the root's CDF), with the variance the lattice adds on the slowest.
    pub fn phases(&mut self, c: &Compiled, params: &[Params], fin: usize) {
        let root = c.sums.len() - 1;
        for i in 0..c.sums.len() {
            let services = c.sum_services(i);
            let skip = if i == root { fin } else { usize::MAX };
            let mut slowest = usize::MAX;
            for (n, &k) in services.iter().enumerate() {
                if n != skip && (slowest == usize::MAX || params[k].rate_per_ms < params[services[slowest]].rate_per_ms)
                {
                    slowest = n;
                }
            }
            let absorb = self.sum_absorb[i];
            let mut phase = self.sum_phase[i];
            for (n, &service) in services.iter().enumerate() {
                if n == skip {
                    continue;
                }
                self.exps[phase] = (service, if n == slowest { absorb } else { 0.0 });
                phase += 1;
            }
        }
    }

    /// Windows bottom-up (`lo`) and top-down (`hi`), then the operation list and buffers;
    /// the phases are left for [`Self::phases`].
    fn build(&mut self, c: &Compiled, params: &[Params], h: f64, off_root: f64, top: i64) {
        let root = c.sums.len() - 1;
        let (ns, nm) = (c.sums.len(), c.maxes.len());
        self.sum_phase.resize(ns, 0);
        self.sum_absorb.resize(ns, 0.0);
        self.sum_lo.resize(ns, 0);
        self.sum_hi.resize(ns, 0);
        self.sum_pos.resize(ns, 0.0);
        self.sum_out.resize(ns, 0);
        self.max_lo.resize(nm, 0);
        self.max_hi.resize(nm, 0);
        self.max_out.resize(nm, 0);
        for item in &c.order {
            match *item {
                Item::Sum(i) => {
                    let off = if i == root { off_root } else { 0.0 };
                    let shift: f64 = c.sum_services(i).iter().map(|&k| params[k].l0_ms).sum();
                    let pos = (shift - off) / h;
                    self.sum_pos[i] = pos;
                    let gens: i64 = c.sum_generals(i).iter().map(|&g| self.max_lo[g]).sum();
                    self.sum_lo[i] = pos.floor() as i64 + gens;
                }
                Item::Max(m) => {
                    self.max_lo[m] = c.max_children(m).iter().map(|&k| self.sum_lo[k]).max().unwrap_or(0);
                }
            }
        }
        self.sum_hi[root] = top;
        for item in c.order.iter().rev() {
            match *item {
                Item::Sum(i) => {
                    for &g in c.sum_generals(i) {
                        self.max_hi[g] = self.sum_hi[i] - (self.sum_lo[i] - self.max_lo[g]);
                    }
                }
                Item::Max(m) => {
                    for &k in c.max_children(m) {
                        self.sum_hi[k] = self.max_hi[m];
                    }
                }
            }
        }

        self.bufs.clear();
        self.ops.clear();
        self.kids.clear();
        self.exps.clear();
        self.nodes.clear();
        self.node_kids.clear();
        self.sum_node.resize(ns, 0);
        self.max_node.resize(nm, 0);
        let mut total = 0;
        let mut split_any = false;
        for item in &c.order {
            let (op0, off0, phase0, kids0) = (self.ops.len(), total, self.exps.len(), self.node_kids.len());
            let buf0 = self.bufs.len();
            let mut chain = 0;
            match *item {
                Item::Sum(i) => {
                    let (pos, lo, hi) = (self.sum_pos[i], self.sum_lo[i], self.sum_hi[i]);
                    let services = c.sum_services(i);
                    // The slowest remaining phase absorbs the variance the lattice adds: the
                    // binned shift's th (1 - th), and at the root the 1/12 of reading the CDF
                    // piecewise-linearly ([`Self::phases`]).
                    let th = pos - pos.floor();
                    self.sum_absorb[i] = th * (1.0 - th) + if i == root { 1.0 / 12.0 } else { 0.0 };
                    let gens = c.sum_generals(i);
                    let mut cur = usize::MAX;
                    if gens.is_empty() {
                        cur = self.alloc(&mut total, lo, hi);
                        self.ops.push(Op::Point { pos, out: cur });
                    } else {
                        // The factors split where their work does (`fork::Tree::split_with`: each
                        // one's subtree and the convolution that takes it in): the partial sums
                        // of each side, then one convolution of the two, so each side's chain
                        // runs on the thread that computed its factors.
                        self.node_kids.extend(gens.iter().map(|&g| self.max_node[g]));
                        let m = fork::Tree { nodes: &self.nodes, kids: &self.node_kids }
                            .split_with(&self.node_kids[kids0..], fork::conv_cost(hi - lo + 1))
                            .unwrap_or(gens.len());
                        chain = if m < gens.len() { m } else { 0 };
                        split_any |= chain > 0;
                        // Partial sums: lo grows with each factor, hi leaves room for the rest.
                        let mut plo = pos.floor() as i64;
                        let mut rest: i64 = gens.iter().map(|&g| self.max_lo[g]).sum();
                        for (n, &g) in gens[..m].iter().enumerate() {
                            plo += self.max_lo[g];
                            rest -= self.max_lo[g];
                            let out = self.alloc(&mut total, plo, hi - rest);
                            let b = self.max_out[g];
                            self.ops.push(if n == 0 { Op::Shift { pos, b, out } } else { Op::Conv { a: cur, b, out } });
                            cur = out;
                        }
                        if let Some((&g0, right)) = gens[m..].split_first() {
                            // The right side's partial sums leave room for the left's minimum.
                            let (mut rlo, mut rcur) = (self.max_lo[g0], self.max_out[g0]);
                            rest -= self.max_lo[g0];
                            for &g in right {
                                rlo += self.max_lo[g];
                                rest -= self.max_lo[g];
                                let out = self.alloc(&mut total, rlo, hi - plo - rest);
                                self.ops.push(Op::Conv { a: rcur, b: self.max_out[g], out });
                                rcur = out;
                            }
                            let out = self.alloc(&mut total, lo, hi);
                            self.ops.push(Op::Conv { a: cur, b: rcur, out });
                            cur = out;
                        }
                    }
                    let (first, input) = (self.exps.len(), cur);
                    self.sum_phase[i] = first;
                    // One phase per service but the root's last (applied to the root's CDF).
                    let phases = services.len().saturating_sub(usize::from(i == root));
                    for &service in &services[..phases] {
                        cur = self.alloc(&mut total, lo, hi);
                        self.exps.push((service, 0.0));
                    }
                    let count = self.exps.len() - first;
                    if count > 0 {
                        self.ops.push(Op::Exps { first, count, input, out: cur + 1 - count });
                    }
                    self.sum_out[i] = cur;
                    self.sum_node[i] = self.nodes.len();
                }
                Item::Max(m) => {
                    let start = self.kids.len();
                    for &k in c.max_children(m) {
                        self.kids.push(self.sum_out[k]);
                    }
                    let out = self.alloc(&mut total, self.max_lo[m], self.max_hi[m]);
                    self.ops.push(Op::Max { kids: (start, self.kids.len()), out });
                    self.max_out[m] = out;
                    self.max_node[m] = self.nodes.len();
                    self.node_kids.extend(c.max_children(m).iter().map(|&k| self.sum_node[k]));
                }
            }
            self.push_node(op0, off0, phase0, kids0, (buf0, chain));
        }
        if split_any {
            self.layout();
        }
        self.total = total;
    }

    /// The node of the item just planned: its own operations from `op0` (buffers from
    /// `off0`, phases from `phase0`), its children `node_kids[kids0..]`.
    fn push_node(&mut self, op0: usize, off0: usize, phase0: usize, kids0: usize, (buf0, chain): (usize, usize)) {
        let kids = (kids0, self.node_kids.len());
        let first = self.node_kids[kids.0..kids.1].first().map(|&k| self.nodes[k]);
        let (start, off, phase) = first.map_or((op0, off0, phase0), |k| (k.start, k.off, k.phase));
        let own: f64 = self.ops[op0..].iter().map(|op| fork::cost(op, &self.bufs)).sum();
        let below: f64 = self.node_kids[kids.0..kids.1].iter().map(|&k| self.nodes[k].cost).sum();
        let bufs = (buf0, self.bufs.len());
        let node = fork::Node {
            start,
            own: op0,
            end: self.ops.len(),
            off,
            phase,
            kids,
            cost: own + below,
            fork: false,
            bufs,
            chain,
        };
        self.nodes.push(node);
        let n = self.nodes.len() - 1;
        self.nodes[n].fork = fork::Tree { nodes: &self.nodes, kids: &self.node_kids }.forks(n);
    }

    /// Buffer offsets again, subtree by subtree, with a split sum's left partial sums right
    /// after its left factors' subtrees: each side of the split is then one contiguous part
    /// ([`fork`]), and every operation still reads only buffers before its output.
    fn layout(&mut self) {
        let mut next = 0;
        self.place(self.nodes.len() - 1, &mut next);
    }

    fn place(&mut self, n: usize, next: &mut usize) {
        let node = self.nodes[n];
        let first = *next;
        let count = node.kids.1 - node.kids.0;
        let m = if node.chain > 0 { node.chain } else { count };
        // A split sum's left side: its first partial sum and `m - 1` convolutions.
        let left_bufs = node.bufs.0 + if node.chain > 0 { m } else { 0 };
        for j in 0..count {
            if j == m {
                self.assign(node.bufs.0..left_bufs, next);
            }
            self.place(self.node_kids[node.kids.0 + j], next);
        }
        if m == count {
            self.assign(node.bufs.0..left_bufs, next);
        }
        self.assign(left_bufs..node.bufs.1, next);
        self.nodes[n].off = first;
    }

    fn assign(&mut self, bufs: std::ops::Range<usize>, next: &mut usize) {
        for buf in &mut self.bufs[bufs] {
            buf.off = *next;
            *next += buf.len();
        }
    }

    fn alloc(&mut self, total: &mut usize, lo: i64, hi: i64) -> usize {
        debug_assert!(hi >= lo, "empty window [{lo}, {hi}]");
        let buf = Buf { off: *total, lo, hi };
        *total += buf.len();
        self.bufs.push(buf);
        self.bufs.len() - 1
    }
}
