//! A per-graph log-odds model of the constraint around an iterate, for the searches of the
//! tight multiplier.
//!
//! Each constrained graph's log-odds is linearised in the rates at the iterate, where its
//! gradient is exact: `z_g(r) = logit F_g(r0) + sum_i s_gi (r_i - r0_i)`, with
//! `s_gi = (dF_g / dr_i) / (F_g (1 - F_g))`, and the model is `M(r) = sum_g w_g sigma(z_g(r))`
//! (for [`Kind::EveryGraph`], the least `sigma(z_g)`). One linearisation of the whole
//! constraint cannot follow it: `G` mixes graphs that are each a steep sigmoid of their own
//! services' rates, so when a step moves rates from one graph's services to another's, the
//! graph that loses drops along its own sigmoid. On the 2,500-service benchmark a linearised
//! step with no deficit at all landed at `G = 0.44` against a target of 0.95. The model is
//! exact to first order at the iterate, like the linearisation, and costs one pass over the
//! graphs' calls, not an evaluation.

use super::eval::{GraphGrad, Kind};
use super::problem::Problem;
use super::root::logit;

/// One graph's term of the model.
struct Term {
    graph: usize,
    weight: f64,
    z0: f64,
    services: Vec<usize>,
    slopes: Vec<f64>,
}

/// The model around the rates it was built at.
pub(super) struct Model {
    kind: Kind,
    base: Vec<f64>,
    terms: Vec<Term>,
    /// Each service's (term, slope) pairs.
    by_service: Vec<Vec<(usize, f64)>>,
    /// The services some term reads (the only rates [`Model::value`] looks at).
    read: Vec<usize>,
}

/// `F (1 - F)` kept off zero, where `logit` clamps (`F` within 1e-15 of 0 or 1).
pub(super) fn spread(f: f64) -> f64 {
    let f = f.clamp(1e-15, 1.0 - 1e-15);
    f * (1.0 - f)
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// The model at `rates` from each constrained graph's value and partial derivatives
    /// (`None` for the graphs outside the constraint).
    pub(super) fn new(
        problem: &Problem,
        kind: Kind,
        weights: &[f64],
        rates: &[f64],
        parts: &[Option<GraphGrad>],
    ) -> Self {
        let terms = problem
            .graphs
            .iter()
            .zip(weights)
            .zip(parts)
            .enumerate()
            .filter_map(|(graph, ((g, w), part))| {
                let part = part.as_ref()?;
                let scale = 1.0 / spread(part.value);
                Some(Term {
                    graph,
                    weight: *w,
                    z0: logit(part.value),
                    services: g.compiled.services().to_vec(),
                    // F_g increases in every rate; a negative partial is the lattice's
                    // rounding, and would make the model turn down far from the iterate.
                    slopes: part.partials.iter().map(|d| d.max(0.0) * scale).collect(),
                })
            })
            .collect();
        Self::indexed(kind, rates.to_vec(), terms)
    }

    fn indexed(kind: Kind, base: Vec<f64>, terms: Vec<Term>) -> Self {
        let mut by_service = vec![Vec::new(); base.len()];
        for (k, t) in terms.iter().enumerate() {
            for (&i, s) in t.services.iter().zip(&t.slopes) {
                by_service[i].push((k, *s));
            }
        }
        let read = (0..base.len()).filter(|&i| !by_service[i].is_empty()).collect();
        Model { kind, base, terms, by_service, read }
    }

    /// The services whose rates the model reads, in increasing order.
    pub(super) fn services(&self) -> &[usize] {
        &self.read
    }

    /// Moves the model to `rates`, where the graphs' values are known (`None` for those
    /// outside the constraint): the log-odds are taken from them, the slopes are kept.
    pub(super) fn rebase(&mut self, rates: &[f64], values: &[Option<f64>]) {
        for t in &mut self.terms {
            if let Some(Some(f)) = values.get(t.graph) {
                t.z0 = logit(*f);
            }
        }
        self.base.copy_from_slice(rates);
    }

    fn logits(&self, rates: &[f64]) -> Vec<f64> {
        self.terms
            .iter()
            .map(|t| t.z0 + t.services.iter().zip(&t.slopes).map(|(&i, s)| s * (rates[i] - self.base[i])).sum::<f64>())
            .collect()
    }

    /// The model's gradient at `rates` (for [`Kind::EveryGraph`], the least graph's).
    pub(super) fn gradient(&self, rates: &[f64]) -> Vec<f64> {
        let z = self.logits(rates);
        let least = z.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map(|(k, _)| k);
        let mut grad = vec![0.0; rates.len()];
        for (k, (t, z)) in self.terms.iter().zip(&z).enumerate() {
            let scale = match self.kind {
                Kind::Weighted => t.weight,
                Kind::EveryGraph if Some(k) == least => 1.0,
                Kind::EveryGraph => continue,
            };
            let f = sigmoid(*z);
            for (&i, s) in t.services.iter().zip(&t.slopes) {
                grad[i] += scale * f * (1.0 - f) * s;
            }
        }
        grad
    }

    /// The longest prefix of `steps` (service, rate change) the model says keeps `M` at or
    /// above `target`, from the base.
    pub(super) fn longest(&self, steps: &[(usize, f64)], target: f64) -> usize {
        let mut z: Vec<f64> = self.terms.iter().map(|t| t.z0).collect();
        let value = |z: &[f64]| match self.kind {
            Kind::Weighted => self.terms.iter().zip(z).map(|(t, z)| t.weight * sigmoid(*z)).sum::<f64>(),
            Kind::EveryGraph => z.iter().map(|z| sigmoid(*z)).fold(1.0, f64::min),
        };
        for (k, (i, dr)) in steps.iter().enumerate() {
            for (term, s) in &self.by_service[*i] {
                z[*term] += s * dr;
            }
            if value(&z) < target {
                return k;
            }
        }
        steps.len()
    }

    /// `M(rates)` and its derivative along `d rates` (a direction in rate space).
    pub(super) fn value(&self, rates: &[f64], drates: &[f64]) -> (f64, f64) {
        let mut total = (0.0, 0.0);
        let mut least = (f64::INFINITY, 0.0);
        for t in &self.terms {
            let (mut z, mut dz) = (t.z0, 0.0);
            for (&i, s) in t.services.iter().zip(&t.slopes) {
                z += s * (rates[i] - self.base[i]);
                dz += s * drates[i];
            }
            let f = sigmoid(z);
            let df = f * (1.0 - f) * dz;
            match self.kind {
                Kind::Weighted => total = (total.0 + t.weight * f, total.1 + t.weight * df),
                Kind::EveryGraph if f < least.0 => least = (f, df),
                Kind::EveryGraph => {}
            }
        }
        match self.kind {
            Kind::Weighted => total,
            Kind::EveryGraph if least.0.is_finite() => least,
            Kind::EveryGraph => (1.0, 0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_that_loses_rates_drops_along_its_own_sigmoid() {
        // Two graphs of one service each, both at F = 0.95 with the same slope: moving rate
        // from one service to the other leaves the linearised sum unchanged, but the loser's
        // log-odds fall faster than the winner's rise.
        let term = |i: usize| Term { graph: i, weight: 0.5, z0: logit(0.95), services: vec![i], slopes: vec![1.0] };
        let model = Model::indexed(Kind::Weighted, vec![1.0, 1.0], vec![term(0), term(1)]);
        let (at, _) = model.value(&[1.0, 1.0], &[0.0, 0.0]);
        assert!((at - 0.95).abs() < 1e-12, "{at}");
        let (moved, slope) = model.value(&[4.0, -2.0], &[1.0, -1.0]);
        let want = 0.5 * sigmoid(logit(0.95) + 3.0) + 0.5 * sigmoid(logit(0.95) - 3.0);
        assert!((moved - want).abs() < 1e-12 && moved < 0.8, "{moved} vs {want}");
        // The derivative along the direction is the two sigmoids' slopes.
        let f = |z: f64| sigmoid(z) * (1.0 - sigmoid(z));
        let dwant = 0.5 * f(logit(0.95) + 3.0) - 0.5 * f(logit(0.95) - 3.0);
        assert!((slope - dwant).abs() < 1e-12, "{slope} vs {dwant}");
    }

    #[test]
    fn every_graph_takes_the_least() {
        let term =
            |i: usize, f: f64| Term { graph: i, weight: 1.0, z0: logit(f), services: vec![i], slopes: vec![1.0] };
        let model = Model::indexed(Kind::EveryGraph, vec![0.0, 0.0], vec![term(0, 0.9), term(1, 0.99)]);
        let (least, _) = model.value(&[0.0, 0.0], &[0.0, 0.0]);
        assert!((least - 0.9).abs() < 1e-12);
        let (least, _) = model.value(&[5.0, 0.0], &[0.0, 0.0]);
        assert!((least - 0.99).abs() < 1e-12, "the second graph binds once the first is raised: {least}");
    }
}
