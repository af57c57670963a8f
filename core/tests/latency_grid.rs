//! The lattice evaluator: against closed forms for small series-parallel graphs, against the
//! exact chain evaluator on pure chains, and against itself on a 16x finer lattice.

#[path = "latency_support.rs"]
mod support;

use derm_core::graph::Node;
use derm_core::latency::{Evaluator, Params};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{chain, compile, quantile, random_graph, realistic_params};

/// Named `latency::...` so that `cargo test -p derm-core latency` selects these tests.
mod latency {
    use super::*;

    /// The accuracy claimed for the default lattice on graphs of this size (the SLA tolerance is
    /// 1e-3; measured errors are ~1e-5).
    const GRID: f64 = 1e-4;

    fn p(l0_ms: f64, rate_per_ms: f64) -> Params {
        Params { l0_ms, rate_per_ms }
    }

    /// `L_0 + max(L_1, L_2)` with equal shifts on the branches: closed form.
    fn max_of_two(params: &[Params; 3], t: f64) -> f64 {
        let (r0, a, b) = (params[0].rate_per_ms, params[1].rate_per_ms, params[2].rate_per_ms);
        let tau = t - params[0].l0_ms - params[1].l0_ms;
        if tau <= 0.0 {
            return 0.0;
        }
        // F = int (1 - e^{-a u})(1 - e^{-b u}) r0 e^{-r0 (tau - u)} du over [0, tau].
        let term = |c: f64| r0 * ((-c * tau).exp() - (-r0 * tau).exp()) / (r0 - c);
        (1.0 - (-r0 * tau).exp()) - term(a) - term(b) + term(a + b)
    }

    #[test]
    fn a_parallel_stage_is_the_product_of_cdfs() {
        let g = Node::leaf("s0").with_parallel([Node::leaf("s1"), Node::leaf("s2")]);
        let c = compile(&g);
        assert_eq!(c.evaluator(), Evaluator::Grid);
        for params in [
            [p(1.0, 0.3), p(2.0, 0.1), p(2.0, 0.07)],
            [p(0.2, 0.05), p(4.5, 0.1), p(4.5, 0.1)],
            [p(3.0, 0.9), p(0.1, 0.021), p(0.1, 0.02)],
            [p(0.5, 0.06), p(1.3, 1.0), p(1.3, 0.9)],
        ] {
            for q in [0.5, 0.8, 0.95, 0.99] {
                let t = quantile(&c, &params, q);
                let (got, want) = (c.cdf(&params, t), max_of_two(&params, t));
                assert!((got - want).abs() < 1e-5, "{params:?} q={q}: {got} vs {want}");
            }
        }
        // The slowest-branch shortcut would be far off: this is what the product buys.
        let params = [p(1.0, 0.3), p(2.0, 0.1), p(2.0, 0.1)];
        let t = quantile(&c, &params, 0.95);
        let slowest = compile(&Node::chain(["s0", "s1"])).cdf(&params, t);
        assert!(slowest - c.cdf(&params, t) > 0.02);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_the_exact_chain_evaluator_on_chains(seed in any::<u64>(), q in 0.5f64..0.995) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let k = rng.random_range(1..30);
            let services: Vec<usize> = (0..k).map(|_| rng.random_range(0..k)).collect();
            let params = realistic_params(&mut rng, k);
            let g = chain(&services);
            let exact = compile(&g);
            prop_assert_eq!(exact.evaluator(), Evaluator::Chain);
            let t = quantile(&exact, &params, q);
            let lattice = compile(&g).force_grid();
            let (a, b) = (exact.cdf(&params, t), lattice.cdf(&params, t));
            prop_assert!((a - b).abs() < GRID, "k={k} q={q}: chain {a} vs grid {b}");
        }

        #[test]
        fn a_finer_lattice_changes_little(seed in any::<u64>(), q in 0.8f64..0.99) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let size = rng.random_range(2..40);
            let services = rng.random_range(1..=size);
            let g = random_graph(&mut rng, size, services, 4, 4);
            let params = realistic_params(&mut rng, services);
            let c = compile(&g);
            let t = quantile(&c, &params, q);
            let fine = compile(&g).with_grid_cells(16 * 256);
            let (a, b) = (c.cdf(&params, t), fine.cdf(&params, t));
            prop_assert!((a - b).abs() < GRID, "{}: {a} vs {b} at t={t}", g.signature());
        }
    }
}
