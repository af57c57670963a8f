//! How close a predicted mix is to the observed one: total variation distance, KL divergence,
//! accuracy (`1 - TV`), and a [`Tracker`] of the recent error that the online loop reads to
//! hedge when the predictor is off.

use std::collections::{BTreeMap, VecDeque};

/// Probability floor inside the KL logarithm, so that a graph the predictor gave no weight
/// costs a large but finite amount.
pub const KL_FLOOR: f64 = 1e-6;

/// Two windows whose mixes differ by more than this TV distance count as a mix change.
pub const CHANGED_TV: f64 = 0.1;

/// Total variation distance `0.5 * sum |p - q|` over the union of graph ids, in [0, 1].
pub fn tv(p: &BTreeMap<String, f64>, q: &BTreeMap<String, f64>) -> f64 {
    let mut sum = 0.0;
    for (g, a) in p {
        sum += (a - q.get(g).copied().unwrap_or(0.0)).abs();
    }
    for (g, b) in q {
        if !p.contains_key(g) {
            sum += b.abs();
        }
    }
    0.5 * sum
}

/// `KL(actual || predicted)` in nats, with predicted shares floored at [`KL_FLOOR`].
pub fn kl(actual: &BTreeMap<String, f64>, predicted: &BTreeMap<String, f64>) -> f64 {
    actual
        .iter()
        .filter(|(_, a)| **a > 0.0)
        .map(|(g, a)| a * (a / predicted.get(g).copied().unwrap_or(0.0).max(KL_FLOOR)).ln())
        .sum::<f64>()
        .max(0.0)
}

/// The mean TV distance of the last `capacity` predictions once their windows were observed.
#[derive(Debug, Clone)]
pub struct Tracker {
    capacity: usize,
    recent: VecDeque<f64>,
}

impl Tracker {
    /// Keeps the last `capacity` (at least 1) errors.
    pub fn new(capacity: usize) -> Self {
        Tracker { capacity: capacity.max(1), recent: VecDeque::new() }
    }

    /// Record the prediction made for a window and what was then observed.
    pub fn record(&mut self, predicted: &BTreeMap<String, f64>, observed: &BTreeMap<String, f64>) {
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(tv(predicted, observed));
    }

    /// Mean TV distance over the recorded window; `None` before the first record.
    pub fn mean_tv(&self) -> Option<f64> {
        (!self.recent.is_empty()).then(|| self.recent.iter().sum::<f64>() / self.recent.len() as f64)
    }

    /// The largest recent TV distance.
    pub fn max_tv(&self) -> Option<f64> {
        self.recent.iter().copied().reduce(f64::max)
    }
}

/// Mean TV distance of `p`'s predictions of the last `last` windows, each `ahead` windows
/// after the history it is predicted from (1: the next window; at most `context` windows of
/// history); `None` when no window has enough history.
pub fn recent_error(
    p: &dyn super::Predictor,
    windows: &[crate::graph::Window],
    last: usize,
    context: usize,
    ahead: usize,
) -> Option<f64> {
    let ahead = ahead.max(1);
    let mut tracker = Tracker::new(last);
    for t in windows.len().saturating_sub(last).max(ahead)..windows.len() {
        let end = t + 1 - ahead;
        if let Ok(predicted) = p.predict(&windows[end.saturating_sub(context)..end]) {
            tracker.record(&predicted, &windows[t].graph_mix);
        }
    }
    tracker.mean_tv()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(g, s)| ((*g).to_owned(), *s)).collect()
    }

    #[test]
    fn tv_counts_ids_missing_on_either_side() {
        let p = mix(&[("a", 0.5), ("b", 0.5)]);
        let q = mix(&[("b", 0.25), ("c", 0.75)]);
        assert!((tv(&p, &q) - 0.75).abs() < 1e-12);
        assert!((tv(&q, &p) - 0.75).abs() < 1e-12);
        assert_eq!(tv(&p, &p), 0.0);
    }

    #[test]
    fn kl_is_zero_on_equal_and_large_on_missing() {
        let p = mix(&[("a", 0.5), ("b", 0.5)]);
        assert!(kl(&p, &p).abs() < 1e-12);
        let q = mix(&[("a", 1.0)]);
        let expected = 0.5 * (0.5f64).ln() + 0.5 * (0.5 / KL_FLOOR).ln();
        assert!((kl(&p, &q) - expected).abs() < 1e-9);
    }

    #[test]
    fn tracker_keeps_the_last_errors() {
        let mut t = Tracker::new(2);
        assert_eq!(t.mean_tv(), None);
        let a = mix(&[("a", 1.0)]);
        let b = mix(&[("b", 1.0)]);
        t.record(&a, &b); // 1
        t.record(&a, &a); // 0
        t.record(&a, &mix(&[("a", 0.5), ("b", 0.5)])); // 0.5, drops the 1
        assert!((t.mean_tv().unwrap_or(f64::NAN) - 0.25).abs() < 1e-12);
        assert_eq!(t.max_tv(), Some(0.5));
    }
}
