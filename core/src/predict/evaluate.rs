//! Predictors compared on a time split: each series (one windows.json) is fitted on its first
//! `train_fraction` of windows and scored on the rest, `ahead` windows ahead (1: the next
//! window), every prediction from the windows up to `ahead` before it only. Never a random
//! split, which would leak neighbouring windows.
//! Scores are accuracy (`1 - TV`) and KL, over all scored windows and separately over the
//! windows whose mix changed by more than `changed_tv` (default [`super::metrics::CHANGED_TV`]) from the
//! window before.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::{kl, tv};
use super::{Error, Predictor};
use crate::graph::Window;

/// Windows before the scored one that a predictor sees (enough for every baseline: an EWMA
/// with alpha >= 0.2 has forgotten 99.9% beyond 32 windows).
pub const CONTEXT: usize = 32;

/// Mean scores over a set of windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Score {
    pub accuracy: f64,
    pub kl: f64,
    pub windows: usize,
}

/// One predictor's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    pub all: Score,
    pub changed: Score,
    /// Mean wall time of one prediction, microseconds.
    pub predict_us: f64,
    /// What each series' fit chose ([`Predictor::describe`]), when the predictor says.
    pub fitted: Vec<String>,
}

#[derive(Debug, Default)]
struct Acc {
    accuracy: f64,
    kl: f64,
    n: usize,
}

impl Acc {
    fn add(&mut self, tv: f64, kl: f64) {
        self.accuracy += 1.0 - tv;
        self.kl += kl;
        self.n += 1;
    }

    fn score(&self) -> Score {
        let n = self.n.max(1) as f64;
        Score { accuracy: self.accuracy / n, kl: self.kl / n, windows: self.n }
    }
}

/// The index of the first scored window of a series of `len` windows.
pub fn split_at(len: usize, train_fraction: f64) -> usize {
    ((len as f64 * train_fraction).round() as usize).min(len)
}

/// Fit a fresh predictor from `make` on each series' training range and score it on the rest,
/// each window predicted from the windows ending `ahead` (>= 1) before it.
pub fn evaluate(
    make: &mut dyn FnMut() -> Result<Box<dyn Predictor>, Error>,
    series: &[Vec<Window>],
    train_fraction: f64,
    changed_tv: f64,
    ahead: usize,
) -> Result<Row, Error> {
    if ahead == 0 {
        return Err(Error::Invalid { field: "ahead", value: "0".into(), expected: "at least 1 window" });
    }
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(Error::Invalid {
            field: "train_fraction",
            value: train_fraction.to_string(),
            expected: "a number in (0, 1)",
        });
    }
    let (mut all, mut changed) = (Acc::default(), Acc::default());
    let mut name = String::new();
    let mut fitted = Vec::new();
    let mut elapsed = std::time::Duration::ZERO;
    for windows in series {
        let at = split_at(windows.len(), train_fraction);
        if at < ahead + 1 || at >= windows.len() {
            return Err(Error::TooShort { what: "evaluate", got: windows.len(), need: 4 });
        }
        let mut p = make()?;
        p.fit(&windows[..at])?;
        name = p.name().to_owned();
        fitted.extend(p.describe());
        for t in at..windows.len() {
            let started = std::time::Instant::now();
            let end = t + 1 - ahead;
            let predicted = p.predict(&windows[end.saturating_sub(CONTEXT)..end])?;
            elapsed += started.elapsed();
            let actual = &windows[t].graph_mix;
            let (d, k) = (tv(&predicted, actual), kl(actual, &predicted));
            all.add(d, k);
            if tv(actual, &windows[t - 1].graph_mix) > changed_tv {
                changed.add(d, k);
            }
        }
    }
    let predict_us = 1e6 * elapsed.as_secs_f64() / all.n.max(1) as f64;
    Ok(Row { name, all: all.score(), changed: changed.score(), predict_us, fitted })
}

/// The mixes the windows were drawn from, known in advance (`derm simulate --windows-only`
/// writes them as truth.json): scored like a predictor, it measures how much of the error is
/// the windows' own sampling noise, which no predictor can remove.
#[derive(Debug, Clone)]
pub struct Known {
    mixes: BTreeMap<i64, BTreeMap<String, f64>>,
    ahead: usize,
}

impl Known {
    /// `truth` by window start; each prediction is the truth `ahead` windows after the newest
    /// window it is given.
    pub fn new(truth: &[Window], ahead: usize) -> Self {
        Known { mixes: truth.iter().map(|w| (w.start_s, w.graph_mix.clone())).collect(), ahead }
    }
}

impl Predictor for Known {
    fn name(&self) -> &str {
        "truth"
    }

    fn fit(&mut self, _: &[Window]) -> Result<(), Error> {
        Ok(())
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let last = recent.last().ok_or(Error::EmptyHistory { what: "truth" })?;
        let start = last.start_s + self.ahead as i64 * i64::from(last.duration_s);
        self.mixes.get(&start).cloned().ok_or_else(|| no_truth(start))
    }
}

/// A scored window without its true mix.
fn no_truth(start_s: i64) -> Error {
    Error::Invalid {
        field: "--truth",
        value: format!("no window starting at {start_s} s"),
        expected: "a true mix for every scored window (the truth.json written with the windows)",
    }
}

/// An upper bound on the mean accuracy any predictor can reach on the scored windows of
/// `series` (as [`evaluate`] splits them), when each window is `requests` draws from the mix
/// of the `truth` window with the same start (as `derm simulate --windows-only` samples). Given
/// that mix and count, a window's counts are independent of everything before it, so no
/// prediction beats the best fixed one for that window; and that TV, `1/2 sum_g E|X_g/n -
/// q_g|`, is at least what each graph's share alone allows: `q_g` at the median of its
/// binomial count `X_g`. Windows without a truth window are an error.
pub fn noise_ceiling(series: &[Vec<Window>], truth: &[Vec<Window>], train_fraction: f64) -> Result<f64, Error> {
    let mut acc = Acc::default();
    for (windows, truth) in series.iter().zip(truth) {
        let by_start: BTreeMap<i64, &Window> = truth.iter().map(|w| (w.start_s, w)).collect();
        for w in &windows[split_at(windows.len(), train_fraction)..] {
            let t = by_start.get(&w.start_s).ok_or_else(|| no_truth(w.start_s))?;
            let n = w.requests;
            if n == 0 {
                continue;
            }
            let spread: f64 = t.graph_mix.values().map(|&p| binomial_abs_deviation(n, p)).sum();
            acc.add(0.5 * spread / n as f64, 0.0);
        }
    }
    Ok(acc.score().accuracy)
}

/// `E|X - median(X)|` for `X ~ Binomial(n, p)`, summed over the counts within 12 standard
/// deviations of the mean (the rest weighs below 1e-30).
fn binomial_abs_deviation(n: u64, p: f64) -> f64 {
    use statrs::distribution::{Binomial, Discrete};
    let Ok(b) = Binomial::new(p.clamp(0.0, 1.0), n) else { return 0.0 };
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    let lo = (mean - 12.0 * sd - 1.0).floor().max(0.0) as u64;
    let hi = ((mean + 12.0 * sd + 1.0).ceil() as u64).min(n);
    let pmf: Vec<f64> = (lo..=hi).map(|k| b.pmf(k)).collect();
    let mut cum = 0.0;
    let median = lo
        + pmf
            .iter()
            .position(|m| {
                cum += m;
                cum >= 0.5
            })
            .unwrap_or(0) as u64;
    (lo..=hi).zip(&pmf).map(|(k, m)| m * (k as f64 - median as f64).abs()).sum()
}

/// A markdown table of rows.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | accuracy | KL | windows | accuracy (mix changed) | KL (mix changed) | windows (mix changed) | predict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2}% | {:.4} | {} | {:.2}% | {:.4} | {} | {:.1} us |\n",
            r.name,
            100.0 * r.all.accuracy,
            r.all.kl,
            r.all.windows,
            100.0 * r.changed.accuracy,
            r.changed.kl,
            r.changed.windows,
            r.predict_us
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::fixtures::two_graphs as window;
    use crate::predict::{Arima, Last};

    #[test]
    fn scores_on_the_later_range_and_separates_changes() {
        // Alternating mix: last value is always off by 0.6 TV, AR(1) learns the alternation.
        let series = vec![(0..100).map(|t| window(t, if t % 2 == 0 { 0.8 } else { 0.2 })).collect::<Vec<_>>()];
        let last = evaluate(&mut || Ok(Box::new(Last)), &series, 0.5, 0.1, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(last.all.windows, 50);
        assert_eq!(last.changed.windows, 50);
        assert!((last.all.accuracy - 0.4).abs() < 1e-12, "{last:?}");
        let ar = evaluate(&mut || Ok(Box::new(Arima::new(1)?)), &series, 0.5, 0.1, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(ar.all.accuracy > 0.99, "{ar:?}");
        assert!(markdown(&[last, ar]).contains("| arima | 100.00% |"));
    }

    #[test]
    fn binomial_deviation_from_the_median() {
        // n = 1, p = 0.3: the median is 0, so E|X| = 0.3.
        assert!((binomial_abs_deviation(1, 0.3) - 0.3).abs() < 1e-12);
        // n = 2, p = 0.5: counts 0, 1, 2 with 1/4, 1/2, 1/4 around the median 1.
        assert!((binomial_abs_deviation(2, 0.5) - 0.5).abs() < 1e-12);
        assert_eq!(binomial_abs_deviation(300, 0.0), 0.0);
        // Large n: sd sqrt(2/pi) n p (1 - p) in the normal limit.
        let (n, p) = (10_000u64, 0.2);
        let normal = (2.0 / std::f64::consts::PI).sqrt() * (n as f64 * p * (1.0 - p)).sqrt();
        assert!((binomial_abs_deviation(n, p) / normal - 1.0).abs() < 0.01);
    }

    #[test]
    fn the_truth_scores_near_the_noise_ceiling_and_baselines_below_it() {
        let scenario = crate::sim::Scenario::named("alibaba").unwrap_or_else(|e| panic!("{e}"));
        let pattern = scenario.pattern.clone();
        let windows =
            crate::sim::windows::sample(&scenario, &pattern, 400, 30, 0.05, 5).unwrap_or_else(|e| panic!("{e}"));
        let truth = crate::sim::windows::truth(&scenario, &pattern, 400, 30).unwrap_or_else(|e| panic!("{e}"));
        let (series, truths) = (vec![windows], vec![truth]);
        let ceiling = noise_ceiling(&series, &truths, 0.5).unwrap_or_else(|e| panic!("{e}"));
        let mut make = || -> Result<Box<dyn Predictor>, Error> { Ok(Box::new(Known::new(&truths[0], 1))) };
        let known = evaluate(&mut make, &series, 0.5, 0.1, 1).unwrap_or_else(|e| panic!("{e}"));
        let last = evaluate(&mut || Ok(Box::new(Last)), &series, 0.5, 0.1, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(known.name, "truth");
        // The ceiling holds in expectation; over 200 windows the truth comes within a point.
        assert!((known.all.accuracy - ceiling).abs() < 0.01, "truth {known:?}, ceiling {ceiling}");
        assert!(last.all.accuracy < ceiling - 0.01, "last {last:?}, ceiling {ceiling}");
        assert!(ceiling < 0.95, "5% sampling leaves a few hundred requests per window: {ceiling}");
        // A truth that misses a scored window is an error naming the flag.
        let short = vec![truths[0][..250].to_vec()];
        assert!(noise_ceiling(&series, &short, 0.5).unwrap_err().to_string().contains("--truth"));
        let mut make = || -> Result<Box<dyn Predictor>, Error> { Ok(Box::new(Known::new(&short[0], 1))) };
        assert!(evaluate(&mut make, &series, 0.5, 0.1, 1).unwrap_err().to_string().contains("--truth"));
    }

    #[test]
    fn ahead_scores_windows_further_out() {
        // Period 2: the window two back is always right, the one before always wrong.
        let series = vec![(0..100).map(|t| window(t, if t % 2 == 0 { 0.8 } else { 0.2 })).collect::<Vec<_>>()];
        let two = evaluate(&mut || Ok(Box::new(Last)), &series, 0.5, 0.1, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(two.all.windows, 50);
        assert!((two.all.accuracy - 1.0).abs() < 1e-12, "{two:?}");
        assert!(two.fitted.is_empty(), "last value has nothing to report");
        let trend = evaluate(&mut || Ok(Box::new(crate::predict::Trend::ahead(2)?)), &series, 0.5, 0.1, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(trend.fitted.len() == 1 && trend.fitted[0].contains("for 2 windows ahead"), "{trend:?}");
        assert!(evaluate(&mut || Ok(Box::new(Last)), &series, 0.5, 0.1, 0).unwrap_err().to_string().contains("ahead"));
    }

    #[test]
    fn bad_split_is_an_error() {
        let series = vec![(0..3).map(|t| window(t, 1.0)).collect::<Vec<_>>()];
        assert!(
            evaluate(&mut || Ok(Box::new(Last)), &series, 1.0, 0.1, 1)
                .unwrap_err()
                .to_string()
                .contains("train_fraction")
        );
        let err = evaluate(&mut || Ok(Box::new(Last)), &series, 0.1, 0.1, 1).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }
}
