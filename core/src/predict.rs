//! Graph-mix prediction: the next window's distribution over graph ids from recent windows.
//!
//! [`Predictor`] is the contract the online loop and `derm simulate` use; [`baseline`] holds
//! the simple predictors (last value, moving average, EWMA). Every prediction is a
//! distribution: non-negative shares over graph ids that sum to 1.

pub mod baseline;

use std::collections::BTreeMap;

use crate::graph::Window;

pub use baseline::{Ewma, Last, MovingAverage};

/// Why a predictor cannot fit or predict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No windows were given (or none with any request).
    #[error("{what}: empty history (need at least one window with requests)")]
    EmptyHistory { what: &'static str },
    /// A window holds a share that is not a finite number >= 0.
    #[error("window starting at {start_s} s: graph {graph} has share {share}, expected a finite number >= 0")]
    BadShare { start_s: i64, graph: String, share: f64 },
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
}

/// The windows that carry a mix, checked: shares finite and non-negative.
pub(crate) fn usable<'a>(windows: &'a [Window], what: &'static str) -> Result<Vec<&'a Window>, Error> {
    let mut out = Vec::with_capacity(windows.len());
    for w in windows {
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

/// Scale shares to sum 1 and drop zeros.
pub(crate) fn normalise(mut mix: BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    mix.retain(|_, v| *v > 0.0);
    let total: f64 = mix.values().sum();
    if total > 0.0 {
        mix.values_mut().for_each(|v| *v /= total);
    }
    mix
}
