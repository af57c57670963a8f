//! The Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation, per
//! Deployment, as kube-controller-manager computes it with default behaviour:
//!
//! - every 15 s (sync period), utilisation = mean over ready pods of CPU usage / request
//!   (here: busy workers / workers over the last period);
//! - `ratio = utilisation / target` (target 50%); within the 10% tolerance nothing changes;
//! - scaling up with pods still starting: those count as 0% usage, and if the recomputed
//!   ratio no longer asks for more (within tolerance) nothing changes;
//! - `desired = ceil(ratio * pods)`;
//! - scale-down stabilisation: the highest recommendation of the last 300 s wins;
//! - rate limits: up by at most max(100%, 4 pods) per 15 s; down by at most 100% per 15 s;
//! - between 1 and `max_replicas` replicas.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Name, Policy, Stats, View};

/// HPA settings (Kubernetes defaults except the target, which is the usual 50%).
#[derive(Debug, Clone)]
pub struct Config {
    pub target: f64,
    pub tolerance: f64,
    pub sync_s: f64,
    pub stabilisation_s: f64,
    pub max_replicas: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { target: 0.5, tolerance: 0.1, sync_s: 15.0, stabilisation_s: 300.0, max_replicas: 10_000 }
    }
}

#[derive(Debug)]
pub struct Hpa {
    config: Config,
    /// Per service: (time, recommendation) over the stabilisation window.
    history: Vec<VecDeque<(f64, u32)>>,
    stats: Stats,
}

impl Hpa {
    pub fn new(services: usize, config: Config) -> Self {
        Hpa { config, history: vec![VecDeque::new(); services], stats: Stats::default() }
    }

    /// One service's recommendation before stabilisation and rate limits.
    fn recommend(&self, util: Option<f64>, ready: u32, starting: u32, current: u32) -> u32 {
        let Some(u) = util else { return current };
        let c = &self.config;
        let ratio = u / c.target;
        if (ratio - 1.0).abs() <= c.tolerance {
            return current;
        }
        if ratio > 1.0 {
            let pods = ready + starting;
            let adjusted = u * f64::from(ready) / (c.target * f64::from(pods.max(1)));
            if adjusted <= 1.0 + c.tolerance {
                return current;
            }
            return (adjusted * f64::from(pods)).ceil() as u32;
        }
        (ratio * f64::from(ready)).ceil() as u32
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        Name::HpaCpu.as_str()
    }

    fn period_s(&self) -> f64 {
        self.config.sync_s
    }

    fn decide(&mut self, view: View<'_>) -> Vec<u32> {
        let t0 = Instant::now();
        let now = view.now_s;
        let current = view.replicas();
        let mut out = Vec::with_capacity(current.len());
        for (i, &cur) in current.iter().enumerate() {
            let raw = self.recommend(view.utilisation[i], view.ready[i], view.starting[i], cur);
            let raw = raw.clamp(1, self.config.max_replicas);
            let window = &mut self.history[i];
            window.push_back((now, raw));
            while window.front().is_some_and(|(t, _)| *t < now - self.config.stabilisation_s) {
                window.pop_front();
            }
            // Scale-up window is 0 s: the newest recommendation; scale-down: the highest.
            let down = window.iter().map(|(_, r)| *r).max().unwrap_or(raw);
            let mut desired = cur;
            if desired < raw {
                desired = raw;
            }
            if desired > down {
                desired = down;
            }
            let up_limit = (cur * 2).max(cur + 4);
            out.push(desired.min(up_limit).clamp(1, self.config.max_replicas));
        }
        self.stats.decided(t0);
        out
    }

    fn stats(&self) -> Stats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_and_starting_pods() {
        let h = Hpa::new(1, Config::default());
        assert_eq!(h.recommend(Some(0.54), 4, 0, 4), 4, "inside tolerance");
        assert_eq!(h.recommend(Some(1.0), 4, 0, 4), 8);
        // 4 ready at 60% plus 4 starting: 0.6*4/(0.5*8) = 0.6 < 1.1, hold.
        assert_eq!(h.recommend(Some(0.6), 4, 4, 8), 8);
        assert_eq!(h.recommend(Some(0.2), 10, 0, 10), 4);
        assert_eq!(h.recommend(None, 0, 2, 2), 2);
    }
}
