//! Call-affinity node scores: the one formula shared by the scheduler extender (derm-extender,
//! which feeds it from its cluster snapshot) and the simulator's placement study
//! ([`crate::sim::placement`], which feeds it from the simulated deployment).
//!
//! For a pod of service i on candidate node n:
//!
//! ```text
//! affinity(n) = sum over peers j of rate(i<->j) * replicas_j(n) / replicas_j      (then / max over candidates)
//! spread(n)   = replicas_i(n) / (replicas_i + 1)
//! headroom(n) = 1 - pods_used(n) / pods_allocatable(n)                            (1 when unknown)
//! plan(n)     = 1 if the placement plan wants more replicas of i on n than it has, else 0
//! raw(n)      = w_a * affinity - w_s * spread + w_h * headroom + w_p * plan        in [-w_s, w_a + w_h + w_p]
//! score(n)    = round(10 * (raw + w_s) / (w_a + w_s + w_h + w_p))                 in 0..=10
//! ```
//!
//! The normalisation is absolute (not min-max over the candidates), so near-equal nodes get
//! near-equal scores instead of 0 and 10.

/// A node score in 0..=10 (kube-scheduler does not clamp extender scores; we do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Score(u8);

impl Score {
    /// The largest score.
    pub const MAX: Self = Self(10);
    /// The score for pods Derm has no opinion on (equal on every node, so it changes no ranking).
    pub const NEUTRAL: Self = Self(0);

    /// Maps `x` in 0..=1 onto 0..=10 (NaN and out-of-range values are clamped).
    pub fn from_unit(x: f64) -> Self {
        let x = if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        // In 0..=10 after the clamp, so the cast is exact.
        Self((x * 10.0).round() as u8)
    }

    /// The value on the wire.
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

/// Relative weights of the score terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    affinity: f64,
    spread: f64,
    headroom: f64,
    plan: f64,
}

/// Invalid weights.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--weight-{name} must be a finite number >= 0 (got {value}), and the weights must not all be 0")]
pub struct WeightError {
    /// Which weight.
    pub name: &'static str,
    /// Its value.
    pub value: f64,
}

impl Weights {
    /// Checks and builds the weights.
    pub fn new(affinity: f64, spread: f64, headroom: f64, plan: f64) -> Result<Self, WeightError> {
        for (name, value) in [("affinity", affinity), ("spread", spread), ("headroom", headroom), ("plan", plan)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(WeightError { name, value });
            }
        }
        if affinity + spread + headroom + plan <= 0.0 {
            return Err(WeightError { name: "affinity", value: affinity });
        }
        Ok(Self { affinity, spread, headroom, plan })
    }

    fn total(&self) -> f64 {
        self.affinity + self.spread + self.headroom + self.plan
    }
}

impl Default for Weights {
    fn default() -> Self {
        Self { affinity: 1.0, spread: 0.5, headroom: 0.25, plan: 0.5 }
    }
}

/// The terms of one node's score.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Terms {
    /// Normalised affinity, 0..=1.
    pub affinity: f64,
    /// Share of the service's replicas already there.
    pub spread: f64,
    /// Free pod share.
    pub headroom: f64,
    /// 1 when the plan wants more replicas there.
    pub plan: f64,
}

/// What is known of one candidate node for a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Candidate {
    /// Affinity mass: sum over peers j of rate(i<->j) * replicas_j(n) / replicas_j, calls/s.
    pub affinity: f64,
    /// Replicas of the pod's service already on the node (bound and in flight).
    pub here: u32,
    /// Free pod share, see [`headroom`].
    pub headroom: f64,
    /// The placement plan wants more replicas of the service here than it has.
    pub planned_more: bool,
}

/// Free pod share of a node: 1 when its allocatable pods are unknown, 0 when it allows none.
pub fn headroom(pods_used: u32, pods_allocatable: Option<u32>) -> f64 {
    match pods_allocatable {
        Some(a) if a > 0 => (1.0 - f64::from(pods_used) / f64::from(a)).clamp(0.0, 1.0),
        Some(_) => 0.0,
        None => 1.0,
    }
}

/// Scores `candidates` for a pod of a service with `own_total` replicas (bound and in flight).
/// `with_plan` false drops the plan term (no plan: it would be 0 everywhere and only compress
/// the range).
pub fn score(candidates: &[Candidate], own_total: u32, weights: Weights, with_plan: bool) -> (Vec<Score>, Vec<Terms>) {
    let mut w = weights;
    if !with_plan {
        w.plan = 0.0;
    }
    let max_affinity = candidates.iter().map(|c| c.affinity).fold(0.0, f64::max);
    let terms: Vec<Terms> = candidates
        .iter()
        .map(|c| Terms {
            affinity: if max_affinity > 0.0 { c.affinity / max_affinity } else { 0.0 },
            spread: f64::from(c.here) / f64::from(own_total + 1),
            headroom: c.headroom,
            plan: if c.planned_more { 1.0 } else { 0.0 },
        })
        .collect();
    let scores = terms
        .iter()
        .map(|t| {
            let raw = w.affinity * t.affinity - w.spread * t.spread + w.headroom * t.headroom + w.plan * t.plan;
            Score::from_unit((raw + w.spread) / w.total())
        })
        .collect();
    (scores, terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_is_normalised_and_spread_and_headroom_count() {
        let c = |affinity, here, headroom| Candidate { affinity, here, headroom, planned_more: false };
        let (s, t) = score(
            &[c(100.0, 0, 1.0), c(10.0, 0, 1.0), c(0.0, 0, 1.0), c(0.0, 3, 1.0), c(0.0, 0, 0.0)],
            3,
            Weights::default(),
            false,
        );
        assert!((t[0].affinity - 1.0).abs() < 1e-12 && (t[1].affinity - 0.1).abs() < 1e-12);
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        assert!(s[3] < s[2], "replicas already there lower the score: {s:?}");
        assert!(s[4] < s[2], "a full node scores lower: {s:?}");
        assert!(s.iter().all(|v| (0..=10).contains(&v.get())));
        let (with, _) =
            score(&[c(0.0, 0, 1.0), Candidate { planned_more: true, ..c(0.0, 0, 1.0) }], 1, Weights::default(), true);
        assert!(with[1] > with[0]);
    }

    #[test]
    fn headroom_edges() {
        assert_eq!(headroom(5, None), 1.0);
        assert_eq!(headroom(0, Some(0)), 0.0);
        assert_eq!(headroom(12, Some(10)), 0.0);
        assert!((headroom(1, Some(4)) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn score_clamps_and_weights_validate() {
        assert_eq!(Score::from_unit(2.0), Score::MAX);
        assert_eq!(Score::from_unit(-1.0).get(), 0);
        assert_eq!(Score::from_unit(f64::NAN).get(), 0);
        assert_eq!(Score::from_unit(0.44).get(), 4);
        assert!(Weights::new(1.0, -0.1, 0.0, 0.0).is_err());
        assert!(Weights::new(f64::INFINITY, 0.0, 0.0, 0.0).is_err());
        assert!(Weights::new(0.0, 0.0, 0.0, 0.0).is_err());
        assert!(Weights::new(1.0, 0.0, 0.0, 0.0).is_ok());
    }
}
