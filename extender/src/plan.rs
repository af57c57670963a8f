//! The placement plan: periodically, off the request path, a mixed-integer program per DermApp
//! chooses how many replicas of each service should sit on each node so that as little call
//! traffic as possible crosses nodes; prioritize then favours nodes below their planned count.
//!
//! For services s with target replicas N_s (published `desiredReplicas`, else the current
//! count), candidate nodes n with pod capacity c_n, and service pairs p = (i, j) calling each
//! other at r_p calls/s (both directions):
//!
//! ```text
//! maximise   sum_p r_p sum_n y_pn  (+ a tiny bonus for keeping replicas where they are)
//! subject to sum_n x_sn = N_s                    every service gets its replicas
//!            sum_s x_sn <= c_n                   node pod capacity
//!            x_sn <= u_s                         spread: at most half of a service (>= 2 replicas) per node
//!            N_i y_pn <= x_in,  N_j y_pn <= x_jn y_pn = share of the pair co-located on n
//!            x_sn integer >= 0,  0 <= y_pn <= 1
//! ```
//!
//! Sum_n y_pn is the share of p's calls that can stay on the node when Services route with
//! `trafficDistribution: PreferSameNode`; the objective is the local traffic, so its complement
//! (cross-node traffic) is minimised.
//!
//! Solver: good_lp with **microlp**, a pure-Rust simplex + branch-and-bound. It needs no C
//! toolchain or system library (CBC, HiGHS and SCIP do), which keeps the extender a static
//! binary that builds anywhere Rust does; the programs here are small (services x candidate
//! nodes, capped by [`Config::max_integer_vars`]) and each solve runs under a time limit in a
//! blocking thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use good_lp::{
    Expression, ResolutionError, Solution, SolverModel, Variable, WithMipGap, WithTimeLimit, constraint, microlp,
    variable, variables,
};
use tokio::task::JoinHandle;

use crate::knowledge::{Knowledge, ServiceId, Store};

/// Planned replicas per service key (`namespace/app/service`) and node.
#[derive(Debug, Default)]
pub struct Plan {
    /// The counts.
    pub by_service: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    /// When it was computed.
    pub computed: Option<SystemTime>,
}

/// The owner of the current [`Plan`].
#[derive(Debug, Default)]
pub struct PlanStore {
    current: ArcSwap<Plan>,
}

impl PlanStore {
    /// Replaces the plan.
    pub fn publish(&self, plan: Plan) {
        self.current.store(Arc::new(plan));
    }

    /// The current plan.
    pub fn load(&self) -> Arc<Plan> {
        self.current.load_full()
    }
}

/// Limits of one solve.
#[derive(Debug, Clone)]
pub struct Config {
    /// Candidate nodes per app besides those already hosting it (most free pods first).
    pub extra_nodes: usize,
    /// Largest number of integer variables (services x nodes) solved; larger apps shrink the
    /// candidate set to fit.
    pub max_integer_vars: usize,
    /// Wall-clock limit of one solve.
    pub time_limit: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self { extra_nodes: 8, max_integer_vars: 2_000, time_limit: Duration::from_secs(5) }
    }
}

/// One app's solve result.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPlan {
    /// `namespace/name`.
    pub app: String,
    /// Planned replicas per service and node.
    pub counts: Vec<(ServiceId, Arc<str>, u32)>,
    /// Share of call traffic crossing nodes with the current placement (None: no traffic).
    pub cross_now: Option<f64>,
    /// The same with the plan.
    pub cross_planned: Option<f64>,
}

/// Why an app has no plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node can hold the replicas.
    #[error("{app}: no candidate nodes")]
    NoNodes {
        /// The app.
        app: String,
    },
    /// The solver failed (infeasible capacity, time limit without a solution, ...).
    #[error("{app}: {source}")]
    Solve {
        /// The app.
        app: String,
        /// The solver's error.
        source: ResolutionError,
    },
}

/// Plans every app of `k`.
pub fn plan(k: &Knowledge, cfg: &Config) -> (Plan, Vec<Result<AppPlan, Error>>) {
    let mut out = Plan { by_service: HashMap::new(), computed: Some(SystemTime::now()) };
    // Apps are planned one after another; pods an app's plan adds to a node are reserved there,
    // so later apps do not plan into the same room.
    let mut reserved: HashMap<Arc<str>, u32> = HashMap::new();
    let results: Vec<_> = (0..k.apps.len())
        .map(|a| {
            let result = plan_app(k, a, cfg, &reserved);
            for (s, node, n) in result.iter().flat_map(|r| &r.counts) {
                let added = n.saturating_sub(k.services[*s].per_node.get(node).copied().unwrap_or(0));
                *reserved.entry(node.clone()).or_default() += added;
            }
            result
        })
        .collect();
    for r in results.iter().flatten() {
        for (s, node, n) in &r.counts {
            out.by_service.entry(k.services[*s].key.clone()).or_default().insert(node.clone(), *n);
        }
    }
    (out, results)
}

/// Share of pair traffic that crosses nodes for counts `x[s][n]` (None without traffic).
fn cross_share(pairs: &[(usize, usize, f64)], x: &[Vec<f64>]) -> Option<f64> {
    let (mut total, mut local) = (0.0, 0.0);
    for &(i, j, r) in pairs {
        let (ni, nj): (f64, f64) = (x[i].iter().sum(), x[j].iter().sum());
        if ni <= 0.0 || nj <= 0.0 {
            continue;
        }
        total += r;
        local += r * x[i].iter().zip(&x[j]).map(|(a, b)| (a / ni).min(b / nj)).sum::<f64>();
    }
    (total > 0.0).then(|| 1.0 - local / total)
}

/// Plans app `a` of `k`, leaving `reserved` pods per node to other apps' plans.
pub fn plan_app(k: &Knowledge, a: usize, cfg: &Config, reserved: &HashMap<Arc<str>, u32>) -> Result<AppPlan, Error> {
    let app = k.apps[a].key.clone();
    let services: Vec<ServiceId> = (0..k.services.len())
        .filter(|&s| k.services[s].app == a && k.services[s].desired.unwrap_or(k.services[s].total) > 0)
        .collect();
    let local: HashMap<ServiceId, usize> = services.iter().enumerate().map(|(l, &s)| (s, l)).collect();
    let target: Vec<u32> = services.iter().map(|&s| k.services[s].desired.unwrap_or(k.services[s].total)).collect();
    let pairs: Vec<(usize, usize, f64)> = services
        .iter()
        .enumerate()
        .flat_map(|(li, &s)| {
            let local = &local;
            k.services[s]
                .peers
                .iter()
                .filter_map(move |&(j, r)| local.get(&j).filter(|&&lj| lj > li).map(|&lj| (li, lj, r)))
        })
        .collect();

    // Candidate nodes: those hosting the app, then the ones with most free pods.
    let hosting: BTreeSet<Arc<str>> = services.iter().flat_map(|&s| k.services[s].per_node.keys().cloned()).collect();
    let app_pods = |n: &str| services.iter().map(|&s| k.services[s].per_node.get(n).copied().unwrap_or(0)).sum::<u32>();
    let demand: u32 = target.iter().sum();
    let capacity = |n: &str| match k.nodes.get(n) {
        Some(info) => match info.pods_allocatable {
            Some(alloc) => (alloc.saturating_sub(info.pods_used) + app_pods(n))
                .saturating_sub(reserved.get(n).copied().unwrap_or(0)),
            None => demand,
        },
        None => demand,
    };
    let mut others: Vec<(u32, Arc<str>)> = k
        .nodes
        .keys()
        .filter(|n| !hosting.contains(*n))
        .map(|n| (capacity(n), n.clone()))
        .filter(|(c, _)| *c > 0)
        .collect();
    others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let room = (cfg.max_integer_vars / services.len().max(1)).max(1);
    let mut nodes: Vec<Arc<str>> = hosting.into_iter().collect();
    nodes.extend(others.into_iter().take(cfg.extra_nodes).map(|(_, n)| n));
    nodes.truncate(room);
    if nodes.is_empty() || services.is_empty() {
        return Err(Error::NoNodes { app });
    }

    let current: Vec<Vec<f64>> = services
        .iter()
        .map(|&s| nodes.iter().map(|n| f64::from(k.services[s].per_node.get(n).copied().unwrap_or(0))).collect())
        .collect();
    let mut vars = variables!();
    let x: Vec<Vec<Variable>> = target
        .iter()
        .map(|&n_s| {
            // At most half of a service per node (when it has 2+), and never below what fits.
            let spread = if n_s >= 2 { n_s.div_ceil(2) } else { n_s };
            let bound = spread.max(n_s.div_ceil(u32::try_from(nodes.len()).unwrap_or(u32::MAX)));
            nodes.iter().map(|_| vars.add(variable().integer().min(0).max(bound))).collect()
        })
        .collect();
    let y: Vec<Vec<Variable>> =
        pairs.iter().map(|_| nodes.iter().map(|_| vars.add(variable().min(0).max(1))).collect()).collect();
    let min_rate = pairs.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
    let keep_bonus = if min_rate.is_finite() { min_rate * 1e-3 } else { 1e-3 };
    let mut objective = Expression::from(0.0);
    for (p, &(_, _, r)) in pairs.iter().enumerate() {
        for v in &y[p] {
            objective.add_mul(r, *v);
        }
    }
    for (l, row) in x.iter().enumerate() {
        for (n, v) in row.iter().enumerate() {
            objective.add_mul(keep_bonus * current[l][n] / f64::from(target[l]), *v);
        }
    }
    let mut model = vars.maximise(objective).using(microlp).with_time_limit(cfg.time_limit.as_secs_f64());
    model = model
        .with_mip_gap(0.001)
        .map_err(|e| Error::Solve { app: app.clone(), source: ResolutionError::Str(e.to_string()) })?;
    for (l, row) in x.iter().enumerate() {
        let sum: Expression = row.iter().sum();
        model.add_constraint(constraint!(sum == f64::from(target[l])));
    }
    for (n, node) in nodes.iter().enumerate() {
        let sum: Expression = x.iter().map(|row| row[n]).sum();
        model.add_constraint(constraint!(sum <= f64::from(capacity(node))));
    }
    for (p, &(i, j, _)) in pairs.iter().enumerate() {
        for n in 0..nodes.len() {
            model.add_constraint(constraint!(f64::from(target[i]) * y[p][n] <= x[i][n]));
            model.add_constraint(constraint!(f64::from(target[j]) * y[p][n] <= x[j][n]));
        }
    }
    let solution = model.solve().map_err(|source| Error::Solve { app: app.clone(), source })?;
    let planned: Vec<Vec<f64>> = x.iter().map(|row| row.iter().map(|v| solution.value(*v).round()).collect()).collect();
    let mut counts = Vec::new();
    for (l, row) in planned.iter().enumerate() {
        for (n, v) in row.iter().enumerate() {
            if *v >= 1.0 {
                // Bounded by the variable's integer upper bound, so the cast is exact.
                counts.push((services[l], nodes[n].clone(), *v as u32));
            }
        }
    }
    Ok(AppPlan { app, counts, cross_now: cross_share(&pairs, &current), cross_planned: cross_share(&pairs, &planned) })
}

/// Replans every `every` (in a blocking thread), publishing into `plans`.
pub fn spawn(store: Arc<Store>, plans: Arc<PlanStore>, every: Duration, cfg: Config) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let k = store.load();
            let cfg = cfg.clone();
            let t0 = Instant::now();
            let Ok((plan, results)) = tokio::task::spawn_blocking(move || plan(&k, &cfg)).await else {
                tracing::error!("placement plan task panicked; keeping the previous plan");
                continue;
            };
            for r in &results {
                match r {
                    Ok(p) => {
                        tracing::info!(app = p.app, cross_now = ?p.cross_now, cross_planned = ?p.cross_planned, placements = p.counts.len(), "placement plan")
                    }
                    Err(e) => tracing::warn!(error = %e, "no placement plan"),
                }
            }
            tracing::debug!(took = ?t0.elapsed(), "placement plans solved");
            plans.publish(plan);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::{App, Call, NodeInfo, Placement, Service, Workload};

    fn svc(name: &str, desired: u32) -> Service {
        Service { name: name.into(), workload: Workload::new("ns", "Deployment", name), desired: Some(desired) }
    }

    #[test]
    fn chatty_pairs_are_co_located_within_capacity_and_spread() {
        // a<->b talk a lot, c<->d a little; 3 nodes of 4 pods; 2 replicas each.
        let app = App {
            namespace: "ns".into(),
            name: "app".into(),
            services: vec![svc("a", 2), svc("b", 2), svc("c", 2), svc("d", 2)],
            calls: vec![
                Call { from: "a".into(), to: "b".into(), rate: 100.0 },
                Call { from: "c".into(), to: "d".into(), rate: 1.0 },
            ],
            updated: None,
        };
        // Today: a and b on different nodes.
        let place =
            |s: &str, n: &str| Placement { workload: Workload::new("ns", "Deployment", s), node: n.into(), count: 2 };
        let nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| NodeInfo { name: (*n).into(), pods_allocatable: Some(4), pods_used: 0 })
            .collect();
        let mut placements = vec![place("a", "n1"), place("b", "n2"), place("c", "n3"), place("d", "n3")];
        let k = Knowledge::build(&[app], &placements, &nodes, SystemTime::UNIX_EPOCH);
        let p = plan_app(&k, 0, &Config::default(), &HashMap::new()).unwrap();
        assert_eq!(p.cross_now, Some(1.0 - 1.0 / 101.0));
        assert_eq!(p.cross_planned, Some(0.0), "{p:?}");
        // Spread: at most one replica of each (2-replica) service per node; capacity 4 per node.
        let mut per_node: HashMap<&str, u32> = HashMap::new();
        for (_, n, c) in &p.counts {
            assert!(*c <= 1, "{p:?}");
            *per_node.entry(n).or_default() += c;
        }
        assert!(per_node.values().all(|&c| c <= 4));
        assert_eq!(per_node.values().sum::<u32>(), 8);

        // Capacity too small for everything: the solver says so instead of planning nonsense.
        placements.clear();
        let tiny: Vec<NodeInfo> = nodes.iter().map(|n| NodeInfo { pods_allocatable: Some(1), ..n.clone() }).collect();
        let app = App {
            namespace: "ns".into(),
            name: "app".into(),
            services: vec![svc("a", 5)],
            calls: vec![],
            updated: None,
        };
        let k = Knowledge::build(&[app], &placements, &tiny, SystemTime::UNIX_EPOCH);
        assert!(matches!(plan_app(&k, 0, &Config::default(), &HashMap::new()), Err(Error::Solve { .. })));
    }

    #[test]
    fn later_apps_do_not_plan_into_room_reserved_by_earlier_ones() {
        // Three apps of 2 services x 2 replicas; 3 nodes of 4 pods: exactly full. Solved alone,
        // each app would pick the same two nodes.
        let app = |name: &str| App {
            namespace: name.into(),
            name: name.into(),
            services: ["a", "b"]
                .iter()
                .map(|s| Service {
                    name: (*s).into(),
                    workload: Workload::new(name, "Deployment", *s),
                    desired: Some(2),
                })
                .collect(),
            calls: vec![Call { from: "a".into(), to: "b".into(), rate: 10.0 }],
            updated: None,
        };
        let nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| NodeInfo { name: (*n).into(), pods_allocatable: Some(4), pods_used: 0 })
            .collect();
        let k = Knowledge::build(&[app("x"), app("y"), app("z")], &[], &nodes, SystemTime::UNIX_EPOCH);
        let (plan, results) = plan(&k, &Config::default());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let mut per_node: HashMap<&str, u32> = HashMap::new();
        for counts in plan.by_service.values() {
            for (n, c) in counts {
                *per_node.entry(n).or_default() += c;
            }
        }
        assert_eq!(per_node.values().sum::<u32>(), 12, "{per_node:?}");
        assert!(per_node.values().all(|&c| c <= 4), "{per_node:?}");
    }
}
