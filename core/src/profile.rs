//! Per-service latency profiles: `latency = l0 + Exp(rate)`, `rate = a * w + b`, with `w` the
//! per-container load (requests/s) and `rate` in 1/ms.
//!
//! Windows are grouped into up to `max_levels` load levels (quantiles of `w`, each holding
//! at least `min_samples_per_level` samples). One shift `l0` is shared by all levels (the
//! per-level MLE shifts combined by inverse variance, which favours low-load levels); each
//! level's rate is then the MLE given that shift, and `rate = a * w + b` is a weighted least
//! squares fit (weights `n / rate^2`, the inverse variance of a rate estimate).
//!
//! Conservative fallback, flagged in the output: with fewer than `min_levels` levels, a
//! slope `a >= 0`, or a fitted rate `<= 0` inside the observed load range, the profile keeps
//! the observed mean rate at the observed mean load and assumes the rate falls linearly to
//! zero at twice the highest observed load. An optimizer using it therefore never packs
//! more than twice the observed per-container load onto a container until data says more.

pub mod fit;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::window::Samples;
use crate::latency::Params;

/// Fitting options.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_levels: usize,
    pub min_samples_per_level: usize,
    pub min_levels: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_levels: 10, min_samples_per_level: 30, min_levels: 3 }
    }
}

/// Why a profile uses the fallback or deserves a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Fewer load levels than `min_levels`: the slope is not identifiable.
    FewLevels,
    /// Latency did not grow with load (`a >= 0`).
    NonNegativeSlope,
    /// The fit predicts a rate `<= 0` inside the observed load range.
    NonPositiveRate,
    /// Traces named no container: per-container load assumed one container.
    ContainersUnknown,
}

/// One load level's fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub w_rps: f64,
    pub samples: usize,
    /// Rate fitted to this level alone (given the shared shift).
    pub rate_per_ms: f64,
    /// Kolmogorov-Smirnov distance between the level's sample and its fit.
    pub ks: f64,
}

/// A service's profile as written to `profiles.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub l0_ms: f64,
    /// Slope of rate in load, 1/ms per (request/s); negative: more load, slower.
    pub a: f64,
    /// Rate at zero load, 1/ms.
    pub b: f64,
    pub samples: usize,
    pub levels: usize,
    /// Weighted R^2 of the rate regression (0 when it was not fitted).
    pub r2: f64,
    pub w_min_rps: f64,
    pub w_max_rps: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// True when `a` and `b` are the conservative fallback, not the regression.
    #[serde(default)]
    pub fallback: bool,
    #[serde(default)]
    pub fit: Vec<Level>,
}

impl Profile {
    /// A profile given by its line alone (no fit details: samples, levels and R^2 unset),
    /// trusted up to `w_max_rps`: generated instances and tests.
    pub fn line(l0_ms: f64, a: f64, b: f64, w_max_rps: f64) -> Self {
        Profile {
            l0_ms,
            a,
            b,
            samples: 0,
            levels: 0,
            r2: 1.0,
            w_min_rps: 0.0,
            w_max_rps,
            flags: Vec::new(),
            fallback: false,
            fit: Vec::new(),
        }
    }

    /// Rate at per-container load `w` (may be <= 0: overloaded).
    pub fn rate(&self, w_rps: f64) -> f64 {
        self.a * w_rps + self.b
    }

    /// Latency parameters at per-container load `w`.
    pub fn params(&self, w_rps: f64) -> Params {
        Params { l0_ms: self.l0_ms, rate_per_ms: self.rate(w_rps) }
    }

    /// Load at which the rate reaches zero (infinite when `a >= 0`).
    pub fn capacity_rps(&self) -> f64 {
        if self.a < 0.0 { -self.b / self.a } else { f64::INFINITY }
    }
}

/// A refit of a service may replace its profile `base` when its capacity `-b/a` and its rate
/// at `base`'s highest profiled load stay within this factor of `base`'s (either way).
pub const REFIT_FACTOR: f64 = 1.5;

/// Whether a refit `new` may replace `base` without more evidence: not the fallback line,
/// capacity and rate at `base.w_max_rps` within [`REFIT_FACTOR`], shift within 2x + 1 ms.
///
/// The capacity alone lets a refit on overload windows flatten the line (`b` and `|a|` both
/// falling, `-b/a` kept): 3-6x slower at the loads actually planned for (the simulator's
/// `trainticket` seat and config services after the degraded-mode exit). Hence the rate too.
pub fn plausible_refit(base: &Profile, new: &Profile) -> bool {
    let (c0, c1) = (base.capacity_rps(), new.capacity_rps());
    let within = |x: f64, x0: f64| x <= x0 * REFIT_FACTOR && x >= x0 / REFIT_FACTOR;
    let (r0, r1) = (base.rate(base.w_max_rps), new.rate(base.w_max_rps));
    !new.fallback
        && c1.is_finite()
        && c1 > 0.0
        && (!c0.is_finite() || within(c1, c0))
        && (!(r0 > 0.0 && r0.is_finite()) || within(r1, r0))
        && new.l0_ms <= 2.0 * base.l0_ms + 1.0
}

/// `profiles.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Profiles {
    pub services: BTreeMap<String, Profile>,
}

/// Why a service could not be profiled at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No window held enough finite samples.
    #[error("service {service}: only {samples} latency samples (need at least {needed})")]
    TooFewSamples { service: String, samples: usize, needed: usize },
}

/// Fit every service; services that cannot be fitted are returned with the reason.
pub fn fit_all(samples: &BTreeMap<String, Vec<Samples>>, config: &Config) -> (Profiles, Vec<Error>) {
    let mut out = Profiles::default();
    let mut errors = Vec::new();
    for (service, windows) in samples {
        match fit_service(service, windows, config) {
            Ok(p) => {
                out.services.insert(service.clone(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

/// Fit one service from its per-window samples.
pub fn fit_service(service: &str, windows: &[Samples], config: &Config) -> Result<Profile, Error> {
    let levels = group_levels(windows, config);
    let total: usize = windows.iter().map(|w| w.latencies_ms.len()).sum();
    let needed = fit::MIN_SAMPLES;
    let too_few = || Error::TooFewSamples { service: service.to_owned(), samples: total, needed };
    // Per-level MLE, then one shift for all levels by inverse-variance weighting.
    let own: Vec<(f64, fit::ShiftedExp, usize)> =
        levels.iter().filter_map(|(w, xs)| fit::mle(xs).map(|f| (*w, f, xs.len()))).collect();
    if own.is_empty() {
        return Err(too_few());
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (_, f, n) in &own {
        let weight = (*n as f64 * f.rate_per_ms).powi(2);
        num += weight * f.l0_ms;
        den += weight;
    }
    let l0 = (num / den).max(0.0);
    let mut fits = Vec::new();
    for (w, xs) in &levels {
        let Some(rate) = fit::rate_given_shift(xs, l0) else {
            continue;
        };
        let mut sorted: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let ks = fit::ks(&sorted, &fit::ShiftedExp { l0_ms: l0, rate_per_ms: rate });
        fits.push(Level { w_rps: *w, samples: sorted.len(), rate_per_ms: rate, ks });
    }
    if fits.is_empty() {
        return Err(too_few());
    }
    let w_min = fits.iter().map(|l| l.w_rps).fold(f64::INFINITY, f64::min);
    let w_max = fits.iter().map(|l| l.w_rps).fold(f64::NEG_INFINITY, f64::max);
    let mut flags = Vec::new();
    if windows.iter().any(|w| w.containers_unknown) {
        flags.push(Flag::ContainersUnknown);
    }
    let (mut a, mut b, mut r2) = (0.0, 0.0, 0.0);
    if fits.len() < config.min_levels {
        flags.push(Flag::FewLevels);
    } else {
        (a, b, r2) = regress(&fits);
        if a >= 0.0 {
            flags.push(Flag::NonNegativeSlope);
        } else if a * w_max + b <= 0.0 {
            flags.push(Flag::NonPositiveRate);
        }
    }
    let fallback = flags.iter().any(|f| *f != Flag::ContainersUnknown);
    if fallback {
        (a, b) = fallback_line(&fits, w_max);
    }
    Ok(Profile {
        l0_ms: l0,
        a,
        b,
        samples: fits.iter().map(|l| l.samples).sum(),
        levels: fits.len(),
        r2,
        w_min_rps: w_min,
        w_max_rps: w_max,
        flags,
        fallback,
        fit: fits,
    })
}

/// Quantile bins of windows by load, each with at least `min_samples_per_level` samples.
/// Returns (sample-weighted mean load, pooled latencies) per level, by increasing load.
fn group_levels(windows: &[Samples], config: &Config) -> Vec<(f64, Vec<f64>)> {
    let mut ws: Vec<&Samples> =
        windows.iter().filter(|w| !w.latencies_ms.is_empty() && w.per_container_rps.is_finite()).collect();
    ws.sort_by(|a, b| a.per_container_rps.total_cmp(&b.per_container_rps));
    let total: usize = ws.iter().map(|w| w.latencies_ms.len()).sum();
    let min = config.min_samples_per_level.max(fit::MIN_SAMPLES);
    let count = (total / min).clamp(1, config.max_levels.max(1));
    let target = total.div_ceil(count);
    let mut levels: Vec<(f64, Vec<f64>)> = Vec::new();
    let (mut wsum, mut xs) = (0.0, Vec::new());
    for w in ws {
        wsum += w.per_container_rps * w.latencies_ms.len() as f64;
        xs.extend_from_slice(&w.latencies_ms);
        if xs.len() >= target {
            levels.push((wsum / xs.len() as f64, std::mem::take(&mut xs)));
            wsum = 0.0;
        }
    }
    if !xs.is_empty() {
        // A short last bin joins the previous one rather than standing alone.
        match levels.last_mut() {
            Some((lw, lx)) if xs.len() < min => {
                let n = lx.len() as f64;
                *lw = (*lw * n + wsum) / (n + xs.len() as f64);
                lx.extend(xs);
            }
            _ => levels.push((wsum / xs.len() as f64, xs)),
        }
    }
    levels
}

/// Weighted least squares `rate = a * w + b`, weights `n / rate^2`; returns (a, b, R^2).
fn regress(levels: &[Level]) -> (f64, f64, f64) {
    let weights: Vec<f64> = levels.iter().map(|l| l.samples as f64 / l.rate_per_ms.powi(2)).collect();
    let sw: f64 = weights.iter().sum();
    let mw = levels.iter().zip(&weights).map(|(l, k)| k * l.w_rps).sum::<f64>() / sw;
    let mr = levels.iter().zip(&weights).map(|(l, k)| k * l.rate_per_ms).sum::<f64>() / sw;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (l, k) in levels.iter().zip(&weights) {
        sxy += k * (l.w_rps - mw) * (l.rate_per_ms - mr);
        sxx += k * (l.w_rps - mw).powi(2);
        syy += k * (l.rate_per_ms - mr).powi(2);
    }
    if sxx <= 0.0 {
        return (0.0, mr, 0.0);
    }
    let a = sxy / sxx;
    let b = mr - a * mw;
    let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 0.0 };
    (a, b, r2)
}

/// The documented conservative line: observed mean rate at observed mean load, zero at
/// twice the highest observed load.
fn fallback_line(levels: &[Level], w_max: f64) -> (f64, f64) {
    let n: f64 = levels.iter().map(|l| l.samples as f64).sum();
    let rate = levels.iter().map(|l| l.samples as f64 * l.rate_per_ms).sum::<f64>() / n;
    let w_mean = levels.iter().map(|l| l.samples as f64 * l.w_rps).sum::<f64>() / n;
    let zero_at = (2.0 * w_max).max(w_mean + 1.0);
    let a = -rate / (zero_at - w_mean);
    (a, rate - a * w_mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Exp};

    fn windows(levels: &[f64], per: usize, l0: f64, a: f64, b: f64, seed: u64) -> Vec<Samples> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        levels
            .iter()
            .map(|&w| {
                let exp = Exp::new(a * w + b).unwrap_or_else(|e| panic!("{e}"));
                Samples {
                    per_container_rps: w,
                    latencies_ms: (0..per).map(|_| l0 + exp.sample(&mut rng)).collect(),
                    containers_unknown: false,
                }
            })
            .collect()
    }

    #[test]
    fn recovers_linear_rate() {
        let loads: Vec<f64> = (1..=10).map(|k| 20.0 * k as f64).collect();
        let ws = windows(&loads, 2_000, 1.5, -0.002, 0.6, 3);
        let p = fit_service("s", &ws, &Config::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.fallback, "{p:?}");
        assert!((p.l0_ms - 1.5).abs() / 1.5 < 0.02, "{p:?}");
        let mid = 110.0;
        let truth = -0.002 * mid + 0.6;
        assert!((p.rate(mid) - truth).abs() / truth < 0.05, "{} vs {truth}", p.rate(mid));
        assert!(p.r2 > 0.9);
        assert_eq!(p.levels, 10);
        assert!(p.fit.iter().all(|l| l.ks < 0.05));
    }

    #[test]
    fn one_level_falls_back_conservatively() {
        let ws = windows(&[50.0], 500, 2.0, -0.001, 0.5, 1);
        let p = fit_service("s", &ws, &Config { max_levels: 1, ..Config::default() }).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.fallback);
        assert_eq!(p.flags, vec![Flag::FewLevels]);
        // Observed rate kept at the observed load, zero at twice the highest load.
        assert!((p.rate(50.0) - p.fit[0].rate_per_ms).abs() < 1e-9);
        assert!(p.rate(100.0).abs() < 1e-9);
    }

    #[test]
    fn flat_latency_is_flagged() {
        let loads: Vec<f64> = (1..=6).map(|k| 10.0 * k as f64).collect();
        let ws = windows(&loads, 1_000, 1.0, 0.0005, 0.3, 9);
        let p = fit_service("s", &ws, &Config::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.flags.contains(&Flag::NonNegativeSlope));
        assert!(p.a < 0.0 && p.fallback);
    }

    #[test]
    fn empty_service_is_an_error() {
        let err = fit_service("svc", &[], &Config::default()).unwrap_err();
        assert!(err.to_string().contains("svc"));
    }

    #[test]
    fn a_refit_that_flattens_the_line_is_not_plausible() {
        // `trainticket`'s config service: profiled, then refitted on overload windows.
        let line = |a, b| Profile::line(0.3, a, b, 34.1);
        let (base, flat) = (line(-0.00091, 0.0480), line(-0.00026, 0.0098));
        assert!(flat.capacity_rps() > base.capacity_rps() / REFIT_FACTOR, "the capacity alone passes");
        assert!(!plausible_refit(&base, &flat), "6x slower at 34 calls/s");
        assert!(plausible_refit(&base, &line(-0.00083, 0.0452)), "a refit that moved a little");
        assert!(!plausible_refit(&base, &Profile { fallback: true, ..line(-0.00091, 0.0480) }));
        assert!(!plausible_refit(&base, &Profile { l0_ms: 2.0, ..line(-0.00091, 0.0480) }), "shift over 2x + 1 ms");
    }
}
