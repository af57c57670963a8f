//! Baseline predictors: last value, moving average, exponentially weighted moving average.
//! They learn nothing in [`Predictor::fit`] beyond checking the history; each window's mix
//! counts equally (not weighted by its request count), as in the paper's comparison.

use std::collections::BTreeMap;

use super::{Error, Predictor, normalise, usable};
use crate::graph::Window;

/// The last window's mix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Last;

/// The mean mix of the last `window` windows.
#[derive(Debug, Clone, Copy)]
pub struct MovingAverage {
    window: usize,
}

/// Exponentially weighted mean: `s = alpha * x_t + (1 - alpha) * s`, oldest window first.
#[derive(Debug, Clone, Copy)]
pub struct Ewma {
    alpha: f64,
}

impl MovingAverage {
    /// `window` >= 1 windows.
    pub fn new(window: usize) -> Result<Self, Error> {
        if window == 0 {
            return Err(Error::Invalid { field: "window", value: "0".into(), expected: "at least 1" });
        }
        Ok(MovingAverage { window })
    }

    pub fn window(&self) -> usize {
        self.window
    }
}

impl Ewma {
    /// `alpha` in (0, 1]; 1 is [`Last`].
    pub fn new(alpha: f64) -> Result<Self, Error> {
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(Error::Invalid { field: "alpha", value: alpha.to_string(), expected: "a number in (0, 1]" });
        }
        Ok(Ewma { alpha })
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Predictor for Last {
    fn name(&self) -> &str {
        "last"
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        usable(history, "last: fit").map(drop)
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let ws = usable(recent, "last: predict")?;
        Ok(normalise(ws[ws.len() - 1].graph_mix.clone()))
    }
}

impl Predictor for MovingAverage {
    fn name(&self) -> &str {
        "ma"
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        usable(history, "ma: fit").map(drop)
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let ws = usable(recent, "ma: predict")?;
        let tail = &ws[ws.len().saturating_sub(self.window)..];
        let mut mix = BTreeMap::new();
        for w in tail {
            for (g, s) in &w.graph_mix {
                *mix.entry(g.clone()).or_insert(0.0) += s / tail.len() as f64;
            }
        }
        Ok(normalise(mix))
    }
}

impl Predictor for Ewma {
    fn name(&self) -> &str {
        "ewma"
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        usable(history, "ewma: fit").map(drop)
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let ws = usable(recent, "ewma: predict")?;
        let mut mix: BTreeMap<String, f64> = ws[0].graph_mix.clone();
        for w in &ws[1..] {
            mix.values_mut().for_each(|v| *v *= 1.0 - self.alpha);
            for (g, s) in &w.graph_mix {
                *mix.entry(g.clone()).or_insert(0.0) += self.alpha * s;
            }
        }
        Ok(normalise(mix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::fixtures::with_mix as window;

    fn history() -> Vec<Window> {
        vec![window(0, &[("a", 1.0)]), window(30, &[("a", 0.5), ("b", 0.5)]), window(60, &[("b", 1.0)])]
    }

    #[test]
    fn last_takes_the_newest_window() {
        let p = Last.predict(&history()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 1);
        assert!((p["b"] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn moving_average_over_its_window() {
        let ma = MovingAverage::new(2).unwrap_or_else(|e| panic!("{e}"));
        let p = ma.predict(&history()).unwrap_or_else(|e| panic!("{e}"));
        assert!((p["a"] - 0.25).abs() < 1e-12 && (p["b"] - 0.75).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn ewma_weights_recent_windows_more() {
        let e = Ewma::new(0.5).unwrap_or_else(|e| panic!("{e}"));
        let p = e.predict(&history()).unwrap_or_else(|e| panic!("{e}"));
        // a: 1 -> 0.5*1 + 0.5*0.5 = 0.75 -> 0.375; b: 0 -> 0.25 -> 0.625.
        assert!((p["a"] - 0.375).abs() < 1e-12 && (p["b"] - 0.625).abs() < 1e-12, "{p:?}");
        assert!((p.values().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_problem() {
        let mut last = Last;
        assert!(last.fit(&[]).unwrap_err().to_string().contains("empty history"));
        assert!(Ewma::new(0.0).unwrap_err().to_string().contains("alpha"));
        assert!(MovingAverage::new(0).unwrap_err().to_string().contains("window"));
        let bad = vec![window(90, &[("a", f64::NAN)])];
        let err = Last.predict(&bad).unwrap_err().to_string();
        assert!(err.contains("90 s") && err.contains("graph a"), "{err}");
    }
}
