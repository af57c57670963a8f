//! The chain evaluator is exact: against the distinct-rate closed form where that form is
//! well conditioned, against the Erlang CDF at equal rates, and at near-equal rates, where the
//! closed form itself breaks down.

#[path = "latency_support.rs"]
mod support;

use derm_core::graph::Node;
use derm_core::latency::{Compiled, Evaluator, Params};
use proptest::prelude::*;
use statrs::distribution::{ContinuousCDF, Gamma};
use support::{chain, compile};

/// Named `latency::...` so that `cargo test -p derm-core latency` selects these tests.
mod latency {
    use super::*;

    /// Agreement with an exact reference.
    const EXACT: f64 = 1e-9;

    /// `P(sum Exp(r_i) <= tau)` by partial fractions, with the largest term's size, so that a test
    /// can check that rounding in the oracle itself stays far below `EXACT`.
    fn closed_form(rates: &[f64], tau: f64) -> (f64, f64) {
        let mut sum = 0.0;
        let mut largest: f64 = 0.0;
        for (i, &ri) in rates.iter().enumerate() {
            let coef: f64 = rates.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &rj)| rj / (rj - ri)).product();
            let term = coef * (-ri * tau).exp();
            largest = largest.max(term.abs());
            sum += term;
        }
        (1.0 - sum, largest)
    }

    fn params(l0: &[f64], rates: &[f64]) -> Vec<Params> {
        l0.iter().zip(rates).map(|(&l0_ms, &rate_per_ms)| Params { l0_ms, rate_per_ms }).collect()
    }

    /// `k` calls of service 0.
    fn repeated(k: usize) -> Compiled {
        compile(&chain(&vec![0; k]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn matches_the_closed_form_on_well_separated_rates(
            k in 2usize..=10,
            base in 0.05f64..1.0,
            gaps in prop::collection::vec(1.2f64..1.6, 9),
            l0 in prop::collection::vec(0.1f64..5.0, 10),
            p in 0.05f64..0.995,
        ) {
            let mut rates = vec![base];
            for g in &gaps[..k - 1] {
                rates.push(rates.last().copied().unwrap_or(base) * g);
            }
            let params = params(&l0[..k], &rates);
            let c = compile(&chain(&(0..k).collect::<Vec<_>>()));
            prop_assert_eq!(c.evaluator(), Evaluator::Chain);
            let shift: f64 = l0[..k].iter().sum();
            // tau at roughly the p-quantile: mean + z * sd is close enough.
            let mean: f64 = rates.iter().map(|r| 1.0 / r).sum();
            let sd = rates.iter().map(|r| 1.0 / (r * r)).sum::<f64>().sqrt();
            let tau = (mean + (p - 0.5) * 4.0 * sd).max(0.05 * mean);
            let (exact, largest) = closed_form(&rates, tau);
            prop_assert!(largest < 1e5, "oracle ill-conditioned: terms of {largest}");
            let got = c.cdf(&params, shift + tau);
            prop_assert!((got - exact).abs() < EXACT, "k={k} rates={rates:?} tau={tau}: {got} vs {exact}");
        }
    }

    #[test]
    fn equal_rates_are_the_erlang_cdf() {
        for k in 1..=50 {
            for rate in [0.05, 0.3, 1.0] {
                let c = repeated(k);
                let params = [Params { l0_ms: 1.5, rate_per_ms: rate }];
                let erlang = Gamma::new(k as f64, rate).expect("valid Gamma");
                for z in [-1.5, 0.0, 1.0, 2.5] {
                    let tau = ((k as f64 + z * (k as f64).sqrt()) / rate).max(0.1 / rate);
                    let want = erlang.cdf(tau);
                    let got = c.cdf(&params, 1.5 * k as f64 + tau);
                    assert!((got - want).abs() < EXACT, "k={k} rate={rate} tau={tau}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn near_equal_rates_are_exact_where_the_closed_form_is_not() {
        // The notes' example: four rates 1e-5 apart at t = 6 (rates near 1/ms). Reference from
        // 50-digit partial fractions (mpmath).
        let rates = [1.0, 1.0 + 1e-5, 1.0 + 2e-5, 1.0 + 3e-5];
        let exact = 0.848_804_148_126_090_2;
        let c = compile(&chain(&[0, 1, 2, 3]));
        let got = c.cdf(&params(&[0.0; 4], &rates), 6.0);
        assert!((got - exact).abs() < 1e-12, "{got} vs {exact}");
        let (naive, _) = closed_form(&rates, 6.0);
        assert!((naive - exact).abs() > 1e-4, "the f64 closed form should cancel here: {naive}");

        let rates = [0.5, 0.5 + 1e-5, 0.5 + 2e-5, 0.5 + 3e-5];
        let got = c.cdf(&params(&[0.0; 4], &rates), 12.0);
        assert!((got - 0.848_812_178_520_222).abs() < 1e-12, "{got}");
    }

    #[test]
    fn tiny_spreads_tend_to_the_erlang_limit() {
        // Spread 1e-9: the second-order departure from Erlang(k, mean rate) is ~1e-17.
        let erlang = Gamma::new(4.0, 0.2).expect("valid Gamma");
        let rates = [0.2 - 1.5e-9, 0.2 - 0.5e-9, 0.2 + 0.5e-9, 0.2 + 1.5e-9];
        let c = compile(&chain(&[0, 1, 2, 3]));
        for tau in [5.0, 20.0, 40.0] {
            let got = c.cdf(&params(&[0.0; 4], &rates), tau);
            assert!((got - erlang.cdf(tau)).abs() < EXACT, "{got} vs {}", erlang.cdf(tau));
        }
    }

    #[test]
    fn repeated_services_sum_their_gradients() {
        // Erlang(3, r) at tau: dF/dr = tau^3 r^2 e^{-r tau} / 2 = f(tau) * tau / r.
        let c = Compiled::new(&Node::chain(["s0", "s0", "s0"]), support::index).expect("indexed");
        assert_eq!(c.calls(0), 3);
        let (r, tau) = (0.4, 6.0);
        let mut grad = [0.0];
        c.cdf_grad(&[Params { l0_ms: 0.0, rate_per_ms: r }], tau, &mut grad);
        let want = tau.powi(3) * r * r * (-r * tau).exp() / 2.0;
        assert!((grad[0] - want).abs() < 1e-12, "{} vs {want}", grad[0]);
    }

    #[test]
    fn a_huge_rate_spread_goes_to_the_lattice_and_stays_accurate() {
        // max rate * tau ~ 1e6 steps: beyond MAX_CHAIN_STEPS, evaluated on the lattice.
        let rates = [1000.0, 0.02, 0.03];
        let c = compile(&chain(&[0, 1, 2]));
        let params = params(&[0.0; 3], &rates);
        for tau in [50.0, 100.0, 250.0] {
            let (exact, _) = closed_form(&rates, tau);
            let got = c.cdf(&params, tau);
            assert!((got - exact).abs() < 1e-4, "tau={tau}: {got} vs {exact}");
        }
    }
}
