//! A graph mix that follows the entry load.
//!
//! Where the mix is mostly a function of load (which graphs a request takes depends on how
//! busy the system is: Alibaba's shapes correlate with load, a degraded mode drops calls), a
//! forecast from the last few windows only follows it late and carries their sampling noise.
//! This one pools every window seen instead:
//! - [`Predictor::fit`] / [`Predictor::update`]: each graph's share is log-linear in the load,
//!   `ln s_g = a_g + b_g ln L`, by weighted least squares over [`BINS`] load bins of all the
//!   windows (pooled counts; a bin's log share weighs by its count, its inverse variance);
//! - [`Predictor::predict`]: the fitted mix at the load forecast `horizon` windows after the
//!   newest window ([`trend::LAG`] by default, what an online loop plans for) (the least-squares slope of the last four windows' loads), times each
//!   graph's recent ratio of observed to fitted requests (windows weighted by a half-life of
//!   [`HALF_LIFE`] windows, shrunk towards 1 by [`PSEUDO`] requests), which carries what the
//!   load does not explain (a drift, an argument mix); graphs seen recently but never in a
//!   fit keep their recent observed share.

use std::collections::BTreeMap;

use super::{Error, Predictor, load, normalise, trend, usable};
use crate::graph::Window;

/// Load bins of the fit (equal width in log load over the range seen).
pub const BINS: usize = 8;
/// Half-life, in windows, of a recent window's weight in the observed-to-fitted ratio.
pub const HALF_LIFE: f64 = 3.0;
/// Pseudo-requests that shrink a graph's ratio towards 1 (at the graph's fitted share).
pub const PSEUDO: f64 = 50.0;
/// Largest load exponent magnitude fitted (a share at most doubles when the load rises 26%).
const MAX_SLOPE: f64 = 3.0;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LoadMix {
    /// Graph -> `(a, b)`: `ln s = a + b ln L`, before normalising.
    fit: BTreeMap<String, (f64, f64)>,
    horizon: usize,
}

impl Default for LoadMix {
    fn default() -> Self {
        LoadMix { fit: BTreeMap::new(), horizon: trend::LAG }
    }
}

impl LoadMix {
    /// Forecasting `horizon` (1..=64) windows after the newest.
    pub fn ahead(horizon: usize) -> Result<Self, Error> {
        if !(1..=64).contains(&horizon) {
            return Err(Error::Invalid { field: "horizon", value: horizon.to_string(), expected: "1 to 64" });
        }
        Ok(LoadMix { horizon, ..LoadMix::default() })
    }

    /// The fitted mix at load `load_rps` (normalised over the fitted graphs), by graph id.
    fn at(&self, load_rps: f64) -> Vec<(&str, f64)> {
        let x = load_rps.max(1e-9).ln();
        let mut mix: Vec<(&str, f64)> = self.fit.iter().map(|(g, (a, b))| (g.as_str(), (a + b * x).exp())).collect();
        let total: f64 = mix.iter().map(|(_, s)| s).sum();
        mix.iter_mut().for_each(|(_, s)| *s /= total);
        mix
    }

    /// Graph -> `(a, b)`, for reports and tests.
    pub fn coefficients(&self) -> &BTreeMap<String, (f64, f64)> {
        &self.fit
    }
}

/// Load `horizon` windows after the newest, from the last [`load::TREND_POINTS`] windows' loads (either
/// direction; never below half the last).
fn load_ahead(ws: &[&Window], horizon: usize) -> f64 {
    let loads: Vec<f64> = ws[ws.len().saturating_sub(load::TREND_POINTS)..].iter().map(|w| w.load_rps).collect();
    let last = loads[loads.len() - 1];
    (last + load::slope(&loads) * horizon as f64).max(0.5 * last)
}

impl Predictor for LoadMix {
    fn name(&self) -> &str {
        "loadmix"
    }

    fn describe(&self) -> Option<String> {
        let slopes: Vec<f64> = self.fit.values().map(|(_, b)| *b).collect();
        let (lo, hi) = slopes.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), b| (l.min(*b), h.max(*b)));
        (!slopes.is_empty()).then(|| format!("{} graphs, load exponents {lo:.2} to {hi:.2}", slopes.len()))
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        let ws = usable(history, "loadmix: fit")?;
        let ws: Vec<&Window> = ws.into_iter().filter(|w| w.load_rps > 0.0 && w.requests > 0).collect();
        if ws.is_empty() {
            return Err(Error::EmptyHistory { what: "loadmix: fit" });
        }
        let xs: Vec<f64> = ws.iter().map(|w| w.load_rps.ln()).collect();
        let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| (l.min(*x), h.max(*x)));
        let width = ((hi - lo) / BINS as f64).max(1e-9);
        // Per bin: requests, the sum of their log loads, and each graph's requests.
        let mut bins: Vec<(f64, f64, BTreeMap<&str, f64>)> = vec![(0.0, 0.0, BTreeMap::new()); BINS];
        for (w, x) in ws.iter().zip(&xs) {
            let k = (((x - lo) / width) as usize).min(BINS - 1);
            let n = w.requests as f64;
            let total: f64 = w.graph_mix.values().sum();
            let bin = &mut bins[k];
            bin.0 += n;
            bin.1 += n * x;
            for (g, s) in &w.graph_mix {
                *bin.2.entry(g.as_str()).or_insert(0.0) += n * s / total;
            }
        }
        let bins: Vec<_> = bins.into_iter().filter(|b| b.0 > 0.0).collect();
        let mut graphs: Vec<&str> = bins.iter().flat_map(|b| b.2.keys().copied()).collect();
        graphs.sort_unstable();
        graphs.dedup();
        let g_count = graphs.len() as f64;
        self.fit = graphs
            .into_iter()
            .map(|g| {
                // (x, log share with half a request added, weight = that count).
                let points: Vec<(f64, f64, f64)> = bins
                    .iter()
                    .map(|(n, sx, counts)| {
                        let c = counts.get(g).copied().unwrap_or(0.0) + 0.5;
                        (sx / n, (c / (n + 0.5 * g_count)).ln(), c)
                    })
                    .collect();
                let wsum: f64 = points.iter().map(|p| p.2).sum();
                let mx = points.iter().map(|p| p.2 * p.0).sum::<f64>() / wsum;
                let my = points.iter().map(|p| p.2 * p.1).sum::<f64>() / wsum;
                let sxx: f64 = points.iter().map(|p| p.2 * (p.0 - mx).powi(2)).sum();
                let sxy: f64 = points.iter().map(|p| p.2 * (p.0 - mx) * (p.1 - my)).sum();
                let b = if sxx > 1e-12 { (sxy / sxx).clamp(-MAX_SLOPE, MAX_SLOPE) } else { 0.0 };
                (g.to_owned(), (my - b * mx, b))
            })
            .collect();
        Ok(())
    }

    /// Refits on the whole history: the fit has no parameters to choose.
    fn update(&mut self, history: &[Window]) -> Result<(), Error> {
        self.fit(history)
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let ws = usable(recent, "loadmix: predict")?;
        if self.fit.is_empty() {
            return Err(Error::NotFitted { what: "loadmix: predict" });
        }
        // Observed and fitted requests per graph over the recent windows, newest weighing most.
        let decay = 0.5f64.powf(1.0 / HALF_LIFE);
        let (mut observed, mut fitted) = (BTreeMap::<&str, f64>::new(), BTreeMap::<&str, f64>::new());
        let mut total = 0.0;
        for (age, w) in ws.iter().rev().enumerate() {
            let n = decay.powi(age as i32) * w.requests as f64;
            let sum: f64 = w.graph_mix.values().sum();
            total += n;
            for (g, s) in &w.graph_mix {
                *observed.entry(g.as_str()).or_insert(0.0) += n * s / sum;
            }
            if w.load_rps > 0.0 {
                for (g, s) in self.at(w.load_rps) {
                    *fitted.entry(g).or_insert(0.0) += n * s;
                }
            }
        }
        let ahead = self.at(load_ahead(&ws, self.horizon));
        let fitted_total: f64 = fitted.values().sum();
        let mut mix: BTreeMap<String, f64> = ahead
            .into_iter()
            .map(|(g, s)| {
                let (o, e) = (observed.get(g).copied().unwrap_or(0.0), fitted.get(g).copied());
                // Shrunk towards 1 by PSEUDO requests at the graph's fitted share.
                let prior = PSEUDO * e.unwrap_or(0.0) / fitted_total.max(1e-12);
                let ratio = match e {
                    Some(e) if e + prior > 0.0 => (o + prior) / (e + prior),
                    _ => 1.0,
                };
                (g.to_owned(), s * ratio)
            })
            .collect();
        // Graphs the fit never saw: their recent observed share, the rest scaled to make room.
        let unseen: Vec<(&str, f64)> =
            observed.iter().filter(|(g, _)| !self.fit.contains_key(**g)).map(|(g, o)| (*g, o / total)).collect();
        let room = 1.0 - unseen.iter().map(|(_, s)| s).sum::<f64>();
        let seen_sum: f64 = mix.values().sum();
        if seen_sum > 0.0 {
            mix.values_mut().for_each(|v| *v *= room.max(0.0) / seen_sum);
        }
        mix.extend(unseen.into_iter().map(|(g, s)| (g.to_owned(), s)));
        let mix = normalise(mix);
        if mix.is_empty() {
            return Ok(normalise(ws[ws.len() - 1].graph_mix.clone()));
        }
        Ok(mix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::fixtures::with_mix;

    /// Graph `big`'s share at `load`: weight `(load / 100)^1.5` against `small`'s 1.
    fn big_at(load: f64) -> f64 {
        let w = (load / 100.0).powf(1.5);
        w / (1.0 + w)
    }

    /// A window at `load` with [`big_at`]'s mix.
    fn at_load(t: i64, load: f64) -> Window {
        let big = big_at(load);
        let mut w = with_mix(30 * t, &[("big", big), ("small", 1.0 - big)]);
        w.load_rps = load;
        w.requests = 1000;
        w
    }

    #[test]
    fn follows_the_load_to_where_it_is_going() {
        // Fitted over a sweep of loads; the recent windows climb from 40 to 70 requests/s.
        let sweep: Vec<Window> = (0..20).map(|k| at_load(k, 20.0 + 4.0 * k as f64)).collect();
        let mut p = LoadMix::default();
        p.fit(&sweep).unwrap_or_else(|e| panic!("{e}"));
        let recent: Vec<Window> = (0..4).map(|k| at_load(100 + k, 40.0 + 10.0 * k as f64)).collect();
        let mix = p.predict(&recent).unwrap_or_else(|e| panic!("{e}"));
        // Two windows after 70: the load's slope (10 a window) carries it to 90.
        let want = big_at(90.0);
        assert!((mix["big"] - want).abs() < 0.01, "{mix:?} against {want}");
        // The last window's own mix lags it.
        assert!(mix["big"] > recent[3].graph_mix["big"] + 0.05, "{mix:?}");
        assert!((mix.values().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn what_the_load_does_not_explain_comes_from_recent_windows() {
        let sweep: Vec<Window> = (0..20).map(|k| at_load(k, 20.0 + 4.0 * k as f64)).collect();
        let mut p = LoadMix::default();
        p.fit(&sweep).unwrap_or_else(|e| panic!("{e}"));
        // At a steady 60 requests/s, "big" now takes twice its fitted share and a new graph
        // appears.
        let fitted = big_at(60.0);
        let recent: Vec<Window> = (0..10)
            .map(|k| {
                let mut w =
                    with_mix(3000 + 30 * k, &[("big", 2.0 * fitted), ("small", 0.9 - 2.0 * fitted), ("new", 0.1)]);
                w.load_rps = 60.0;
                w.requests = 1000;
                w
            })
            .collect();
        let mix = p.predict(&recent).unwrap_or_else(|e| panic!("{e}"));
        assert!((mix["big"] - 2.0 * fitted).abs() < 0.02, "{mix:?}");
        assert!((mix["new"] - 0.1).abs() < 1e-9, "{mix:?}");
    }

    #[test]
    fn bad_or_missing_history_is_an_error() {
        let p = LoadMix::default();
        assert!(matches!(p.predict(&[at_load(0, 50.0)]), Err(Error::NotFitted { .. })));
        let mut p = LoadMix::default();
        assert!(matches!(p.fit(&[]), Err(Error::EmptyHistory { .. })));
        let mut bad = at_load(0, 50.0);
        bad.graph_mix.insert("big".into(), f64::NAN);
        assert!(matches!(p.fit(&[bad]), Err(Error::BadShare { .. })));
        // One load only: no slope, the pooled shares.
        let flat: Vec<Window> = (0..5).map(|k| at_load(k, 50.0)).collect();
        p.fit(&flat).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.coefficients().values().all(|(_, b)| *b == 0.0), "{:?}", p.coefficients());
    }
}
