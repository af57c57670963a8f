//! DermApp status -> published values.
//!
//! Every adapter replica serves what the DermApps' status says (the leader writes it), so a
//! restarted or failed-over replica serves the same numbers as soon as its watch has listed
//! the DermApps. A value's timestamp is the status's `lastSolveTime`, not the time this
//! replica saw it: when the leader stops solving (trace source down, leader lost), values age
//! and pass through stale to expired on every replica alike, and the HPA keeps its count.

use std::time::{Duration, SystemTime};

use crate::crd::DermApp;
use crate::metrics::{Key, Snapshot, Staleness, Value};

/// The values one DermApp publishes: one per service in `status.desiredReplicas`.
///
/// Nothing without a `lastSolveTime` (the time is what makes a value judgeable), and nothing
/// for services the spec no longer lists (their HPA should not follow a removed entry).
pub fn values(app: &DermApp) -> Vec<(Key, Value)> {
    let (Some(namespace), Some(name)) = (app.metadata.namespace.as_deref(), app.metadata.name.as_deref()) else {
        return Vec::new();
    };
    let Some(status) = &app.status else { return Vec::new() };
    let Some(solved) = &status.last_solve_time else { return Vec::new() };
    let timestamp = to_system_time(solved.0);
    let staleness = Staleness {
        hold: Duration::from_secs(u64::from(app.spec.staleness.hold_seconds)),
        error_after: Duration::from_secs(u64::from(app.spec.staleness.error_after_seconds)),
    };
    status
        .desired_replicas
        .iter()
        .filter_map(|(service, &replicas)| {
            let spec = app.spec.services.iter().find(|s| &s.name == service)?;
            let value = Value { replicas, timestamp, staleness, scale_target: Some(spec.scale_target_ref.clone()) };
            Some((Key::new(namespace, name, service.as_str()), value))
        })
        .collect()
}

/// The snapshot of every listed DermApp.
pub fn snapshot<'a>(apps: impl IntoIterator<Item = &'a DermApp>) -> Snapshot {
    Snapshot::new(apps.into_iter().flat_map(values))
}

fn to_system_time(t: k8s_openapi::jiff::Timestamp) -> SystemTime {
    SystemTime::from(t)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::{DermAppSpec, DermAppStatus};
    use crate::metrics::Freshness;

    fn app(desired: &[(&str, u32)], solved_secs_ago: Option<u64>) -> DermApp {
        let spec: DermAppSpec = serde_json::from_value(serde_json::json!({
            "sla": {"latencyMs": 200.0, "percentile": 95.0},
            "entryService": "gateway",
            "traceSource": {"otlp": {}},
            "services": [
                {"name": "gateway", "scaleTargetRef": {"kind": "Deployment", "name": "gw"}, "minReplicas": 1, "maxReplicas": 10},
                {"name": "orders", "scaleTargetRef": {"kind": "Deployment", "name": "orders"}, "minReplicas": 1, "maxReplicas": 10}
            ],
            "staleness": {"holdSeconds": 60, "errorAfterSeconds": 300}
        }))
        .unwrap();
        let mut a = DermApp::new("shop", spec);
        a.metadata.namespace = Some("prod".into());
        a.status = Some(DermAppStatus {
            desired_replicas: desired.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            last_solve_time: solved_secs_ago.map(|s| {
                Time(k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(s as i64))
            }),
            ..DermAppStatus::default()
        });
        a
    }

    #[test]
    fn publishes_desired_replicas_with_targets_and_limits() {
        let snap = snapshot([&app(&[("gateway", 4), ("orders", 7)], Some(0))]);
        let got: Vec<_> = snap.iter().map(|(k, v)| (k.clone(), v.replicas)).collect();
        assert_eq!(got, vec![(Key::new("prod", "shop", "gateway"), 4), (Key::new("prod", "shop", "orders"), 7)]);
        let (_, v) = snap.iter().next().unwrap();
        assert_eq!(v.scale_target.as_ref().unwrap().name, "gw");
        assert_eq!(v.staleness.hold, Duration::from_secs(60));
        assert_eq!(v.freshness(SystemTime::now()), Freshness::Fresh);
    }

    #[test]
    fn age_comes_from_the_solve_time() {
        let snap = snapshot([&app(&[("orders", 7)], Some(120))]);
        let (_, v) = snap.iter().next().unwrap();
        assert_eq!(v.freshness(SystemTime::now()), Freshness::Stale);
        let snap = snapshot([&app(&[("orders", 7)], Some(400))]);
        let (_, v) = snap.iter().next().unwrap();
        assert_eq!(v.freshness(SystemTime::now()), Freshness::Expired);
    }

    #[test]
    fn skips_unsolved_apps_and_unknown_services() {
        assert!(snapshot([&app(&[("orders", 7)], None)]).is_empty());
        let snap = snapshot([&app(&[("removed", 3), ("orders", 2)], Some(0))]);
        assert_eq!(snap.len(), 1);
        let mut no_status = app(&[], None);
        no_status.status = None;
        assert!(snapshot([&no_status]).is_empty());
    }
}
