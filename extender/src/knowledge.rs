//! What the extender knows, as one immutable [`Knowledge`] snapshot built off the request path
//! (from the state file or the cluster watches) and swapped in whole (see [`Store`]).
//!
//! Inputs are plain records ([`App`], [`Placement`], [`NodeInfo`]); [`Knowledge::build`] indexes
//! them for the request path: workload -> service, service -> peers with call rates (both
//! directions summed), service -> replicas per node, node -> pod headroom.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// A workload that owns pods: `Deployment/cart` in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// `Deployment`, `StatefulSet` or `ReplicaSet`.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl Workload {
    /// A workload key.
    pub fn new(namespace: impl Into<String>, kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), kind: kind.into(), name: name.into() }
    }

    /// The workload that owns a pod, from its controller owner reference: a ReplicaSet named
    /// `<deployment>-<pod-template-hash>` stands for its Deployment (read from the pod's
    /// `pod-template-hash` label, no API call); any other controller stands for itself.
    pub fn of_pod<'a>(
        namespace: &str,
        template_hash: Option<&str>,
        owners: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) -> Option<Self> {
        let (kind, name, _) = owners.into_iter().find(|(_, _, controller)| *controller)?;
        if kind == "ReplicaSet"
            && let Some(hash) = template_hash
            && let Some(deployment) = name.strip_suffix(hash).and_then(|n| n.strip_suffix('-'))
            && !deployment.is_empty()
        {
            return Some(Self::new(namespace, "Deployment", deployment));
        }
        Some(Self::new(namespace, kind, name))
    }
}

/// One service of a DermApp.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Tracing name.
    pub name: String,
    /// The workload whose pods are this service's replicas.
    pub workload: Workload,
    /// Desired replicas published by Derm, if any.
    pub desired: Option<u32>,
}

/// Calls per second from one service to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// Calls per second.
    pub rate: f64,
}

/// One DermApp's status, as the extender uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Services.
    pub services: Vec<Service>,
    /// Call rates between services.
    pub calls: Vec<Call>,
    /// When the status was computed (`status.lastSolveTime`); `None`: unknown.
    pub updated: Option<SystemTime>,
}

/// Replicas of a workload bound to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The workload.
    pub workload: Workload,
    /// Node name.
    pub node: String,
    /// Number of pods.
    pub count: u32,
}

/// A node's pod capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// `status.allocatable.pods`; `None`: unknown.
    pub pods_allocatable: Option<u32>,
    /// Pods bound to it (all pods, Derm's or not).
    pub pods_used: u32,
}

/// Index of a service in [`Knowledge`].
pub type ServiceId = usize;

/// A service as the request path sees it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// `namespace/app/service`, stable across snapshots (keys the in-flight cache).
    pub key: Arc<str>,
    /// Index of its app.
    pub app: usize,
    /// Tracing name.
    pub name: String,
    /// Desired replicas, if published.
    pub desired: Option<u32>,
    /// Peers and the call rate with each, both directions summed (self-calls left out).
    pub peers: Vec<(ServiceId, f64)>,
    /// Bound replicas per node.
    pub per_node: HashMap<Arc<str>, u32>,
    /// The same by node index ([`Knowledge::node_index`]), for the request path.
    pub placed: Vec<(usize, u32)>,
    /// Bound replicas in all.
    pub total: u32,
}

/// An app as the request path sees it.
#[derive(Debug, Clone)]
pub struct AppEntry {
    /// `namespace/name`.
    pub key: String,
    /// When its status was computed.
    pub updated: Option<SystemTime>,
}

/// The indexed snapshot.
#[derive(Debug, Default)]
pub struct Knowledge {
    /// Apps.
    pub apps: Vec<AppEntry>,
    /// Services of every app.
    pub services: Vec<ServiceEntry>,
    /// Workload -> service.
    pub workloads: HashMap<Workload, ServiceId>,
    /// Node name -> capacity.
    pub nodes: HashMap<Arc<str>, NodeInfo>,
    /// Node name -> dense index, over the Nodes and every node a placement names.
    pub node_index: HashMap<Arc<str>, usize>,
    /// Capacity by node index (`None`: not a known Node).
    pub node_info: Vec<Option<NodeInfo>>,
    /// When the snapshot was built.
    pub built: Option<SystemTime>,
}

impl Knowledge {
    /// Indexes the inputs. Unknown services in calls and placements of workloads of no app are
    /// ignored; later duplicates of a workload are ignored (first app wins).
    pub fn build(apps: &[App], placements: &[Placement], nodes: &[NodeInfo], now: SystemTime) -> Self {
        let mut k = Self { built: Some(now), ..Self::default() };
        let mut names: HashMap<Arc<str>, ()> = HashMap::new();
        let mut intern = |s: &str| -> Arc<str> {
            if let Some((key, ())) = names.get_key_value(s) {
                return key.clone();
            }
            let key: Arc<str> = s.into();
            names.insert(key.clone(), ());
            key
        };
        for node in nodes {
            k.nodes.insert(intern(&node.name), node.clone());
        }
        for (a, app) in apps.iter().enumerate() {
            k.apps.push(AppEntry { key: format!("{}/{}", app.namespace, app.name), updated: app.updated });
            let mut by_name: HashMap<&str, ServiceId> = HashMap::new();
            for s in &app.services {
                if k.workloads.contains_key(&s.workload) || by_name.contains_key(s.name.as_str()) {
                    continue;
                }
                let id = k.services.len();
                k.workloads.insert(s.workload.clone(), id);
                by_name.insert(&s.name, id);
                k.services.push(ServiceEntry {
                    key: format!("{}/{}/{}", app.namespace, app.name, s.name).into(),
                    app: a,
                    name: s.name.clone(),
                    desired: s.desired,
                    peers: Vec::new(),
                    per_node: HashMap::new(),
                    placed: Vec::new(),
                    total: 0,
                });
            }
            let mut rates: BTreeMap<(ServiceId, ServiceId), f64> = BTreeMap::new();
            for c in &app.calls {
                let (Some(&i), Some(&j)) = (by_name.get(c.from.as_str()), by_name.get(c.to.as_str())) else {
                    continue;
                };
                if i == j || !c.rate.is_finite() || c.rate <= 0.0 {
                    continue;
                }
                *rates.entry((i, j)).or_default() += c.rate;
                *rates.entry((j, i)).or_default() += c.rate;
            }
            for ((i, j), rate) in rates {
                k.services[i].peers.push((j, rate));
            }
        }
        for p in placements {
            if let Some(&id) = k.workloads.get(&p.workload) {
                let s = &mut k.services[id];
                *s.per_node.entry(intern(&p.node)).or_default() += p.count;
                s.total += p.count;
            }
        }
        for (name, info) in &k.nodes {
            k.node_index.insert(name.clone(), k.node_info.len());
            k.node_info.push(Some(info.clone()));
        }
        for s in &mut k.services {
            for (name, count) in &s.per_node {
                let next = k.node_info.len();
                let i = *k.node_index.entry(name.clone()).or_insert(next);
                if i == next {
                    k.node_info.push(None);
                }
                s.placed.push((i, *count));
            }
        }
        k
    }

    /// The service whose replicas `workload` runs.
    pub fn service_of(&self, workload: &Workload) -> Option<ServiceId> {
        self.workloads.get(workload).copied()
    }

    /// Whether the app of `service` is fresh at `now` (`max_age` None: always).
    pub fn fresh(&self, service: ServiceId, now: SystemTime, max_age: Option<Duration>) -> bool {
        let Some(max_age) = max_age else { return true };
        let Some(updated) = self.apps[self.services[service].app].updated else { return false };
        now.duration_since(updated).map(|age| age <= max_age).unwrap_or(true)
    }
}

/// The owner of the current [`Knowledge`].
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwap<Knowledge>,
}

impl Store {
    /// Replaces the snapshot.
    pub fn publish(&self, k: Knowledge) {
        self.current.store(Arc::new(k));
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Knowledge> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> Service {
        Service { name: name.into(), workload: Workload::new("shop", "Deployment", name), desired: None }
    }

    #[test]
    fn build_indexes_peers_both_ways_and_placement() {
        let app = App {
            namespace: "shop".into(),
            name: "shop".into(),
            services: vec![svc("a"), svc("b"), svc("c")],
            calls: vec![
                Call { from: "a".into(), to: "b".into(), rate: 10.0 },
                Call { from: "b".into(), to: "a".into(), rate: 5.0 },
                Call { from: "b".into(), to: "b".into(), rate: 99.0 },
                Call { from: "a".into(), to: "zz".into(), rate: 1.0 },
                Call { from: "a".into(), to: "c".into(), rate: f64::NAN },
            ],
            updated: None,
        };
        let placements = [
            Placement { workload: Workload::new("shop", "Deployment", "b"), node: "n1".into(), count: 2 },
            Placement { workload: Workload::new("shop", "Deployment", "b"), node: "n2".into(), count: 1 },
            Placement { workload: Workload::new("other", "Deployment", "b"), node: "n2".into(), count: 7 },
        ];
        let k = Knowledge::build(&[app], &placements, &[], SystemTime::UNIX_EPOCH);
        let a = k.service_of(&Workload::new("shop", "Deployment", "a")).unwrap();
        let b = k.service_of(&Workload::new("shop", "Deployment", "b")).unwrap();
        assert_eq!(k.services[a].peers, [(b, 15.0)]);
        assert_eq!(k.services[b].peers, [(a, 15.0)]);
        assert_eq!(k.services[b].total, 3);
        assert_eq!(k.services[b].per_node.get("n1"), Some(&2));
        let n1 = k.node_index["n1"];
        assert!(k.services[b].placed.contains(&(n1, 2)) && k.node_info[n1].is_none(), "n1 is not a known Node");
        assert_eq!(&*k.services[b].key, "shop/shop/b");
        assert!(k.service_of(&Workload::new("other", "Deployment", "b")).is_none());
    }

    #[test]
    fn workload_of_a_pod() {
        let of = |hash, owners: &[(&'static str, &'static str, bool)]| {
            Workload::of_pod("ns", hash, owners.iter().copied()).map(|w| format!("{}/{}", w.kind, w.name))
        };
        assert_eq!(of(Some("7d9f"), &[("ReplicaSet", "cart-7d9f", true)]).as_deref(), Some("Deployment/cart"));
        assert_eq!(of(None, &[("ReplicaSet", "cart-7d9f", true)]).as_deref(), Some("ReplicaSet/cart-7d9f"));
        assert_eq!(of(Some("abc"), &[("ReplicaSet", "cart-7d9f", true)]).as_deref(), Some("ReplicaSet/cart-7d9f"));
        assert_eq!(of(None, &[("Node", "x", false), ("StatefulSet", "db", true)]).as_deref(), Some("StatefulSet/db"));
        assert_eq!(of(None, &[("ReplicaSet", "x", false)]), None);
    }

    #[test]
    fn freshness() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut app =
            App { namespace: "n".into(), name: "a".into(), services: vec![svc("s")], calls: vec![], updated: None };
        let k = Knowledge::build(std::slice::from_ref(&app), &[], &[], t0);
        assert!(k.fresh(0, t0, None));
        assert!(!k.fresh(0, t0, Some(Duration::from_secs(60))), "no timestamp is stale when an age is required");
        app.updated = Some(t0);
        let k = Knowledge::build(&[app], &[], &[], t0);
        assert!(k.fresh(0, t0 + Duration::from_secs(60), Some(Duration::from_secs(60))));
        assert!(!k.fresh(0, t0 + Duration::from_secs(61), Some(Duration::from_secs(60))));
    }
}
