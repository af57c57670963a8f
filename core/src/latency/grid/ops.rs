//! The plan's operations, run over a part of the state.
//!
//! A part is the contiguous stretch of buffers (and of phase kernels) that one subtree of the
//! graph owns: operations are laid out in post-order, so a subtree's operations, buffers and
//! phases are each contiguous and read nothing outside them. Offsets in the plan are
//! absolute; a part knows where it starts ([`Values::base`]), so the same code runs the whole
//! plan or, on another thread, a subtree ([`super::fork`]).

use super::exps::{self, Sums};
use super::{Buf, Kernel, Op, TIE, support};
use crate::latency::Params;

/// The read-only plan.
#[derive(Clone, Copy)]
pub(super) struct Plan<'a> {
    pub ops: &'a [Op],
    pub bufs: &'a [Buf],
    pub kids: &'a [usize],
    pub exps: &'a [(usize, f64)],
}

impl Plan<'_> {
    /// Buffer `b` relative to a part that starts at offset `base`.
    #[inline(always)]
    fn buf(&self, b: usize, base: usize) -> Buf {
        let x = self.bufs[b];
        Buf { off: x.off - base, ..x }
    }
}

/// Forward state of a part: its values and its phases' kernels.
pub(super) struct Values<'a> {
    pub val: &'a mut [f64],
    /// Offset of `val[0]` in the whole state.
    pub base: usize,
    pub kernels: &'a mut [Kernel],
    /// Index of `kernels[0]` among all phases.
    pub ebase: usize,
}

impl Values<'_> {
    /// The part from absolute offsets `(off, phase)` on, and the part before them.
    pub fn split(&mut self, off: usize, phase: usize) -> (Values<'_>, Values<'_>) {
        let (v0, v1) = self.val.split_at_mut(off - self.base);
        let (k0, k1) = self.kernels.split_at_mut(phase - self.ebase);
        (
            Values { val: v0, base: self.base, kernels: k0, ebase: self.ebase },
            Values { val: v1, base: off, kernels: k1, ebase: phase },
        )
    }
}

/// Reverse state of a part: its adjoints and gradient sums; the forward values and kernels
/// (whole, read-only).
pub(super) struct Adjoints<'a> {
    pub val: &'a [f64],
    pub kernels: &'a [Kernel],
    pub adj: &'a mut [f64],
    pub base: usize,
    pub sums: &'a mut [Sums],
    pub ebase: usize,
}

impl Adjoints<'_> {
    /// As [`Values::split`].
    pub fn split(&mut self, off: usize, phase: usize) -> (Adjoints<'_>, Adjoints<'_>) {
        let (a0, a1) = self.adj.split_at_mut(off - self.base);
        let (s0, s1) = self.sums.split_at_mut(phase - self.ebase);
        let (val, kernels) = (self.val, self.kernels);
        (
            Adjoints { val, kernels, adj: a0, base: self.base, sums: s0, ebase: self.ebase },
            Adjoints { val, kernels, adj: a1, base: off, sums: s1, ebase: phase },
        )
    }
}

/// Runs `ops` forward on `part` (which holds every buffer they touch).
#[inline(always)]
pub(super) fn forward(
    plan: Plan<'_>,
    params: &[Params],
    h: f64,
    part: &mut Values<'_>,
    tmp: &mut Vec<f64>,
    ops: std::ops::Range<usize>,
) {
    let base = part.base;
    for n in ops {
        match plan.ops[n] {
            Op::Point { pos, out } => {
                let o = plan.buf(out, base);
                let th = pos - pos.floor();
                let ov = &mut part.val[o.range()];
                ov.fill(0.0);
                ov[0] = 1.0 - th;
                if let Some(v) = ov.get_mut(1) {
                    *v = th;
                }
            }
            Op::Shift { pos, b, out } => {
                let (bb, o) = (plan.buf(b, base), plan.buf(out, base));
                let th = pos - pos.floor();
                let (before, after) = part.val.split_at_mut(o.off);
                let (bv, ov) = (&before[bb.range()], &mut after[..o.len()]);
                // Equal lengths: hi_out - lo_out = hi_b - lo_b.
                for (o, &b) in ov.iter_mut().zip(bv) {
                    *o = (1.0 - th) * b;
                }
                for (o, &b) in ov[1..].iter_mut().zip(bv) {
                    *o += th * b;
                }
            }
            Op::Conv { a, b, out } => {
                let (ab, bb, o) = (plan.buf(a, base), plan.buf(b, base), plan.buf(out, base));
                let (before, after) = part.val.split_at_mut(o.off);
                let (av, bv, ov) = (&before[ab.range()], &before[bb.range()], &mut after[..o.len()]);
                ov.fill(0.0);
                // Equal lengths; only the supports are multiplied out.
                let (av, bv) = (&av[..support(av)], &bv[..support(bv)]);
                for (ia, &x) in av.iter().enumerate() {
                    for (o, &y) in ov[ia..].iter_mut().zip(bv) {
                        *o = x.mul_add(y, *o);
                    }
                }
            }
            Op::Exps { first, count, input, out } => {
                let (ib, o) = (plan.buf(input, base), plan.buf(out, base));
                let run = first - part.ebase..first - part.ebase + count;
                for (k, &(service, absorb)) in
                    part.kernels[run.clone()].iter_mut().zip(&plan.exps[first..first + count])
                {
                    *k = Kernel::new(params[service].rate_per_ms * h, absorb);
                }
                let (before, after) = part.val.split_at_mut(o.off);
                exps::forward(&part.kernels[run], &before[ib.range()], &mut after[..count * o.len()]);
            }
            Op::Max { kids, out } => {
                // CDF of the maximum at each node: the product of the children's, less the
                // tie term TIE * sum_{c<c'} w_c w_c' prod_{others} W (see `TIE`), by the
                // recursion (e0, e1, e2) <- (e0 W, e1 W + e0 w, e2 W + e1 w) over children.
                let o = plan.buf(out, base);
                let len = o.len();
                tmp.clear();
                tmp.resize(2 * len, 0.0);
                let (e1, e2) = tmp.split_at_mut(len);
                let (before, after) = part.val.split_at_mut(o.off);
                let e0 = &mut after[..len];
                e0.fill(1.0);
                // A child's cumulative weight below the window, and its weights on it (the
                // child's window ends where the maximum's does).
                let child = |k: usize| {
                    let kb = plan.buf(k, base);
                    let kv = &before[kb.range()];
                    let skip = (o.lo - kb.lo) as usize;
                    debug_assert_eq!(kv.len() - skip, len);
                    (kv[..skip].iter().sum::<f64>(), &kv[skip..])
                };
                // Children two at a time: each one's running sum is a chain of dependent adds,
                // and two chains in flight halve the time they bound. Every node still takes
                // its children in order, with the same operations: the same bits as one at a
                // time.
                let mut pairs = plan.kids[kids.0..kids.1].chunks_exact(2);
                for pair in &mut pairs {
                    let ((mut c1, v1), (mut c2, v2)) = (child(pair[0]), child(pair[1]));
                    for (j, (&w1, &w2)) in v1.iter().zip(v2).enumerate() {
                        c1 += w1;
                        c2 += w2;
                        let (a0, a1, a2) = (e0[j], e1[j], e2[j]);
                        let (b0, b1, b2) = (a0 * c1, a1.mul_add(c1, a0 * w1), a2.mul_add(c1, a1 * w1));
                        e2[j] = b2.mul_add(c2, b1 * w2);
                        e1[j] = b1.mul_add(c2, b0 * w2);
                        e0[j] = b0 * c2;
                    }
                }
                for &k in pairs.remainder() {
                    let (mut cum, kv) = child(k);
                    for (j, &w) in kv.iter().enumerate() {
                        cum += w;
                        e2[j] = e2[j].mul_add(cum, e1[j] * w);
                        e1[j] = e1[j].mul_add(cum, e0[j] * w);
                        e0[j] *= cum;
                    }
                }
                for (c, &t) in e0.iter_mut().zip(&*e2) {
                    *c -= TIE * t;
                }
                for i in (1..len).rev() {
                    e0[i] -= e0[i - 1];
                }
            }
        }
    }
}

/// Runs `ops` in reverse on `part`: each operation's output adjoint is set, its inputs'
/// are assigned (every buffer feeds exactly one operation: no zeroing needed). Phases leave
/// their gradient sums in `part.sums` ([`gradient`] adds them up).
#[inline(always)]
pub(super) fn backward(plan: Plan<'_>, part: &mut Adjoints<'_>, tmp: &mut Vec<f64>, ops: std::ops::Range<usize>) {
    let base = part.base;
    for n in ops.rev() {
        match plan.ops[n] {
            Op::Point { .. } => {}
            Op::Shift { pos, b, out } => {
                let (bb, o) = (plan.buf(b, base), plan.buf(out, base));
                let th = pos - pos.floor();
                let (before, after) = part.adj.split_at_mut(o.off);
                let (bv, ov) = (&mut before[bb.range()], &after[..o.len()]);
                for (b, &o) in bv.iter_mut().zip(ov) {
                    *b = (1.0 - th) * o;
                }
                for (b, &o) in bv.iter_mut().zip(&ov[1..]) {
                    *b += th * o;
                }
            }
            Op::Conv { a, b, out } => {
                let (ab, bb, o) = (plan.buf(a, base), plan.buf(b, base), plan.buf(out, base));
                let (before, after) = part.adj.split_at_mut(o.off);
                let ov = &after[..o.len()];
                let (aa, ba) = two_mut(before, ab.range(), bb.range());
                aa.fill(0.0);
                ba.fill(0.0);
                let (av, bv) = (&part.val[plan.bufs[a].range()], &part.val[plan.bufs[b].range()]);
                // The forward step used only the supports: the tails have no influence.
                let (av, bv) = (&av[..support(av)], &bv[..support(bv)]);
                let (na, nb) = (av.len(), bv.len());
                for (jb, &y) in bv.iter().enumerate() {
                    for (a, &o) in aa[..na].iter_mut().zip(&ov[jb..]) {
                        *a = y.mul_add(o, *a);
                    }
                }
                for (ia, &x) in av.iter().enumerate() {
                    for (b, &o) in ba[..nb].iter_mut().zip(&ov[ia..]) {
                        *b = x.mul_add(o, *b);
                    }
                }
            }
            Op::Exps { first, count, input, out } => {
                let (ib, o) = (plan.buf(input, base), plan.buf(out, base));
                let len = o.len();
                let (abs_in, abs_out) =
                    (plan.bufs[input].range(), plan.bufs[out].off..plan.bufs[out].off + count * len);
                let (before, after) = part.adj.split_at_mut(o.off);
                let (ain, aouts) = (&mut before[ib.range()], &mut after[..count * len]);
                let local = first - part.ebase..first - part.ebase + count;
                exps::backward(
                    &part.kernels[first..first + count],
                    &part.val[abs_in],
                    &part.val[abs_out],
                    ain,
                    aouts,
                    &mut part.sums[local],
                );
            }
            Op::Max { kids, out } => max_backward(plan, part, tmp, kids, out),
        }
    }
}

/// Adds every phase's `dF/d rate` into `grad`, in the reverse order of the operations (the
/// order a serial reverse sweep adds them in, whatever ran where).
#[inline(always)]
pub(super) fn gradient(plan: Plan<'_>, kernels: &[Kernel], sums: &[Sums], h: f64, grad: &mut [f64]) {
    for op in plan.ops.iter().rev() {
        if let Op::Exps { first, count, .. } = *op {
            let run = first..first + count;
            for ((k, &(service, _)), &[so, sc, st, stp]) in
                kernels[run.clone()].iter().zip(&plan.exps[run.clone()]).zip(&sums[run])
            {
                grad[service] += h * (k.da * so + k.dc * sc + k.db * st + k.b * k.dq * stp);
            }
        }
    }
}

#[inline(always)]
fn max_backward(plan: Plan<'_>, part: &mut Adjoints<'_>, tmp: &mut Vec<f64>, kids: (usize, usize), out: usize) {
    let base = part.base;
    let o = plan.bufs[out];
    let len = o.len();
    let nk = kids.1 - kids.0;
    // Every part is written before it is read.
    let need = 4 * nk * len + 4 * len;
    if tmp.len() < need {
        tmp.resize(need, 0.0);
    }
    let (cum, rest) = tmp.split_at_mut(nk * len);
    let (pre, rest) = rest.split_at_mut(3 * nk * len);
    let (state, pbar) = rest.split_at_mut(3 * len);
    let pbar = &mut pbar[..len];
    let val = part.val;
    // W^c on the Max's window, and the prefix states (e0, e1, e2) before each child.
    for (c, &k) in plan.kids[kids.0..kids.1].iter().enumerate() {
        let kb = plan.bufs[k];
        let kv = &val[kb.range()];
        let skip = (o.lo - kb.lo) as usize;
        let mut acc: f64 = kv[..skip].iter().sum();
        for (w, &v) in cum[c * len..(c + 1) * len].iter_mut().zip(&kv[skip..]) {
            acc += v;
            *w = acc;
        }
    }
    let (s0, s12) = state.split_at_mut(len);
    let (s1, s2) = s12.split_at_mut(len);
    s0.fill(1.0);
    s1.fill(0.0);
    s2.fill(0.0);
    for (c, &k) in plan.kids[kids.0..kids.1].iter().enumerate() {
        let kb = plan.bufs[k];
        let kw = &val[kb.range()][(o.lo - kb.lo) as usize..];
        let p = &mut pre[3 * c * len..3 * (c + 1) * len];
        p[..len].copy_from_slice(s0);
        p[len..2 * len].copy_from_slice(s1);
        p[2 * len..].copy_from_slice(s2);
        for j in 0..len {
            let (big, w) = (cum[c * len + j], kw[j]);
            s2[j] = s2[j].mul_add(big, s1[j] * w);
            s1[j] = s1[j].mul_add(big, s0[j] * w);
            s0[j] *= big;
        }
    }
    // Adjoint of the CDF (the weights were its differences).
    let oa = &part.adj[plan.buf(out, base).range()];
    for j in 0..len {
        pbar[j] = oa[j] - oa.get(j + 1).copied().unwrap_or(0.0);
    }
    // Suffix states; the others' (E0, E1, E2) combine prefix and suffix.
    s0.fill(1.0);
    s1.fill(0.0);
    s2.fill(0.0);
    for c in (0..nk).rev() {
        let k = plan.kids[kids.0 + c];
        let kb = plan.bufs[k];
        let skip = (o.lo - kb.lo) as usize;
        let p = &pre[3 * c * len..3 * (c + 1) * len];
        let (kv, ka) = (&val[kb.range()], &mut part.adj[plan.buf(k, base).range()]);
        let mut acc = 0.0;
        for j in (0..len).rev() {
            let (p0, p1, p2) = (p[j], p[len + j], p[2 * len + j]);
            let big_e0 = p0 * s0[j];
            let big_e1 = p1 * s0[j] + p0 * s1[j];
            let big_e2 = p2 * s0[j] + p1 * s1[j] + p0 * s2[j];
            acc += pbar[j] * (big_e0 - TIE * big_e2);
            ka[skip + j] = acc - TIE * pbar[j] * big_e1;
            let (big, w) = (cum[c * len + j], kv[skip + j]);
            s2[j] = s2[j].mul_add(big, s1[j] * w);
            s1[j] = s1[j].mul_add(big, s0[j] * w);
            s0[j] *= big;
        }
        ka[..skip].fill(acc);
    }
}

/// Two disjoint mutable sub-slices.
#[inline(always)]
fn two_mut(v: &mut [f64], a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> (&mut [f64], &mut [f64]) {
    if a.start < b.start {
        let (x, y) = v.split_at_mut(b.start);
        (&mut x[a], &mut y[..b.end - b.start])
    } else {
        let (x, y) = v.split_at_mut(a.start);
        (&mut y[..a.end - a.start], &mut x[b])
    }
}
