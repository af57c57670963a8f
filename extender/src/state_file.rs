//! `--state-file`: the extender's knowledge as one JSON document, so it runs without a cluster
//! (tests, benchmarks, debugging a decision). Field names follow the DermApp CRD.
//!
//! ```json
//! {
//!   "apps": [{
//!     "namespace": "shop", "name": "shop",
//!     "lastSolveTime": "2026-11-29T11:00:00Z",
//!     "services": [{"name": "frontend", "scaleTargetRef": {"kind": "Deployment", "name": "frontend"}},
//!                  {"name": "cart", "scaleTargetRef": {"name": "cart"}}],
//!     "desiredReplicas": {"cart": 3},
//!     "callAffinity": [{"from": "frontend", "to": "cart", "callsPerSecond": 120}]
//!   }],
//!   "pods": [{"namespace": "shop", "workload": {"kind": "Deployment", "name": "frontend"}, "node": "node-1", "count": 2}],
//!   "nodes": [{"name": "node-1", "allocatablePods": 110, "usedPods": 2}]
//! }
//! ```
//!
//! `lastSolveTime` is optional (absent: the app is treated as fresh, whatever `--max-age`);
//! `scaleTargetRef.kind` defaults to `Deployment`; `count` to 1; `usedPods` to the pods this
//! file places on the node; `allocatablePods` absent means unknown (full headroom).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use derm_adapter::crd::{CallAffinity, ScaleTargetRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::knowledge::{self, Knowledge, NodeInfo, Placement, Store, Workload};

/// The document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// DermApps.
    #[serde(default)]
    pub apps: Vec<App>,
    /// Pod placement.
    #[serde(default)]
    pub pods: Vec<Pods>,
    /// Nodes.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// One DermApp: its services (spec) and what its status publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.lastSolveTime`.
    #[serde(default)]
    pub last_solve_time: Option<Time>,
    /// `spec.services` (name and scale target only).
    pub services: Vec<AppService>,
    /// `status.desiredReplicas`.
    #[serde(default)]
    pub desired_replicas: BTreeMap<String, u32>,
    /// `status.callAffinity`.
    #[serde(default)]
    pub call_affinity: Vec<CallAffinity>,
}

/// A service and its workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppService {
    /// Tracing name.
    pub name: String,
    /// Its workload.
    pub scale_target_ref: ScaleTargetRef,
}

/// Pods of a workload on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pods {
    /// Namespace.
    pub namespace: String,
    /// The owning workload.
    pub workload: WorkloadRef,
    /// Node name.
    pub node: String,
    /// How many.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// `{"kind", "name"}` of a workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    /// Kind (default `Deployment`).
    #[serde(default = "deployment")]
    pub kind: String,
    /// Name.
    pub name: String,
}

fn deployment() -> String {
    "Deployment".into()
}

/// A node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Name.
    pub name: String,
    /// `status.allocatable.pods`.
    #[serde(default)]
    pub allocatable_pods: Option<u32>,
    /// Pods bound to it.
    #[serde(default)]
    pub used_pods: Option<u32>,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unreadable.
    #[error("cannot read state file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not a state document.
    #[error("state file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// A field that must not be empty is.
    #[error("state file {path}: {field} must not be empty")]
    Empty {
        /// The file.
        path: String,
        /// JSON path of the field.
        field: String,
    },
}

impl StateFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
        let doc: Self =
            serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path: shown.clone(), source })?;
        let empty = |field: String| Error::Empty { path: shown.clone(), field };
        for (a, app) in doc.apps.iter().enumerate() {
            for (field, v) in [("namespace", &app.namespace), ("name", &app.name)] {
                if v.is_empty() {
                    return Err(empty(format!("apps[{a}].{field}")));
                }
            }
            for (s, svc) in app.services.iter().enumerate() {
                if svc.name.is_empty() || svc.scale_target_ref.name.is_empty() {
                    return Err(empty(format!("apps[{a}].services[{s}].name and .scaleTargetRef.name")));
                }
            }
        }
        for (i, p) in doc.pods.iter().enumerate() {
            if p.namespace.is_empty() || p.node.is_empty() || p.workload.name.is_empty() {
                return Err(empty(format!("pods[{i}].namespace, .node and .workload.name")));
            }
        }
        Ok(doc)
    }

    /// The knowledge this document describes.
    pub fn knowledge(&self, now: SystemTime) -> Knowledge {
        let apps: Vec<knowledge::App> = self
            .apps
            .iter()
            .map(|a| knowledge::App {
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                services: a
                    .services
                    .iter()
                    .map(|s| knowledge::Service {
                        name: s.name.clone(),
                        workload: Workload::new(&a.namespace, &s.scale_target_ref.kind, &s.scale_target_ref.name),
                        desired: a.desired_replicas.get(&s.name).copied(),
                    })
                    .collect(),
                calls: a
                    .call_affinity
                    .iter()
                    .map(|c| knowledge::Call { from: c.from.clone(), to: c.to.clone(), rate: c.calls_per_second })
                    .collect(),
                updated: match &a.last_solve_time {
                    Some(t) => Some(SystemTime::from(t.0)),
                    // No timestamp in a file: treat as just computed.
                    None => Some(now),
                },
            })
            .collect();
        let placements: Vec<Placement> = self
            .pods
            .iter()
            .map(|p| Placement {
                workload: Workload::new(&p.namespace, &p.workload.kind, &p.workload.name),
                node: p.node.clone(),
                count: p.count,
            })
            .collect();
        let mut used: HashMap<&str, u32> = HashMap::new();
        for p in &self.pods {
            *used.entry(&p.node).or_default() += p.count;
        }
        let nodes: Vec<NodeInfo> = self
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                pods_allocatable: n.allocatable_pods,
                pods_used: n.used_pods.unwrap_or_else(|| used.get(n.name.as_str()).copied().unwrap_or(0)),
            })
            .collect();
        Knowledge::build(&apps, &placements, &nodes, now)
    }
}

/// Loads `path` into `store` now (failing on a bad file), then reloads it every `every` when
/// its modification time changes; a bad version is logged and the previous knowledge kept.
pub fn watch(path: PathBuf, store: Arc<Store>, every: Duration) -> Result<JoinHandle<()>, Error> {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    store.publish(StateFile::read(&path)?.knowledge(SystemTime::now()));
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match StateFile::read(&path) {
                Ok(doc) => {
                    store.publish(doc.knowledge(SystemTime::now()));
                    tracing::info!(path = %path.display(), apps = doc.apps.len(), "state file reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "state file not reloaded; keeping the previous knowledge"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{
      "apps": [{
        "namespace": "shop", "name": "shop",
        "lastSolveTime": "2026-11-29T11:00:00Z",
        "services": [{"name": "frontend", "scaleTargetRef": {"kind": "Deployment", "name": "frontend"}},
                     {"name": "cart", "scaleTargetRef": {"name": "cart"}}],
        "desiredReplicas": {"cart": 3},
        "callAffinity": [{"from": "frontend", "to": "cart", "callsPerSecond": 120}]
      }],
      "pods": [{"namespace": "shop", "workload": {"kind": "Deployment", "name": "frontend"}, "node": "node-1", "count": 2}],
      "nodes": [{"name": "node-1", "allocatablePods": 110}, {"name": "node-2", "allocatablePods": 110, "usedPods": 50}]
    }"#;

    #[test]
    fn the_documented_sample_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, SAMPLE).unwrap();
        let k = StateFile::read(&path).unwrap().knowledge(SystemTime::now());
        let cart = k.service_of(&Workload::new("shop", "Deployment", "cart")).unwrap();
        let frontend = k.service_of(&Workload::new("shop", "Deployment", "frontend")).unwrap();
        assert_eq!(k.services[cart].desired, Some(3));
        assert_eq!(k.services[cart].peers, [(frontend, 120.0)]);
        assert_eq!(k.services[frontend].per_node.get("node-1"), Some(&2));
        assert_eq!(k.nodes.get("node-1").map(|n| n.pods_used), Some(2));
        assert_eq!(k.nodes.get("node-2").map(|n| n.pods_used), Some(50));
        let updated = k.apps[0].updated.unwrap();
        assert_eq!(updated.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_795_950_000);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let err = |body: &str| {
            std::fs::write(&path, body).unwrap();
            StateFile::read(&path).unwrap_err().to_string()
        };
        assert!(err(r#"{"apps": [{"namespace": "n"}]}"#).contains("missing field `name`"));
        assert!(
            err(r#"{"pods": [{"namespace": "n", "workload": {"name": "w"}, "node": "x", "cnt": 2}]}"#)
                .contains("unknown field `cnt`")
        );
        assert!(err(r#"{"apps": [{"namespace": "", "name": "a", "services": []}]}"#).contains("apps[0].namespace"));
        assert!(StateFile::read(&dir.path().join("missing.json")).unwrap_err().to_string().contains("cannot read"));
    }
}
