//! The long-run graph mix, whose plan floors every decision (as the simulator's `derm` policy:
//! `derm_core::sim::policy::derm`, "Long-run floor").
//!
//! A forecast follows the mix the traces show now; when the mix swings back (a degraded mode
//! ending, a batch of long queries over) it lags by an interval or two, and the services the
//! returning graphs call are short of replicas until it catches up. The plan for the long-run
//! mix keeps what the usual mix needs. The mean is request-weighted over every window seen and
//! forgets with a half-life of a day, so a graph a release retired fades out of it.

use std::collections::BTreeMap;

use derm_core::graph::window::Window;

/// Half-life of a window's weight in the long-run mix, s.
pub const HALF_LIFE_S: f64 = 86_400.0;

/// Request-weighted sums of each graph's share, decayed; persisted with the learned state.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct LongRun {
    pub weights: BTreeMap<String, f64>,
    pub requests: f64,
}

impl LongRun {
    /// The mean over `windows`, oldest first.
    pub fn over(windows: &[Window]) -> Self {
        let mut long_run = LongRun::default();
        for w in windows {
            long_run.add(w);
        }
        long_run
    }

    /// Ages the sums by the window's length and adds its requests.
    pub fn add(&mut self, w: &Window) {
        let decay = 0.5f64.powf(f64::from(w.duration_s) / HALF_LIFE_S);
        self.weights.values_mut().for_each(|v| *v *= decay);
        self.requests *= decay;
        let n = w.requests as f64;
        for (g, share) in &w.graph_mix {
            if share.is_finite() && *share > 0.0 {
                *self.weights.entry(g.clone()).or_insert(0.0) += n * share;
            }
        }
        self.requests += n;
    }

    /// The long-run mix, or `None` before any request.
    pub fn mix(&self) -> Option<BTreeMap<String, f64>> {
        let total: f64 = self.weights.values().sum();
        (self.requests > 0.0 && total > 0.0).then(|| self.weights.iter().map(|(g, w)| (g.clone(), w / total)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, mix: &[(&str, f64)]) -> Window {
        Window {
            start_s: 0,
            duration_s: 30,
            load_rps: requests as f64 / 30.0,
            requests,
            graph_mix: mix.iter().map(|(g, s)| (g.to_string(), *s)).collect(),
            arg_mix: BTreeMap::new(),
            containers: BTreeMap::new(),
            calls_rps: BTreeMap::new(),
        }
    }

    #[test]
    fn request_weighted_mean_that_forgets_slowly() {
        let a = window(300, &[("a", 1.0)]);
        let b = window(100, &[("a", 0.5), ("b", 0.5)]);
        let mix = LongRun::over(&[a.clone(), b.clone()]).mix().expect("requests seen");
        // (300 + 50) / 400 of `a`, give or take one window's decay (30 s of a day's half-life).
        assert!((mix["a"] - 350.0 / 400.0).abs() < 1e-3, "{mix:?}");
        assert!((mix["a"] + mix["b"] - 1.0).abs() < 1e-12);
        // A day of `b` alone halves what `a` had.
        let mut long_run = LongRun::over(&[a]);
        for _ in 0..(HALF_LIFE_S as usize / 30) {
            long_run.add(&window(0, &[]));
        }
        long_run.add(&window(300, &[("b", 1.0)]));
        let mix = long_run.mix().expect("requests seen");
        assert!((mix["a"] - 150.0 / 450.0).abs() < 1e-3, "{mix:?}");
        assert_eq!(LongRun::default().mix(), None);
        assert_eq!(LongRun::over(&[window(10, &[("a", f64::NAN)])]).mix(), None);
    }
}
