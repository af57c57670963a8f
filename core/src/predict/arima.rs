//! An autoregressive baseline, ARIMA(p, 0, 0): per graph id, the next share is an intercept plus
//! a linear combination of its last `p` shares, fitted by least squares on the history (with a
//! small ridge term so that a constant series still solves). Graphs first seen after the fit
//! keep their last share. Negative predictions are clipped and the mix renormalised.

use std::collections::BTreeMap;

use super::{Error, Predictor, normalise, usable};
use crate::graph::Window;

/// Ridge added to the normal equations' diagonal.
const RIDGE: f64 = 1e-6;

/// AR(p) per graph id.
#[derive(Debug, Clone)]
pub struct Arima {
    order: usize,
    /// Graph id -> `[intercept, phi_1 (lag 1), ..., phi_p]`.
    coefficients: BTreeMap<String, Vec<f64>>,
}

impl Arima {
    /// `order` (p) in 1..=24.
    pub fn new(order: usize) -> Result<Self, Error> {
        if !(1..=24).contains(&order) {
            return Err(Error::Invalid { field: "order", value: order.to_string(), expected: "1 to 24" });
        }
        Ok(Arima { order, coefficients: BTreeMap::new() })
    }

    pub fn order(&self) -> usize {
        self.order
    }
}

impl Predictor for Arima {
    fn name(&self) -> &str {
        "arima"
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        let ws = usable(history, "arima: fit")?;
        if ws.len() <= self.order + 1 {
            return Err(Error::TooShort { what: "arima: fit", got: ws.len(), need: self.order + 2 });
        }
        let mut ids: Vec<&String> = ws.iter().flat_map(|w| w.graph_mix.keys()).collect();
        ids.sort();
        ids.dedup();
        let p = self.order;
        self.coefficients.clear();
        for id in ids {
            let series: Vec<f64> = ws.iter().map(|w| w.graph_mix.get(id).copied().unwrap_or(0.0)).collect();
            // Normal equations X'X b = X'y with rows [1, y_{t-1}, ..., y_{t-p}].
            let n = p + 1;
            let mut xtx = vec![vec![0.0; n]; n];
            let mut xty = vec![0.0; n];
            for t in p..series.len() {
                let row: Vec<f64> = std::iter::once(1.0).chain((1..=p).map(|k| series[t - k])).collect();
                for ((ri, xty_i), xtx_i) in row.iter().zip(xty.iter_mut()).zip(xtx.iter_mut()) {
                    *xty_i += ri * series[t];
                    for (rj, x) in row.iter().zip(xtx_i.iter_mut()) {
                        *x += ri * rj;
                    }
                }
            }
            for (i, r) in xtx.iter_mut().enumerate() {
                r[i] += RIDGE;
            }
            self.coefficients.insert(id.clone(), solve(xtx, xty));
        }
        Ok(())
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        if self.coefficients.is_empty() {
            return Err(Error::NotFitted { what: "arima: predict" });
        }
        let ws = usable(recent, "arima: predict")?;
        if ws.len() < self.order {
            return Err(Error::TooShort { what: "arima: predict", got: ws.len(), need: self.order });
        }
        let last = ws[ws.len() - 1];
        let mut mix = BTreeMap::new();
        for (id, b) in &self.coefficients {
            let lagged = (1..=self.order).map(|k| ws[ws.len() - k].graph_mix.get(id).copied().unwrap_or(0.0));
            let y = b[0] + b[1..].iter().zip(lagged).map(|(phi, x)| phi * x).sum::<f64>();
            if y.is_finite() && y > 0.0 {
                mix.insert(id.clone(), y);
            }
        }
        for (id, share) in &last.graph_mix {
            if !self.coefficients.contains_key(id) {
                mix.insert(id.clone(), *share);
            }
        }
        if mix.values().sum::<f64>() <= 0.0 {
            // Every share clipped: fall back to the last window rather than an empty mix.
            return Ok(normalise(last.graph_mix.clone()));
        }
        Ok(normalise(mix))
    }
}

/// Gaussian elimination with partial pivoting; a singular pivot (impossible with the ridge)
/// leaves that coefficient at 0.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        if a[col][col].abs() < 1e-300 {
            continue;
        }
        for row in col + 1..n {
            let (head, tail) = a.split_at_mut(row);
            let (pivot, target) = (&head[col], &mut tail[0]);
            let f = target[col] / pivot[col];
            for (t, p) in target[col..].iter_mut().zip(&pivot[col..]) {
                *t -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        if a[row][row].abs() < 1e-300 {
            continue;
        }
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::fixtures::with_mix as window;

    #[test]
    fn solves_a_small_system() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]);
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn learns_an_alternating_mix_that_last_value_gets_wrong() {
        // a: 0.8, 0.2, 0.8, ... (AR(1) with phi = -1, intercept 1): the next share is 1 - last.
        let history: Vec<Window> = (0..40)
            .map(|t| {
                let a = if t % 2 == 0 { 0.8 } else { 0.2 };
                window(30 * t, &[("a", a), ("b", 1.0 - a)])
            })
            .collect();
        let mut ar = Arima::new(1).unwrap_or_else(|e| panic!("{e}"));
        ar.fit(&history).unwrap_or_else(|e| panic!("{e}"));
        // Last window has a = 0.2 (t = 39), so the next is 0.8.
        let p = ar.predict(&history).unwrap_or_else(|e| panic!("{e}"));
        assert!((p["a"] - 0.8).abs() < 1e-3 && (p["b"] - 0.2).abs() < 1e-3, "{p:?}");
        assert!((p.values().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn new_graphs_keep_their_last_share_and_constant_series_stay() {
        let history: Vec<Window> = (0..10).map(|t| window(30 * t, &[("a", 1.0)])).collect();
        let mut ar = Arima::new(2).unwrap_or_else(|e| panic!("{e}"));
        ar.fit(&history).unwrap_or_else(|e| panic!("{e}"));
        let mut recent = history.clone();
        recent.push(window(300, &[("a", 0.5), ("new", 0.5)]));
        let p = ar.predict(&recent).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.contains_key("new") && p["a"] > 0.0, "{p:?}");
        assert!((p.values().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Arima::new(0).unwrap_err().to_string().contains("order"));
        let mut ar = Arima::new(3).unwrap_or_else(|e| panic!("{e}"));
        let short: Vec<Window> = (0..4).map(|t| window(30 * t, &[("a", 1.0)])).collect();
        assert!(ar.fit(&short).unwrap_err().to_string().contains("too short"));
        assert!(ar.predict(&short).unwrap_err().to_string().contains("not fitted"));
        assert!(ar.fit(&[]).unwrap_err().to_string().contains("empty history"));
        let nan = vec![window(0, &[("a", f64::NAN)])];
        assert!(ar.fit(&nan).unwrap_err().to_string().contains("graph a"));
    }
}
