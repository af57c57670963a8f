//! Built-in scenarios. Every parameter is fixed here, before any comparison, and documented
//! next to its value; the run seed changes arrivals and service times, never the application.
//!
//! - [`trainticket`]: 32 services of the TrainTicket benchmark, eight request types; the
//!   ticket query's graph grows with the `distance` argument (10 to 52 calls) and drops its
//!   seat-availability calls above 90% of peak load.
//! - [`socialnetwork`]: 31 services in the shape of DeathStarBench's social network; five
//!   request types whose graphs change only with cache hits and misses.
//! - [`alibaba`]: a large synthetic application in the statistics of Alibaba's 2021 traces:
//!   30 graph types over a pool of 1,500 services, Zipf popularity, sizes heavy-tailed, larger
//!   graphs more popular at higher load, a third of them simplified at very high load.
//!
//! The SLA of each scenario follows one rule ([`Scenario::rule_sla_ms`]): three times the
//! zero-load mean critical path of the slowest graph whose time-averaged share over the first
//! hour is at least 2%, rounded up to 5 ms.

pub mod alibaba;
pub mod socialnetwork;
pub mod trainticket;

use super::app::{App, Service, ServiceTime};
use super::{Error, Pattern};
use crate::graph::Node;

/// Names accepted by [`Scenario::named`].
pub const NAMES: [&str; 3] = ["trainticket", "socialnetwork", "alibaba"];

/// An application with its default workload.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub app: App,
    /// Default load pattern (override with `--pattern`).
    pub pattern: Pattern,
    /// Default head-sampling probability of the emitted traces.
    pub sampling: f64,
    /// Root tags that carry arguments (classes of the windows' argument mix).
    pub arg_tags: Vec<String>,
    /// Default SLA, from [`Scenario::rule_sla_ms`].
    pub sla_ms: f64,
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn named(name: &str) -> Result<Self, Error> {
        match name {
            "trainticket" => trainticket::scenario(),
            "socialnetwork" => socialnetwork::scenario(),
            "alibaba" => alibaba::scenario(),
            _ => Err(Error::UnknownScenario { name: name.to_owned() }),
        }
    }

    /// Assemble a scenario and derive its SLA by the rule.
    pub fn new(app: App, pattern: Pattern, sampling: f64, arg_tags: Vec<String>) -> Result<Self, Error> {
        pattern.validate()?;
        let mut s = Scenario { app, pattern, sampling, arg_tags, sla_ms: 0.0 };
        s.sla_ms = s.rule_sla_ms();
        Ok(s)
    }

    /// 3x the zero-load critical path of the slowest graph with >= 2% time-averaged share
    /// over `[0, 3600)` s, rounded up to 5 ms.
    pub fn rule_sla_ms(&self) -> f64 {
        let mix = self.app.mean_mix(&self.pattern, 0.0, 3600.0);
        let worst = (0..self.app.graphs.len())
            .filter(|g| mix[*g] >= 0.02)
            .map(|g| self.app.zero_load_critical_path_ms(g))
            .fold(0.0, f64::max);
        (3.0 * worst / 5.0).ceil() * 5.0
    }

    /// One line per fact: services, graphs, types, pattern, SLA.
    pub fn describe(&self) -> String {
        let sizes: Vec<usize> = self.app.graphs.iter().map(Node::size).collect();
        format!(
            "{}: {} services, {} graphs ({}-{} calls), {} request types, peak {:.0} rps, SLA {} ms",
            self.app.name,
            self.app.services.len(),
            self.app.graphs.len(),
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0),
            self.app.types.len(),
            self.pattern.max_rps(),
            self.sla_ms
        )
    }
}

/// `parent` calling `children` in one parallel stage.
pub(crate) fn par(parent: &str, children: impl IntoIterator<Item = Node>) -> Node {
    Node::leaf(parent).with_parallel(children)
}

/// `parent` calling each child in its own sequential stage.
pub(crate) fn seq(parent: &str, children: impl IntoIterator<Item = Node>) -> Node {
    children.into_iter().fold(Node::leaf(parent), Node::then)
}

pub(crate) fn leaf(s: &str) -> Node {
    Node::leaf(s)
}

/// One row of a scenario's service table: name, `l0` (ms), mean service time (ms, before
/// the scenario's scale), workers per container, and the coefficient of variation (0:
/// exponential service, > 0: lognormal with that spread).
pub(crate) type ServiceRow = (&'static str, f64, f64, u32, f64);

/// Services from a table, every mean service time multiplied by `scale`.
pub(crate) fn services(rows: &[ServiceRow], scale: f64) -> Vec<Service> {
    rows.iter()
        .map(|(name, l0, mean, workers, cv)| Service {
            name: (*name).into(),
            l0_ms: *l0,
            time: if *cv > 0.0 {
                ServiceTime::LogNormal { mean_ms: mean * scale, cv: *cv }
            } else {
                ServiceTime::Exponential { mean_ms: mean * scale }
            },
            workers: *workers,
        })
        .collect()
}
