//! The few functions of `x = rate * h` that exact exponential integrals over a cell reduce to,
//! evaluated without cancellation (series below `SERIES_BELOW`, closed forms above).
//!
//! - `phi(x) = (1 - e^-x) / x`, the mean of `e^-y` over a cell: in `(0, 1]`, decreasing.
//! - `psi(x) = 1 - phi(x)`: the probability that `Exp(rate)` ends in the first cell, weighted
//!   by how far into it (`k0` of the binned kernel).
//! - `chi(x) = -phi'(x) = psi'(x) = (1 - e^-x (1 + x)) / x^2`, positive.

/// Below this, the closed forms lose more than a digit and the series are used instead.
const SERIES_BELOW: f64 = 0.5;
/// Terms of the series; the first omitted term is below 1e-19 of the sum at `SERIES_BELOW`.
const SERIES_TERMS: u32 = 18;

pub(super) fn phi(x: f64) -> f64 {
    if x < SERIES_BELOW { 1.0 - psi(x) } else { -(-x).exp_m1() / x }
}

pub(super) fn psi(x: f64) -> f64 {
    if x < SERIES_BELOW {
        // sum_{n>=2} (-1)^n x^(n-1) / n!
        let mut term = 0.5 * x;
        let mut sum = term;
        for n in 3..SERIES_TERMS + 2 {
            term *= -x / f64::from(n);
            sum += term;
        }
        sum
    } else {
        1.0 + (-x).exp_m1() / x
    }
}

pub(super) fn chi(x: f64) -> f64 {
    if x < SERIES_BELOW {
        // sum_{n>=2} (-1)^n (n-1) x^(n-2) / n!
        let mut pow = 0.5; // x^(n-2) / n!, signed
        let mut sum = pow;
        for n in 3..SERIES_TERMS + 2 {
            pow *= -x / f64::from(n);
            sum += f64::from(n - 1) * pow;
        }
        sum
    } else {
        (phi(x) - (-x).exp()) / x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn series_and_closed_forms_meet() {
        for x in [SERIES_BELOW * (1.0 - 1e-12), SERIES_BELOW] {
            assert_relative_eq!(psi(x), 1.0 + (-x).exp_m1() / x, max_relative = 1e-14);
            assert_relative_eq!(chi(x), (-(-x).exp_m1() / x - (-x).exp()) / x, max_relative = 1e-13);
        }
    }

    #[test]
    fn small_arguments_keep_relative_accuracy() {
        // psi(x) ~ x/2 - x^2/6, chi(x) ~ 1/2 - x/3: no cancellation to 1e-300.
        for x in [1e-300, 1e-12, 1e-6, 1e-3] {
            assert_relative_eq!(
                psi(x),
                x / 2.0 - x * x / 6.0 + x * x * x / 24.0 - x.powi(4) / 120.0,
                max_relative = 1e-12
            );
            assert_relative_eq!(chi(x), 0.5 - x / 3.0 + x * x / 8.0 - x.powi(3) / 30.0, max_relative = 1e-12);
            assert_relative_eq!(phi(x) + psi(x), 1.0, max_relative = 1e-16);
        }
        assert_eq!(phi(0.0), 1.0);
        assert_eq!(psi(0.0), 0.0);
        assert_eq!(chi(0.0), 0.5);
    }

    #[test]
    fn large_arguments() {
        let x = 1e6;
        assert_relative_eq!(phi(x), 1.0 / x, max_relative = 1e-12);
        assert_relative_eq!(psi(x), 1.0 - 1.0 / x, max_relative = 1e-12);
        assert_relative_eq!(chi(x), 1.0 / (x * x), max_relative = 1e-12);
    }
}
