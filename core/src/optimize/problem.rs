//! Validated optimisation input: services with their demand and bounds, graphs compiled
//! against the service index, frequent vs rare graphs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Error;
use crate::graph::catalog::Entry;
use crate::latency::{Compiled, Evaluator, Params};
use crate::profile::Profiles;

/// Per-service replica limits (`--bounds FILE`: `{"svc": {"min": 1, "max": 20}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    #[serde(default = "one")]
    pub min: u32,
    #[serde(default = "unbounded")]
    pub max: u32,
}

fn one() -> u32 {
    1
}

fn unbounded() -> u32 {
    u32::MAX
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { min: 1, max: u32::MAX }
    }
}

/// What to solve.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub profiles: &'a Profiles,
    pub graphs: &'a [Entry],
    /// Entry load W, requests/s.
    pub load_rps: f64,
    pub sla_ms: f64,
    /// Target weighted share of requests within the SLA, in (0, 1).
    pub percentile: f64,
    /// Graphs with a share below this leave the constraint.
    pub rare_threshold: f64,
    pub bounds: BTreeMap<String, Bounds>,
    /// Highest utilisation `w / capacity` any container may run at (queue stability margin).
    pub max_utilization: f64,
}

/// A service as the solver sees it.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub l0_ms: f64,
    pub a: f64,
    pub b: f64,
    /// Calls per second to this service, all containers: W * sum_g share_g * calls(g).
    pub demand_rps: f64,
    pub bounds: Bounds,
    /// Called by a frequent graph (otherwise it only keeps a safe minimum).
    pub frequent: bool,
    /// Highest per-container load the profile observed (caps load-insensitive services).
    pub w_max_rps: f64,
}

impl Service {
    /// Load-sensitive: the rate falls with load, so the optimiser chooses it.
    pub fn sensitive(&self) -> bool {
        self.a < 0.0
    }

    /// Rate at `replicas` containers.
    pub fn rate_at(&self, replicas: u32) -> f64 {
        if replicas == 0 {
            return 0.0;
        }
        self.a * self.demand_rps / f64::from(replicas) + self.b
    }

    /// Containers needed for rate `rate` (continuous): W_i |a_i| / (b_i - rate).
    pub fn containers_for(&self, rate: f64) -> f64 {
        if self.demand_rps <= 0.0 {
            return 0.0;
        }
        self.demand_rps * -self.a / (self.b - rate)
    }
}

/// A graph as the solver sees it.
#[derive(Debug)]
pub struct Graph {
    pub id: String,
    /// Share among all graphs (normalised to sum 1).
    pub share: f64,
    /// Weight in the constraint: share renormalised over frequent graphs (0 when rare).
    pub weight: f64,
    pub compiled: Compiled,
}

/// The validated problem.
#[derive(Debug)]
pub struct Problem {
    pub services: Vec<Service>,
    pub graphs: Vec<Graph>,
    pub sla_ms: f64,
    pub percentile: f64,
    pub max_utilization: f64,
    pub load_rps: f64,
    /// Things the user should know (e.g. shares renormalised).
    pub warnings: Vec<String>,
}

fn check(field: &str, value: f64, ok: bool, expected: &'static str) -> Result<(), Error> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(Error::Invalid { field: field.to_owned(), value: value.to_string(), expected })
    }
}

impl Problem {
    pub fn new(input: &Input<'_>) -> Result<Self, Error> {
        check("load_rps", input.load_rps, input.load_rps > 0.0, "a number > 0")?;
        check("sla_ms", input.sla_ms, input.sla_ms > 0.0, "a number > 0")?;
        check("percentile", input.percentile, input.percentile > 0.0 && input.percentile < 1.0, "a number in (0, 1)")?;
        check(
            "rare_threshold",
            input.rare_threshold,
            (0.0..1.0).contains(&input.rare_threshold),
            "a number in [0, 1)",
        )?;
        check(
            "max_utilization",
            input.max_utilization,
            input.max_utilization > 0.0 && input.max_utilization < 1.0,
            "a number in (0, 1)",
        )?;
        if input.graphs.is_empty() {
            return Err(Error::NoGraphs);
        }
        let mut warnings = Vec::new();
        for g in input.graphs {
            check(&format!("graphs.{}.share", g.id), g.share, g.share >= 0.0, "a number >= 0")?;
        }
        let total: f64 = input.graphs.iter().map(|g| g.share).sum();
        if total <= 0.0 {
            return Err(Error::Invalid {
                field: "graphs.*.share".into(),
                value: "0".into(),
                expected: "shares with a positive sum",
            });
        }
        if (total - 1.0).abs() > 1e-6 {
            warnings.push(format!("graph shares sum to {total:.6}; normalised to 1"));
        }
        // Services in graph order of first appearance, then sorted by name for stable output.
        let mut names: Vec<&str> = Vec::new();
        for g in input.graphs {
            let mut missing = None;
            g.root.walk(&mut |n| {
                if !input.profiles.services.contains_key(&n.service) {
                    missing.get_or_insert_with(|| n.service.clone());
                }
                names.push(n.service.as_str());
            });
            if let Some(service) = missing {
                return Err(Error::UnknownService { graph: g.id.clone(), service });
            }
        }
        names.sort_unstable();
        names.dedup();
        for name in input.bounds.keys() {
            if names.binary_search(&name.as_str()).is_err() {
                return Err(Error::Invalid {
                    field: format!("bounds.{name}"),
                    value: name.clone(),
                    expected: "a service that appears in a graph",
                });
            }
        }
        let index = |s: &str| names.binary_search(&s).ok();
        let mut services = Vec::with_capacity(names.len());
        for name in &names {
            let p = &input.profiles.services[*name];
            check(&format!("profiles.{name}.l0_ms"), p.l0_ms, p.l0_ms >= 0.0, "a number >= 0")?;
            check(&format!("profiles.{name}.a"), p.a, true, "a finite number")?;
            check(&format!("profiles.{name}.b"), p.b, p.b > 0.0, "a number > 0")?;
            let bounds = input.bounds.get(*name).copied().unwrap_or_default();
            if bounds.min > bounds.max {
                return Err(Error::Invalid {
                    field: format!("bounds.{name}"),
                    value: format!("min {} > max {}", bounds.min, bounds.max),
                    expected: "min <= max",
                });
            }
            services.push(Service {
                name: (*name).to_owned(),
                l0_ms: p.l0_ms,
                a: p.a,
                b: p.b,
                demand_rps: 0.0,
                bounds,
                frequent: false,
                w_max_rps: if p.w_max_rps.is_finite() && p.w_max_rps > 0.0 { p.w_max_rps } else { 1.0 },
            });
        }
        let frequent_total: f64 =
            input.graphs.iter().map(|g| g.share / total).filter(|s| *s >= input.rare_threshold).sum();
        if frequent_total <= 0.0 {
            return Err(Error::Invalid {
                field: "rare_threshold".into(),
                value: input.rare_threshold.to_string(),
                expected: "a threshold that leaves at least one frequent graph",
            });
        }
        let mut graphs = Vec::with_capacity(input.graphs.len());
        for g in input.graphs {
            let share = g.share / total;
            let frequent = share >= input.rare_threshold;
            let compiled = Compiled::new(&g.root, index)
                .map_err(|_| Error::UnknownService { graph: g.id.clone(), service: String::new() })?;
            for (svc, calls) in g.root.calls() {
                if let Some(i) = index(svc) {
                    services[i].demand_rps += input.load_rps * share * f64::from(calls);
                    services[i].frequent |= frequent;
                }
            }
            graphs.push(Graph {
                id: g.id.clone(),
                share,
                weight: if frequent { share / frequent_total } else { 0.0 },
                compiled,
            });
        }
        Ok(Problem {
            services,
            graphs,
            sla_ms: input.sla_ms,
            percentile: input.percentile,
            max_utilization: input.max_utilization,
            load_rps: input.load_rps,
            warnings,
        })
    }

    /// Latency parameters for a vector of rates.
    /// The same problem with every lattice `factor` times coarser (at least `min_cells`
    /// cells), or `None` when no graph would change (chains are exact at any resolution).
    pub fn coarse(&self, factor: usize, min_cells: usize) -> Option<Problem> {
        let cells = |c: &Compiled| (c.grid_cells() / factor.max(1)).max(min_cells);
        let finer = |c: &Compiled| c.evaluator() == Evaluator::Grid && c.grid_cells() > cells(c);
        if !self.graphs.iter().any(|g| finer(&g.compiled)) {
            return None;
        }
        let graphs = self
            .graphs
            .iter()
            .map(|g| Graph {
                id: g.id.clone(),
                share: g.share,
                weight: g.weight,
                compiled: if finer(&g.compiled) {
                    g.compiled.clone().with_grid_cells(cells(&g.compiled))
                } else {
                    g.compiled.clone()
                },
            })
            .collect();
        Some(Problem {
            services: self.services.clone(),
            graphs,
            sla_ms: self.sla_ms,
            percentile: self.percentile,
            max_utilization: self.max_utilization,
            load_rps: self.load_rps,
            warnings: Vec::new(),
        })
    }

    /// Each graph's weight in the constraint (its share when frequent, 0 when rare).
    pub fn weights(&self) -> Vec<f64> {
        self.graphs.iter().map(|g| g.weight).collect()
    }

    pub fn params(&self, rates: &[f64]) -> Vec<Params> {
        self.services.iter().zip(rates).map(|(s, r)| Params { l0_ms: s.l0_ms, rate_per_ms: *r }).collect()
    }
}
