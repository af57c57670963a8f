//! Cluster mode: reflectors (kube-runtime watches with in-memory stores) of DermApps, Pods and
//! Nodes, and a task that rebuilds the [`Knowledge`] snapshot from them when something changed,
//! at most once per rebuild interval. Requests never touch the API: they read the snapshot.
//!
//! A pod seen bound leaves the [in-flight cache](crate::inflight). DermApps without
//! `status.lastSolveTime` (or older than `--max-age`) are stale: their pods get neutral scores.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use derm_adapter::crd::DermApp;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::inflight::InFlight;
use crate::knowledge::{self, Knowledge, NodeInfo, Placement, Store, Workload};
use crate::metrics::Health;

/// The three caches.
#[derive(Clone)]
pub struct Watches {
    apps: Cache<DermApp>,
    pods: Cache<Pod>,
    nodes: Cache<Node>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").finish_non_exhaustive()
    }
}

impl Watches {
    /// Starts the watches and the rebuild task, publishing into `store`; `health` turns ready
    /// once the first snapshot (of fully listed caches) is published.
    pub fn start(
        client: Client,
        store: Arc<Store>,
        inflight: Arc<InFlight>,
        health: Arc<Health>,
        every: Duration,
    ) -> Self {
        let dirty = Arc::new(Notify::new());
        let (apps, apps_writer) = reflector::store::<DermApp>();
        let (pods, pods_writer) = reflector::store::<Pod>();
        let (nodes, nodes_writer) = reflector::store::<Node>();
        let cfg = watcher::Config::default;

        let d = dirty.clone();
        let stream = reflector::reflector(apps_writer, watcher(Api::<DermApp>::all(client.clone()), cfg()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(drive(stream, move |_| d.notify_one()).instrument(tracing::info_span!("watch", kind = "DermApp")));

        let d = dirty.clone();
        let stream = reflector::reflector(
            pods_writer,
            watcher(Api::<Pod>::all(client.clone()), cfg()).modify(|p| p.managed_fields_mut().clear()),
        )
        .default_backoff()
        .touched_objects();
        tokio::spawn(
            drive(stream, move |pod: &Pod| {
                if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                    && let Some(uid) = pod.metadata.uid.as_deref()
                {
                    inflight.forget(uid);
                }
                d.notify_one();
            })
            .instrument(tracing::info_span!("watch", kind = "Pod")),
        );

        let d = dirty.clone();
        let stream = reflector::reflector(
            nodes_writer,
            watcher(Api::<Node>::all(client), cfg()).modify(|n| n.managed_fields_mut().clear()),
        )
        .default_backoff()
        .touched_objects();
        tokio::spawn(drive(stream, move |_| d.notify_one()).instrument(tracing::info_span!("watch", kind = "Node")));

        let this = Self { apps, pods, nodes };
        let watches = this.clone();
        tokio::spawn(
            async move {
                watches.synced().await;
                loop {
                    let t0 = std::time::Instant::now();
                    let k = watches.knowledge(SystemTime::now());
                    tracing::debug!(services = k.services.len(), nodes = k.nodes.len(), took = ?t0.elapsed(), "knowledge rebuilt");
                    store.publish(k);
                    health.loaded();
                    dirty.notified().await;
                    tokio::time::sleep(every).await;
                }
            }
            .instrument(tracing::info_span!("rebuild")),
        );
        this
    }

    /// Resolves once every cache has its first full list.
    pub async fn synced(&self) {
        // An error means the writer is gone (its task ended); nothing more will come either way.
        let _ = self.apps.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// The snapshot of the caches' current contents.
    pub fn knowledge(&self, now: SystemTime) -> Knowledge {
        let apps: Vec<knowledge::App> = self.apps.state().iter().map(|a| app(a)).collect();
        let pods = self.pods.state();
        let (placements, used) = placements(pods.iter().map(|p| &**p));
        let nodes: Vec<NodeInfo> = self
            .nodes
            .state()
            .iter()
            .map(|n| {
                let name = n.name_any();
                let pods_allocatable = n
                    .status
                    .as_ref()
                    .and_then(|s| s.allocatable.as_ref())
                    .and_then(|a| a.get("pods"))
                    .and_then(|q| q.0.parse().ok());
                NodeInfo { pods_used: used.get(name.as_str()).copied().unwrap_or(0), name, pods_allocatable }
            })
            .collect();
        Knowledge::build(&apps, &placements, &nodes, now)
    }
}

async fn drive<K, S>(stream: S, mut on_event: impl FnMut(&K))
where
    S: futures::Stream<Item = Result<K, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(obj) => on_event(&obj),
            // The backoff retries; the cache keeps its last state meanwhile.
            Err(e) => tracing::warn!(error = %e, "watch error; retrying"),
        }
    }
}

/// A DermApp as knowledge input.
pub fn app(a: &DermApp) -> knowledge::App {
    let namespace = a.namespace().unwrap_or_default();
    let status = a.status.as_ref();
    knowledge::App {
        services: a
            .spec
            .services
            .iter()
            .map(|s| knowledge::Service {
                name: s.name.clone(),
                workload: Workload::new(&namespace, &s.scale_target_ref.kind, &s.scale_target_ref.name),
                desired: status.and_then(|st| st.desired_replicas.get(&s.name).copied()),
            })
            .collect(),
        calls: status
            .map(|st| {
                st.call_affinity
                    .iter()
                    .map(|c| knowledge::Call { from: c.from.clone(), to: c.to.clone(), rate: c.calls_per_second })
                    .collect()
            })
            .unwrap_or_default(),
        updated: status.and_then(|st| st.last_solve_time.as_ref()).map(|t| SystemTime::from(t.0)),
        name: a.name_any(),
        namespace,
    }
}

/// Bound, live pods grouped by workload and node, and the number of pods per node.
pub fn placements<'a>(pods: impl Iterator<Item = &'a Pod>) -> (Vec<Placement>, HashMap<String, u32>) {
    let mut groups: HashMap<(Workload, String), u32> = HashMap::new();
    let mut used: HashMap<String, u32> = HashMap::new();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { continue };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        *used.entry(node.clone()).or_default() += 1;
        let m = &pod.metadata;
        let owners =
            m.owner_references.iter().flatten().map(|o| (o.kind.as_str(), o.name.as_str(), o.controller == Some(true)));
        let hash = m.labels.as_ref().and_then(|l| l.get("pod-template-hash")).map(String::as_str);
        if let Some(w) = Workload::of_pod(m.namespace.as_deref().unwrap_or_default(), hash, owners) {
            *groups.entry((w, node)).or_default() += 1;
        }
    }
    let placements = groups.into_iter().map(|((workload, node), count)| Placement { workload, node, count }).collect();
    (placements, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": name,
                "labels": {"pod-template-hash": "h1"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-h1", "uid": "r", "controller": true}]},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn placements_count_bound_live_pods() {
        let pods = [
            pod("a", Some("n1"), "Pending"),
            pod("b", Some("n1"), "Running"),
            pod("c", None, "Pending"),
            pod("d", Some("n2"), "Succeeded"),
        ];
        let (placements, used) = placements(pods.iter());
        assert_eq!(
            placements,
            [Placement { workload: Workload::new("shop", "Deployment", "cart"), node: "n1".into(), count: 2 }]
        );
        assert_eq!(used.get("n1"), Some(&2));
        assert_eq!(used.get("n2"), None);
    }

    #[test]
    fn dermapp_status_maps_onto_knowledge() {
        let a: DermApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "derm.dev/v1alpha1", "kind": "DermApp",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"sla": {"latencyMs": 350, "percentile": 95}, "entryService": "cart",
                "traceSource": {"otlp": {}},
                "services": [{"name": "cart", "scaleTargetRef": {"name": "cart"}, "maxReplicas": 5}]},
            "status": {"desiredReplicas": {"cart": 3}, "lastSolveTime": "2026-11-29T11:00:00Z",
                "callAffinity": [{"from": "ui", "to": "cart", "callsPerSecond": 4.5}]}
        }))
        .unwrap();
        let k = app(&a);
        assert_eq!(k.services[0].workload, Workload::new("shop", "Deployment", "cart"));
        assert_eq!(k.services[0].desired, Some(3));
        assert_eq!(k.calls[0].rate, 4.5);
        assert!(k.updated.is_some());
    }
}
