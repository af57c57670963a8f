//! Runs of exponential phases, fused.
//!
//! A sum's phases are convolved one after another on the same window: each is a first-order
//! recursion along the lattice, so applied one at a time every step waits on the previous
//! step's multiply and add (latency-bound: `perf` put two thirds of a 400-call evaluation in
//! that one loop). Fused, up to [`LANES`] phases advance together, each step of one feeding
//! the next in registers, so the recursions overlap and the loop is bound by throughput
//! instead. Every phase does the same operations in the same order as alone: results are
//! bit-identical.
//!
//! Each step is written as fused multiply-adds (`mul_add`, one rounding each): 4 operations a
//! phase and cell instead of 7, and a recursion step of one FMA's latency. Inlined into the
//! evaluator's SIMD dispatch (`pulp`), they are hardware FMAs; without FMA hardware they are
//! libm's, slower but with the same results.

use super::Kernel;

/// Phases advanced together (independent recursions in flight).
const LANES: usize = 4;

/// `outs` holds one buffer per kernel, each `input.len()` long, back to back: phase `f`
/// convolves phase `f - 1`'s output (the first, `input`) with kernel `f`.
#[inline(always)]
pub(super) fn forward(ks: &[Kernel], input: &[f64], outs: &mut [f64]) {
    let len = input.len();
    debug_assert_eq!(outs.len(), ks.len() * len);
    for (g, group) in ks.chunks(LANES).enumerate() {
        let (done, rest) = outs.split_at_mut(g * LANES * len);
        let input = if g == 0 { input } else { &done[done.len() - len..] };
        let rest = &mut rest[..group.len() * len];
        match *group {
            [a, b, c, d] => forward_lanes([a, b, c, d], input, rest),
            [a, b, c] => forward_lanes([a, b, c], input, rest),
            [a, b] => forward_lanes([a, b], input, rest),
            [a] => forward_lanes([a], input, rest),
            _ => unreachable!("chunks of 1..=LANES"),
        }
    }
}

#[inline(always)]
fn forward_lanes<const M: usize>(ks: [Kernel; M], input: &[f64], outs: &mut [f64]) {
    let len = input.len();
    let mut it = outs.chunks_exact_mut(len);
    let outs: [&mut [f64]; M] = std::array::from_fn(|_| it.next().expect("M buffers"));
    let (mut s, mut prev) = ([0.0; M], [0.0; M]);
    for (j, &x0) in input.iter().enumerate() {
        let mut x = x0;
        for f in 0..M {
            let k = &ks[f];
            let o = k.b.mul_add(s[f], k.c.mul_add(prev[f], k.a * x));
            s[f] = k.q.mul_add(s[f], x);
            prev[f] = x;
            outs[f][j] = o;
            x = o;
        }
    }
}

/// The sums each phase's gradient is made of: `so`, `sc`, `st`, `stp` (see `backward`).
pub(super) type Sums = [f64; 4];

/// Reverse of [`forward`]: `vin` and `vouts` are the forward values, `aouts` the adjoints of
/// the outputs (only the last buffer's is read, and the others are overwritten), `ain` gets
/// the adjoint of `input`; `sums[f]` gets phase `f`'s gradient sums.
#[inline(always)]
pub(super) fn backward(
    ks: &[Kernel],
    vin: &[f64],
    vouts: &[f64],
    ain: &mut [f64],
    aouts: &mut [f64],
    sums: &mut [Sums],
) {
    let len = vin.len();
    let n = ks.len();
    debug_assert_eq!((vouts.len(), aouts.len(), sums.len()), (n * len, n * len, n));
    let groups = n.div_ceil(LANES);
    for g in (0..groups).rev() {
        let (g0, g1) = (g * LANES, ((g + 1) * LANES).min(n));
        // The group's input values and adjoint: the run's input, or the previous output.
        let vin = if g0 == 0 { vin } else { &vouts[(g0 - 1) * len..g0 * len] };
        let vmid = &vouts[g0 * len..(g1 - 1) * len];
        let (below, top) = aouts.split_at_mut((g1 - 1) * len);
        let top = &top[..len];
        let bottom = if g0 == 0 { &mut *ain } else { &mut below[(g0 - 1) * len..g0 * len] };
        let ks = &ks[g0..g1];
        let sums = &mut sums[g0..g1];
        match g1 - g0 {
            4 => backward_lanes::<4>(ks, vin, vmid, top, bottom, sums),
            3 => backward_lanes::<3>(ks, vin, vmid, top, bottom, sums),
            2 => backward_lanes::<2>(ks, vin, vmid, top, bottom, sums),
            1 => backward_lanes::<1>(ks, vin, vmid, top, bottom, sums),
            _ => unreachable!("groups of 1..=LANES"),
        }
    }
}

/// One group: `vin` the first phase's input values, `vmid` the inputs of the others (the
/// group's outputs but the last), `top` the last output's adjoint, `bottom` the first input's.
#[inline(always)]
fn backward_lanes<const M: usize>(
    ks: &[Kernel],
    vin: &[f64],
    vmid: &[f64],
    top: &[f64],
    bottom: &mut [f64],
    sums: &mut [Sums],
) {
    let len = vin.len();
    let ks: [Kernel; M] = std::array::from_fn(|f| ks[f]);
    let vins: [&[f64]; M] = std::array::from_fn(|f| if f == 0 { vin } else { &vmid[(f - 1) * len..f * len] });
    // t_j = sum_{i>j} q^(i-j-1) ob_i and its q-derivative tp_j; next = ob_{j+1}.
    let (mut t, mut tp, mut next) = ([0.0; M], [0.0; M], [0.0; M]);
    let (mut so, mut sc, mut st, mut stp) = ([0.0; M], [0.0; M], [0.0; M], [0.0; M]);
    for j in (0..len).rev() {
        let mut ob = top[j];
        for f in (0..M).rev() {
            let k = &ks[f];
            let v = vins[f][j];
            let ia = k.b.mul_add(t[f], k.c.mul_add(next[f], k.a * ob));
            so[f] = ob.mul_add(v, so[f]);
            sc[f] = next[f].mul_add(v, sc[f]);
            st[f] = v.mul_add(t[f], st[f]);
            stp[f] = v.mul_add(tp[f], stp[f]);
            tp[f] = k.q.mul_add(tp[f], t[f]);
            t[f] = k.q.mul_add(t[f], ob);
            next[f] = ob;
            ob = ia;
        }
        bottom[j] = ob;
    }
    for f in 0..M {
        sums[f] = [so[f], sc[f], st[f], stp[f]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One phase at a time, as the evaluator did before fusing.
    fn forward_one(k: &Kernel, input: &[f64], out: &mut [f64]) {
        let (mut s, mut prev) = (0.0, 0.0);
        for (o, &i) in out.iter_mut().zip(input) {
            *o = k.b.mul_add(s, k.c.mul_add(prev, k.a * i));
            s = k.q.mul_add(s, i);
            prev = i;
        }
    }

    fn backward_one(k: &Kernel, iv: &[f64], oa: &[f64], ia: &mut [f64]) -> Sums {
        let (mut t, mut tp, mut next) = (0.0, 0.0, 0.0);
        let (mut so, mut sc, mut st, mut stp) = (0.0, 0.0, 0.0, 0.0);
        for ((a, &ob), &v) in ia.iter_mut().zip(oa).zip(iv).rev() {
            *a = k.b.mul_add(t, k.c.mul_add(next, k.a * ob));
            so = ob.mul_add(v, so);
            sc = next.mul_add(v, sc);
            st = v.mul_add(t, st);
            stp = v.mul_add(tp, stp);
            tp = k.q.mul_add(tp, t);
            t = k.q.mul_add(t, ob);
            next = ob;
        }
        [so, sc, st, stp]
    }

    #[test]
    fn fused_runs_equal_one_phase_at_a_time_bit_for_bit() {
        let len = 37;
        let input: Vec<f64> = (0..len).map(|j| ((j * 7 % 11) as f64 + 0.5) / 60.0).collect();
        let seed: Vec<f64> = (0..len).map(|j| ((j * 5 % 13) as f64 - 6.0) / 13.0).collect();
        for n in 1..=9 {
            let ks: Vec<Kernel> =
                (0..n).map(|f| Kernel::new(0.05 + 0.37 * f as f64, if f == 2 { 0.2 } else { 0.0 })).collect();
            // One phase at a time.
            let mut want = vec![0.0; n * len];
            for f in 0..n {
                let (done, rest) = want.split_at_mut(f * len);
                let inp = if f == 0 { &input[..] } else { &done[(f - 1) * len..] };
                forward_one(&ks[f], inp, &mut rest[..len]);
            }
            let mut got = vec![0.0; n * len];
            forward(&ks, &input, &mut got);
            assert_eq!(got, want, "forward, {n} phases");

            let mut want_adj = vec![0.0; n * len];
            want_adj[(n - 1) * len..].copy_from_slice(&seed);
            let mut want_in = vec![0.0; len];
            let mut want_sums = vec![[0.0; 4]; n];
            for f in (0..n).rev() {
                let (below, above) = want_adj.split_at_mut(f * len);
                let iv = if f == 0 { &input[..] } else { &want[(f - 1) * len..f * len] };
                let ia = if f == 0 { &mut want_in[..] } else { &mut below[(f - 1) * len..] };
                want_sums[f] = backward_one(&ks[f], iv, &above[..len], ia);
            }
            let mut aouts = vec![0.0; n * len];
            aouts[(n - 1) * len..].copy_from_slice(&seed);
            let (mut ain, mut sums) = (vec![0.0; len], vec![[0.0; 4]; n]);
            backward(&ks, &input, &got, &mut ain, &mut aouts, &mut sums);
            assert_eq!(ain, want_in, "input adjoint, {n} phases");
            assert_eq!(sums, want_sums, "gradient sums, {n} phases");
        }
    }
}
