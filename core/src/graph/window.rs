//! Per-window statistics: load, graph mix, argument mix, containers, and per-service latency
//! samples paired with per-container load (the input of [`crate::profile`]).
//!
//! A request belongs to the window holding its root's start. Counts are corrected for
//! sampling: each sampled request stands for `1 / p` requests, with `p` from `--sampling`
//! when given, else the root's `sampler.param`, else 1. Containers per service are the
//! distinct container names seen in the window (hostname / pod name); with sparse sampling
//! a container that served few requests can be missed, which overstates per-container load.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Catalog, catalog::Graphs};
use crate::trace::{Call, Request};

/// Latency samples kept per service and window (reservoir sampling beyond this).
pub const DEFAULT_MAX_SAMPLES: usize = 2_000;

/// How a root tag becomes an argument class.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgSpec {
    pub tag: String,
    /// Ascending bucket edges for numeric values; empty means the raw value is the class.
    pub edges: Vec<f64>,
}

impl ArgSpec {
    /// Parse `NAME` or `NAME=e1,e2,...` (ascending numeric edges).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tag, edges) = match text.split_once('=') {
            None => (text, Vec::new()),
            Some((tag, list)) => {
                let edges = list
                    .split(',')
                    .map(|e| {
                        e.trim()
                            .parse::<f64>()
                            .map_err(|_| format!("--arg-tag {text}: bucket edge `{e}` is not a number"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if edges.windows(2).any(|w| w[0] >= w[1]) || edges.iter().any(|e| !e.is_finite()) {
                    return Err(format!("--arg-tag {text}: bucket edges must be finite and strictly ascending"));
                }
                (tag, edges)
            }
        };
        if tag.is_empty() {
            return Err(format!("--arg-tag {text}: empty tag name"));
        }
        Ok(ArgSpec { tag: tag.to_owned(), edges })
    }

    fn class(&self, value: Option<&str>) -> String {
        let Some(v) = value else {
            return format!("{}=none", self.tag);
        };
        if self.edges.is_empty() {
            return format!("{}={v}", self.tag);
        }
        let Ok(x) = v.trim().parse::<f64>() else {
            return format!("{}=other", self.tag);
        };
        let i = self.edges.partition_point(|e| *e <= x);
        match i {
            0 => format!("{}<{}", self.tag, self.edges[0]),
            i if i == self.edges.len() => format!("{}>={}", self.tag, self.edges[i - 1]),
            i => format!("{}=[{},{})", self.tag, self.edges[i - 1], self.edges[i]),
        }
    }
}

/// Windowing options.
#[derive(Debug, Clone)]
pub struct Config {
    pub window_s: u32,
    /// Overrides per-trace sampler tags.
    pub sampling: Option<f64>,
    pub args: Vec<ArgSpec>,
    pub max_samples: usize,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { window_s: 60, sampling: None, args: Vec::new(), max_samples: DEFAULT_MAX_SAMPLES, seed: 1 }
    }
}

/// One window as written to `windows.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Window start, seconds since the Unix epoch (or the trace set's origin).
    pub start_s: i64,
    pub duration_s: u32,
    /// Requests per second at the entry, corrected for sampling.
    pub load_rps: f64,
    /// Sampled requests seen.
    pub requests: u64,
    /// Graph id -> share of requests.
    pub graph_mix: BTreeMap<String, f64>,
    /// Argument class -> share of requests.
    pub arg_mix: BTreeMap<String, f64>,
    /// Service -> distinct containers seen (0 when traces name none).
    pub containers: BTreeMap<String, u32>,
    /// Service -> calls per second (all containers), corrected for sampling.
    pub calls_rps: BTreeMap<String, f64>,
}

impl Window {
    /// Per-container load of a service in this window (containers unknown count as one).
    pub fn per_container_rps(&self, service: &str) -> Option<f64> {
        let calls = *self.calls_rps.get(service)?;
        let n = self.containers.get(service).copied().unwrap_or(0).max(1);
        Some(calls / f64::from(n))
    }
}

/// Exclusive latencies of one service in one window, with that window's per-container load.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub per_container_rps: f64,
    /// Exclusive latencies (ms), a uniform sample of at most `max_samples`.
    pub latencies_ms: Vec<f64>,
    /// True when the traces named no container for the service (load assumes one).
    pub containers_unknown: bool,
}

/// Everything the pipeline learns from traces.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub windows: Vec<Window>,
    pub graphs: Graphs,
    /// Service -> samples per window, in window order.
    pub samples: BTreeMap<String, Vec<Samples>>,
}

#[derive(Debug, Default)]
struct Reservoir {
    seen: u64,
    kept: Vec<f64>,
}

#[derive(Debug, Default)]
struct ServiceAcc {
    calls: f64,
    containers: BTreeSet<String>,
    latencies: Reservoir,
}

#[derive(Debug, Default)]
struct Acc {
    weight: f64,
    requests: u64,
    graphs: BTreeMap<String, f64>,
    args: BTreeMap<String, f64>,
    services: HashMap<String, ServiceAcc>,
}

/// Streams requests into windows.
#[derive(Debug)]
pub struct Builder {
    config: Config,
    catalog: Catalog,
    windows: BTreeMap<i64, Acc>,
    rng: ChaCha8Rng,
}

impl Builder {
    pub fn new(config: Config) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Builder { config, catalog: Catalog::default(), windows: BTreeMap::new(), rng }
    }

    /// Add one request.
    pub fn add(&mut self, req: &Request) {
        let p = self.config.sampling.or(req.sampling).filter(|p| *p > 0.0 && *p <= 1.0).unwrap_or(1.0);
        let weight = 1.0 / p;
        let start_s = req.root.start_us.div_euclid(1_000_000);
        let index = start_s.div_euclid(i64::from(self.config.window_s.max(1)));
        let id = self.catalog.record(&req.root, weight).to_owned();
        let acc = self.windows.entry(index).or_default();
        acc.weight += weight;
        acc.requests += 1;
        *acc.graphs.entry(id).or_insert(0.0) += weight;
        if !self.config.args.is_empty() {
            let class = self
                .config
                .args
                .iter()
                .map(|spec| spec.class(req.tags.iter().find(|(k, _)| *k == spec.tag).map(|(_, v)| v.as_str())))
                .collect::<Vec<_>>()
                .join("&");
            *acc.args.entry(class).or_insert(0.0) += weight;
        }
        let max = self.config.max_samples;
        let mut stack: Vec<&Call> = vec![&req.root];
        while let Some(call) = stack.pop() {
            let svc = match acc.services.get_mut(call.service.as_str()) {
                Some(s) => s,
                None => acc.services.entry(call.service.clone()).or_default(),
            };
            svc.calls += weight;
            if let Some(c) = &call.container
                && !svc.containers.contains(c)
            {
                svc.containers.insert(c.clone());
            }
            let r = &mut svc.latencies;
            r.seen += 1;
            let ms = call.exclusive_us as f64 / 1000.0;
            if r.kept.len() < max {
                r.kept.push(ms);
            } else {
                let j = self.rng.random_range(0..r.seen);
                if (j as usize) < max {
                    r.kept[j as usize] = ms;
                }
            }
            stack.extend(call.stages.iter().flatten());
        }
    }

    /// Close all windows.
    pub fn finish(self) -> Windows {
        let window_s = self.config.window_s.max(1);
        let secs = f64::from(window_s);
        let mut out = Windows { graphs: self.catalog.graphs(), ..Windows::default() };
        for (index, acc) in self.windows {
            let share = |m: BTreeMap<String, f64>| m.into_iter().map(|(k, v)| (k, v / acc.weight)).collect();
            let mut containers = BTreeMap::new();
            let mut calls_rps = BTreeMap::new();
            let mut services: Vec<_> = acc.services.into_iter().collect();
            services.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, s) in services {
                let n = s.containers.len() as u32;
                let rps = s.calls / secs;
                containers.insert(name.clone(), n);
                calls_rps.insert(name.clone(), rps);
                out.samples.entry(name).or_default().push(Samples {
                    per_container_rps: rps / f64::from(n.max(1)),
                    latencies_ms: s.latencies.kept,
                    containers_unknown: n == 0,
                });
            }
            out.windows.push(Window {
                start_s: index * i64::from(window_s),
                duration_s: window_s,
                load_rps: acc.weight / secs,
                requests: acc.requests,
                graph_mix: share(acc.graphs),
                arg_mix: share(acc.args),
                containers,
                calls_rps,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_classes() {
        let spec = ArgSpec::parse("distance=2,5").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.class(Some("1")), "distance<2");
        assert_eq!(spec.class(Some("2")), "distance=[2,5)");
        assert_eq!(spec.class(Some("9")), "distance>=5");
        assert_eq!(spec.class(Some("x")), "distance=other");
        assert_eq!(spec.class(None), "distance=none");
        assert!(ArgSpec::parse("d=3,1").is_err());
        assert!(ArgSpec::parse("d=a").unwrap_err().contains("`a`"));
    }

    fn req(start_us: i64, services: &[&str], sampling: Option<f64>) -> Request {
        let mut stages = Vec::new();
        for s in &services[1..] {
            stages.push(vec![Call {
                service: (*s).into(),
                start_us,
                duration_us: 1000,
                exclusive_us: 1000,
                container: Some(format!("{s}-1")),
                stages: vec![],
            }]);
        }
        Request {
            trace_id: "t".into(),
            root: Call {
                service: services[0].into(),
                start_us,
                duration_us: 5000,
                exclusive_us: 2000,
                container: Some("root-1".into()),
                stages,
            },
            sampling,
            tags: vec![],
        }
    }

    #[test]
    fn sampling_corrects_load_and_windows_split() {
        let mut b = Builder::new(Config { window_s: 10, ..Config::default() });
        for i in 0..20 {
            b.add(&req(i * 1_000_000, &["a", "b"], Some(0.5)));
        }
        let w = b.finish();
        assert_eq!(w.windows.len(), 2);
        // 10 sampled requests per 10 s window at p = 0.5: 2 rps.
        assert!((w.windows[0].load_rps - 2.0).abs() < 1e-12);
        assert!((w.windows[0].calls_rps["b"] - 2.0).abs() < 1e-12);
        assert_eq!(w.windows[1].start_s, 10);
        assert_eq!(w.samples["b"].len(), 2);
        assert!((w.samples["a"][0].latencies_ms[0] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn reservoir_is_bounded() {
        let mut b = Builder::new(Config { max_samples: 5, ..Config::default() });
        for i in 0..50 {
            b.add(&req(i, &["a"], None));
        }
        let w = b.finish();
        assert_eq!(w.samples["a"][0].latencies_ms.len(), 5);
        assert_eq!(w.windows[0].requests, 50);
    }
}
