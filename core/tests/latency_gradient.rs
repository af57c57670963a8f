//! Gradients are the exact derivatives of the evaluators (central finite differences of the
//! same evaluator agree), accumulate into the caller's buffer, and are never negative: a
//! faster service never lowers `P(Z <= t)`.

#[path = "latency_support.rs"]
mod support;

use derm_core::graph::Node;
use derm_core::latency::{Compiled, Params, Workspace};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{chain, compile, quantile, random_graph, realistic_params};

/// Named `latency::...` so that `cargo test -p derm-core latency` selects these tests.
mod latency {
    use super::*;

    /// Relative agreement with central differences, or absolute where the derivative is tiny.
    const FD_REL: f64 = 1e-6;
    const FD_ABS: f64 = 1e-9;

    fn random_case(seed: u64, sp: bool) -> (Node, Vec<Params>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if sp {
            let size = rng.random_range(2..25);
            let services = rng.random_range(1..=size);
            let g = random_graph(&mut rng, size, services, 4, 4);
            (g, realistic_params(&mut rng, services))
        } else {
            let k = rng.random_range(1..20);
            let services: Vec<usize> = (0..k).map(|_| rng.random_range(0..k)).collect();
            (chain(&services), realistic_params(&mut rng, k))
        }
    }

    fn check_fd(c: &Compiled, params: &[Params], t: f64) -> Result<(), TestCaseError> {
        let mut ws = Workspace::new();
        let mut grad = vec![0.0; params.len()];
        let f = c.cdf_grad_with(&mut ws, params, t, &mut grad);
        prop_assert!((f - c.cdf_with(&mut ws, params, t)).abs() < 1e-15);
        for &i in c.services() {
            let r = params[i].rate_per_ms;
            let mut central = |e: f64| {
                let mut up = params.to_vec();
                up[i].rate_per_ms = r + e;
                let mut down = params.to_vec();
                down[i].rate_per_ms = r - e;
                (c.cdf_with(&mut ws, &up, t) - c.cdf_with(&mut ws, &down, t)) / (2.0 * e)
            };
            // Richardson extrapolation of two central differences (truncation O(e^4)): a plain
            // central difference at 1e-5 * r was off by 1.3e-6 relative on a far-tail case
            // (q = 0.997, the evaluator's rounding noise over a small step), and at 1e-3 * r by
            // 1.4e-5 on a strongly curved one (q = 0.17); extrapolating at 1e-4 * r matches the
            // gradient on both to better than 1e-7.
            let e = 1e-4 * r;
            let fd = (4.0 * central(e) - central(2.0 * e)) / 3.0;
            let err = (grad[i] - fd).abs();
            prop_assert!(
                err <= FD_REL * fd.abs() || err <= FD_ABS,
                "service {i}: gradient {} vs central difference {fd}",
                grad[i]
            );
            prop_assert!(grad[i] >= -1e-12, "service {i}: negative gradient {}", grad[i]);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn chain_gradient_matches_finite_differences(seed in any::<u64>(), q in 0.05f64..0.999) {
            let (g, params) = random_case(seed, false);
            let c = compile(&g);
            check_fd(&c, &params, quantile(&c, &params, q))?;
        }

        #[test]
        fn lattice_gradient_matches_finite_differences(seed in any::<u64>(), q in 0.05f64..0.999) {
            let (g, params) = random_case(seed, true);
            let c = compile(&g).force_grid();
            check_fd(&c, &params, quantile(&c, &params, q))?;
        }

        #[test]
        fn faster_services_never_lower_the_cdf(seed in any::<u64>(), q in 0.05f64..0.999, factor in 1.001f64..3.0, sp: bool) {
            let (g, params) = random_case(seed, sp);
            let c = compile(&g);
            let t = quantile(&c, &params, q);
            let base = c.cdf(&params, t);
            for &i in c.services() {
                let mut faster = params.clone();
                faster[i].rate_per_ms *= factor;
                let f = c.cdf(&faster, t);
                prop_assert!(f >= base - 1e-13, "service {i} x{factor}: {f} < {base}");
            }
        }
    }

    #[test]
    fn gradient_through_consecutive_and_nested_parallel_stages() {
        // Regression: the maximum's reverse step once read stale scratch when a graph had more
        // than one parallel stage; a coarse lattice makes any slip visible.
        let leaf = |i: usize| Node::leaf(support::name(i));
        let graphs = [
            leaf(0).with_parallel([leaf(1), leaf(2)]).with_parallel([leaf(3), leaf(4)]),
            leaf(0).with_parallel([leaf(1).with_parallel([leaf(2), leaf(3)]), leaf(4)]),
            leaf(0).with_parallel([leaf(1), leaf(2)]).with_parallel([leaf(3), leaf(4)]).then(leaf(1)),
        ];
        let params: Vec<Params> =
            (0..5).map(|i| Params { l0_ms: 1.3 + 0.7 * i as f64, rate_per_ms: 0.05 + 0.03 * i as f64 }).collect();
        for g in &graphs {
            for cells in [16, 256] {
                let c = compile(g).with_grid_cells(cells);
                let t = quantile(&c, &params, 0.3);
                check_fd(&c, &params, t).unwrap_or_else(|e| panic!("{} @ {cells}: {e}", g.signature()));
            }
        }
    }

    #[test]
    fn gradient_is_added_to_what_is_there() {
        let (g, params) = random_case(7, true);
        let c = compile(&g);
        let t = quantile(&c, &params, 0.9);
        let mut once = vec![0.0; params.len()];
        c.cdf_grad(&params, t, &mut once);
        let mut twice = vec![1.0; params.len()];
        c.cdf_grad(&params, t, &mut twice);
        c.cdf_grad(&params, t, &mut twice);
        for (i, (a, b)) in once.iter().zip(&twice).enumerate() {
            assert!((1.0 + 2.0 * a - b).abs() < 1e-12, "{i}: {a} {b}");
        }
        // Services outside the graph are left alone.
        let mut grad = vec![0.0; params.len() + 3];
        c.cdf_grad(&params, t, &mut grad);
        assert!(grad[params.len()..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn is_thread_safe_with_a_workspace_per_thread() {
        let (g, params) = random_case(11, true);
        let c = compile(&g);
        let t = quantile(&c, &params, 0.9);
        let want = c.cdf(&params, t);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut ws = Workspace::new();
                    for _ in 0..20 {
                        assert_eq!(c.cdf_with(&mut ws, &params, t), want);
                    }
                });
            }
        });
    }
}
