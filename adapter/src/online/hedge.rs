//! The next window's graph mix: a trained model (the attention LSTM from `derm train`), hedged
//! against Holt's trend forecast ([`Trend`], the simulator's default predictor).
//!
//! A model is only as good as its last windows: traffic drifts away from what it was trained
//! on. Every interval both predictors are scored on the same recent windows (each window
//! predicted as far ahead of the ones before it as the loop plans: [`LAG`] windows for traced
//! windows, one for counted ones; see [`super::counts`];
//! [`recent_error`]: mean total variation distance), and the
//! model's mix is used only when it has been scored on at least [`MIN_SCORED`] windows and is
//! no worse than the trend there. Scoring from the kept windows, not from remembered predictions,
//! makes the choice a function of the learned state, so it survives a restart or a failover.
//! The model's "other" share (graphs it never saw) goes to the last window's unseen graphs
//! ([`resolve_other`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use derm_core::graph::Window;
use derm_core::predict::metrics::recent_error;
use derm_core::predict::{Predictor, Trend, resolve_other};

/// How far ahead of its newest traced window the loop plans: that window closed one interval
/// before the tick (slow requests' spans arrive last), and the plan is for the interval that
/// starts at the tick. Models trained with `derm train --horizon 2` predict exactly that
/// (counted windows: `--horizon 1`).
pub use derm_core::predict::trend::LAG;
/// Windows each predictor is scored on.
pub const SCORED: usize = 10;
/// The model is trusted only after this many scored windows.
pub const MIN_SCORED: usize = 3;

/// The mix chosen for the next window, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub mix: BTreeMap<String, f64>,
    /// Name of the predictor whose mix this is (`trend`, `lstm`, ...).
    pub predictor: String,
    /// Its mean TV distance over the scored windows (`None`: not scored yet).
    pub recent_tv: Option<f64>,
    /// Why the model was not used, when there is one.
    pub note: Option<String>,
}

/// Chooses between an optional model and the trend; see the module docs.
#[derive(Clone)]
pub struct Hedge {
    model: Option<Arc<dyn Predictor>>,
}

impl std::fmt::Debug for Hedge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hedge").field("model", &self.model.as_ref().map(|m| m.name().to_owned())).finish()
    }
}

impl Hedge {
    /// The trend alone, or `model` hedged against it.
    pub fn new(model: Option<Arc<dyn Predictor>>) -> Self {
        Hedge { model }
    }

    /// The mix `horizon` windows after the newest of `windows` (time order, newest last),
    /// predicting from the last `context`.
    pub fn predict(
        &self,
        windows: &[Window],
        context: usize,
        horizon: usize,
    ) -> Result<Choice, derm_core::predict::Error> {
        let trend = Trend::ahead(horizon)?;
        let recent = &windows[windows.len().saturating_sub(context)..];
        let baseline = trend.predict(recent)?;
        let trend_tv = recent_error(&trend, windows, SCORED, context, horizon);
        let fallback = |note: Option<String>| Choice {
            mix: baseline.clone(),
            predictor: trend.name().into(),
            recent_tv: trend_tv,
            note,
        };
        let Some(model) = &self.model else {
            return Ok(fallback(None));
        };
        let model = Resolving(model.as_ref());
        let name = model.name().to_owned();
        let scored = windows.len().saturating_sub(horizon).min(SCORED);
        let model_tv = recent_error(&model, windows, SCORED, context, horizon);
        let Some(model_tv) = model_tv.filter(|_| scored >= MIN_SCORED) else {
            return Ok(fallback(Some(format!("{name}: fewer than {MIN_SCORED} windows scored yet"))));
        };
        if trend_tv.is_some_and(|e| model_tv > e) {
            let e = trend_tv.unwrap_or_default();
            return Ok(fallback(Some(format!("{name}: recent TV {model_tv:.3} above trend's {e:.3}"))));
        }
        match model.predict(recent) {
            Ok(mix) => Ok(Choice { mix, predictor: name, recent_tv: Some(model_tv), note: None }),
            Err(e) => Ok(fallback(Some(format!("{name}: {e}")))),
        }
    }
}

/// A model's predictions with the "other" share resolved, so that it is scored on the mix it
/// would be planned with.
struct Resolving<'a>(&'a dyn Predictor);

impl Predictor for Resolving<'_> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn fit(&mut self, _: &[Window]) -> Result<(), derm_core::predict::Error> {
        Ok(())
    }
    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, derm_core::predict::Error> {
        let mix = self.0.predict(recent)?;
        let last = recent.last().ok_or(derm_core::predict::Error::EmptyHistory { what: "hedge" })?;
        Ok(resolve_other(mix, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use derm_core::predict::Error;

    /// Always the same mix.
    struct Fixed(BTreeMap<String, f64>);

    impl Predictor for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn fit(&mut self, _: &[Window]) -> Result<(), Error> {
            Ok(())
        }
        fn predict(&self, _: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
            Ok(self.0.clone())
        }
    }

    fn mix(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(g, s)| ((*g).to_owned(), *s)).collect()
    }

    /// Windows alternating between two mixes: the trend lags behind the swings, a model that
    /// knows the pattern (predicts the next) is exact.
    fn alternating(n: usize) -> Vec<Window> {
        (0..n)
            .map(|k| {
                let share = if k % 2 == 0 { 0.9 } else { 0.1 };
                Window {
                    start_s: 30 * k as i64,
                    duration_s: 30,
                    load_rps: 10.0,
                    requests: 300,
                    graph_mix: mix(&[("a", share), ("b", 1.0 - share)]),
                    arg_mix: BTreeMap::new(),
                    containers: BTreeMap::new(),
                    calls_rps: BTreeMap::new(),
                }
            })
            .collect()
    }

    /// Predicts the alternation's phase [`LAG`] windows after the history.
    struct Oracle;

    impl Predictor for Oracle {
        fn name(&self) -> &str {
            "oracle"
        }
        fn fit(&mut self, _: &[Window]) -> Result<(), Error> {
            Ok(())
        }
        fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
            let a = recent.last().map_or(0.5, |w| w.graph_mix["a"]);
            let a = if LAG.is_multiple_of(2) { a } else { 1.0 - a };
            Ok(mix(&[("a", a), ("b", 1.0 - a)]))
        }
    }

    #[test]
    fn without_a_model_the_trend_is_used() {
        let choice = Hedge::new(None).predict(&alternating(8), 20, LAG).expect("predicts");
        assert_eq!(choice.predictor, "trend");
        assert!(choice.recent_tv.is_some() && choice.note.is_none());
    }

    #[test]
    fn a_better_model_is_used_once_scored() {
        let hedge = Hedge::new(Some(Arc::new(Oracle)));
        let early = hedge.predict(&alternating(3), 20, LAG).expect("predicts");
        assert_eq!(early.predictor, "trend", "only 1 window scored: {early:?}");
        let choice = hedge.predict(&alternating(12), 20, LAG).expect("predicts");
        assert_eq!(choice.predictor, "oracle");
        assert!(choice.recent_tv.is_some_and(|tv| tv < 1e-12), "{choice:?}");
        // The newest window had a = 0.1 (k = 11), so the planned one (k = 13) has 0.1 too.
        assert!((choice.mix["a"] - 0.1).abs() < 1e-12);
    }

    #[test]
    fn the_model_is_scored_at_the_loops_horizon() {
        // The oracle knows the phase two windows ahead; one window ahead it is always wrong.
        let choice = Hedge::new(Some(Arc::new(Oracle))).predict(&alternating(12), 20, 1).expect("predicts");
        assert_eq!(choice.predictor, "trend", "{choice:?}");
        assert!(choice.note.as_deref().is_some_and(|n| n.contains("above trend")), "{choice:?}");
    }

    #[test]
    fn a_worse_model_is_not_used_and_other_is_resolved() {
        let bad = Hedge::new(Some(Arc::new(Fixed(mix(&[("c", 1.0)])))));
        let choice = bad.predict(&alternating(12), 20, LAG).expect("predicts");
        assert_eq!(choice.predictor, "trend");
        assert!(choice.note.as_deref().is_some_and(|n| n.contains("above trend")), "{choice:?}");

        // A model as good as the trend whose prediction has an "other" share: it goes to the
        // graphs the model did not name.
        let windows: Vec<Window> = alternating(12)
            .into_iter()
            .map(|mut w| {
                w.graph_mix = mix(&[("a", 0.5), ("b", 0.5)]);
                w
            })
            .collect();
        let other = Hedge::new(Some(Arc::new(Fixed(mix(&[("a", 0.5), (derm_core::predict::OTHER, 0.5)])))));
        let choice = other.predict(&windows, 20, LAG).expect("predicts");
        assert_eq!(choice.predictor, "fixed");
        assert_eq!(choice.mix, mix(&[("a", 0.5), ("b", 0.5)]));
    }
}
