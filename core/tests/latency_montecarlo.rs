//! The evaluators against a seeded Monte Carlo of the model itself: 1e6 draws per graph on a
//! family of random series-parallel graphs with realistic parameters, t between the 80th and
//! 99th percentile. Standard error ~4e-4 at p = 0.8; the tolerance leaves room for it (7
//! standard errors) and for the lattice (~1e-5).
//!
//! Heavy (1.6e7 draws of up to 40 services): runs in release builds only
//! (`cargo test --release -p derm-core --test latency_montecarlo`); in debug it is ignored.

#[path = "latency_support.rs"]
mod support;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{compile, monte_carlo, quantile, random_graph, realistic_params};

/// Named `latency::...` so that `cargo test -p derm-core latency` selects these tests.
mod latency {
    use super::*;

    const DRAWS: usize = 1_000_000;
    const TOLERANCE: f64 = 0.003;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, rng_seed: proptest::test_runner::RngSeed::Fixed(2024), ..ProptestConfig::default() })]

        #[test]
        #[cfg_attr(debug_assertions, ignore = "heavy: run with --release")]
        fn agrees_with_monte_carlo(seed in any::<u64>(), q in 0.8f64..0.99) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let size = rng.random_range(1..40);
            let services = rng.random_range(1..=size);
            let g = random_graph(&mut rng, size, services, 4, 5);
            let params = realistic_params(&mut rng, services);
            let c = compile(&g);
            let t = quantile(&c, &params, q);
            let mc = monte_carlo(&g, &params, t, DRAWS, seed ^ 0x5eed);
            let f = c.cdf(&params, t);
            prop_assert!((f - mc).abs() < TOLERANCE, "{}: model {f} vs Monte Carlo {mc} at t={t}", g.signature());
        }
    }
}
