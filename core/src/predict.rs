//! Graph-mix prediction: the next window's distribution over graph ids from recent windows.
//!
//! [`Predictor`] is the contract the online loop and `derm simulate` use; [`baseline`] holds
//! the simple predictors (last value, moving average, EWMA), [`arima`] an autoregressive one,
//! [`trend`] Holt's damped trend, [`loadmix`] a mix log-linear in the load,
//! `lstm` (feature `lstm`, libtorch) the attention LSTM of the paper; [`metrics`] measures
//! predictions and [`evaluate`] compares predictors on a time split. Every prediction is a
//! distribution: non-negative shares over graph ids that sum to 1. [`load`] forecasts the
//! entry load the next plan is for.

pub mod arima;
pub mod baseline;
pub mod evaluate;
pub mod load;
pub mod loadmix;
#[cfg(feature = "lstm")]
pub mod lstm;
pub mod metrics;
pub mod trend;

use std::collections::BTreeMap;

use crate::graph::Window;

pub use arima::Arima;
pub use baseline::{Ewma, Last, MovingAverage};
pub use loadmix::LoadMix;
pub use metrics::Tracker;
pub use trend::Trend;

/// Key of the "other" share in a prediction: graphs a trained model never saw (the LSTM's
/// last output slot). Users of a prediction decide what it stands for.
pub const OTHER: &str = "other";

/// Why a predictor cannot fit or predict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No windows were given (or none with any request).
    #[error("{what}: empty history (need at least one window with requests)")]
    EmptyHistory { what: &'static str },
    /// Fewer usable windows than the predictor needs.
    #[error("{what}: history too short: {got} windows with requests, need at least {need}")]
    TooShort { what: &'static str, got: usize, need: usize },
    /// `predict` before a successful `fit`.
    #[error("{what}: not fitted (call fit on a history first)")]
    NotFitted { what: &'static str },
    /// A window holds a share that is not a finite number >= 0.
    #[error("window starting at {start_s} s: graph {graph} has share {share}, expected a finite number >= 0")]
    BadShare { start_s: i64, graph: String, share: f64 },
    /// A window's load or argument share is not a finite number >= 0.
    #[error("window starting at {start_s} s: {field} is {value}, expected a finite number >= 0")]
    BadField { start_s: i64, field: String, value: f64 },
    /// A model file that cannot be read, written or used (libtorch's message in `detail`).
    #[error("model {path}: {detail}")]
    Model { path: String, detail: String },
    /// Windows whose graphs or argument classes do not match the model's catalog.
    #[error("graph catalog does not match the model: {detail}; retrain on these windows (derm train)")]
    Catalog { detail: String },
    /// A predictor parameter out of its domain.
    #[error("{field}: got {value}, expected {expected}")]
    Invalid { field: &'static str, value: String, expected: &'static str },
}

/// Predicts the next window's graph mix (graph id -> share, summing to 1).
pub trait Predictor: Send + Sync {
    /// Short stable name (`last`, `ma`, `ewma`, ...).
    fn name(&self) -> &str;
    /// Learn from a history of windows in time order.
    fn fit(&mut self, history: &[Window]) -> Result<(), Error>;
    /// The next window's mix after `recent` (time order, newest last).
    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error>;
    /// Learn from the whole history seen so far, online, keeping what `fit` chose (an online
    /// loop calls it as windows accumulate). Most predictors learn nothing here.
    fn update(&mut self, _history: &[Window]) -> Result<(), Error> {
        Ok(())
    }
    /// What `fit` chose, for reports (`None`: nothing worth saying).
    fn describe(&self) -> Option<String> {
        None
    }
}

/// The windows that carry a mix, checked: shares finite and non-negative.
pub(crate) fn usable<'a>(windows: &'a [Window], what: &'static str) -> Result<Vec<&'a Window>, Error> {
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
        if !(w.load_rps.is_finite() && w.load_rps >= 0.0) {
            return Err(Error::BadField { start_s: w.start_s, field: "load_rps".into(), value: w.load_rps });
        }
        for (class, share) in &w.arg_mix {
            if !(share.is_finite() && *share >= 0.0) {
                return Err(Error::BadField { start_s: w.start_s, field: format!("arg_mix.{class}"), value: *share });
            }
        }
        for (graph, share) in &w.graph_mix {
            if !(share.is_finite() && *share >= 0.0) {
                return Err(Error::BadShare { start_s: w.start_s, graph: graph.clone(), share: *share });
            }
        }
        if !w.graph_mix.is_empty() && w.graph_mix.values().sum::<f64>() > 0.0 {
            out.push(w);
        }
    }
    if out.is_empty() {
        return Err(Error::EmptyHistory { what });
    }
    Ok(out)
}

/// A prediction without the [`OTHER`] share, which a trained model (the LSTM) gives to
/// graphs it never saw and which has no call graph to plan for. The share goes to the
/// graphs of the last observed window that the prediction does not name, in their observed
/// proportions (the last observed mix of the unseen graphs); when there are none, it is
/// dropped and the rest renormalised. Dropping it always would plan nothing for a graph
/// that appeared after training however much traffic it takes.
pub fn resolve_other(mut mix: BTreeMap<String, f64>, last: &Window) -> BTreeMap<String, f64> {
    let Some(other) = mix.remove(OTHER) else {
        return mix;
    };
    let unseen: Vec<(&String, f64)> = last
        .graph_mix
        .iter()
        .filter(|(g, s)| **s > 0.0 && s.is_finite() && g.as_str() != OTHER && !mix.contains_key(*g))
        .map(|(g, s)| (g, *s))
        .collect();
    let total: f64 = unseen.iter().map(|(_, s)| s).sum();
    if other > 0.0 && total > 0.0 {
        for (g, s) in unseen {
            mix.insert(g.clone(), other * s / total);
        }
    }
    normalise(mix)
}

/// Scale shares to sum 1 and drop zeros.
pub(crate) fn normalise(mut mix: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    mix.retain(|_, v| *v > 0.0);
    let total: f64 = mix.values().sum();
    if total > 0.0 {
        mix.values_mut().for_each(|v| *v /= total);
    }
    mix
}

/// Test windows over two graphs, `a` and `b`.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;

    use crate::graph::Window;

    /// Window `t` (30 s each) with share `a` of graph `a`, the rest `b`.
    pub fn two_graphs(t: i64, a: f64) -> Window {
        let mut w = with_mix(30 * t, &[("a", a), ("b", 1.0 - a)]);
        w.graph_mix.retain(|_, s| *s > 0.0);
        w
    }

    /// A 30 s window from `start_s` with the given graph shares, as given.
    pub fn with_mix(start_s: i64, mix: &[(&str, f64)]) -> Window {
        Window {
            start_s,
            duration_s: 30,
            load_rps: 10.0,
            requests: 10,
            graph_mix: mix.iter().map(|(g, s)| ((*g).to_owned(), *s)).collect(),
            arg_mix: BTreeMap::new(),
            containers: BTreeMap::new(),
            calls_rps: BTreeMap::new(),
        }
    }
}
