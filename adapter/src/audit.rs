//! The controller's HPA audit: every interval, the HPAs in a DermApp's namespace that scale on
//! its metric are checked by [`derm_core::audit`]; misconfigurations become Warning Events on
//! the HPA (`kubectl describe hpa` shows them) and the DermApp's `HPAsExact` condition.
//!
//! Events are published when an HPA's findings change (and kube-runtime's recorder folds
//! repeats into a series), so a misconfigured HPA is not an Event storm; a fixed one gets a
//! Normal `ExactLanding` Event.

use std::collections::BTreeMap;

use derm_core::audit::{self, Report};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _, ResourceExt as _};

use crate::crd::DermApp;

/// Condition type on the DermApp.
pub const CONDITION: &str = "HPAsExact";
/// Findings spelled out in the condition message; the rest are in the Events.
const MESSAGE_FINDINGS: usize = 3;

/// Audits apps and remembers what it last said about each HPA.
pub struct Auditor {
    client: Client,
    recorder: Recorder,
    /// (namespace, HPA) -> reasons last reported (empty: exact).
    said: BTreeMap<(String, String), Vec<&'static str>>,
    metrics: crate::telemetry::LoopMetrics,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("said", &self.said).finish_non_exhaustive()
    }
}

impl Auditor {
    /// Also reports each audited HPA's desired replicas to `metrics`.
    pub fn new(client: Client, metrics: crate::telemetry::LoopMetrics) -> Self {
        let reporter = Reporter { controller: "derm-controller".into(), instance: std::env::var("DERM_POD_NAME").ok() };
        Auditor { recorder: Recorder::new(client.clone(), reporter), client, said: BTreeMap::new(), metrics }
    }

    /// Audits one app; returns its condition (`None` when the HPAs cannot be listed: the last
    /// condition stays).
    pub async fn audit(&mut self, app: &DermApp) -> Option<serde_json::Value> {
        let namespace = app.namespace()?;
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), &namespace);
        let hpas = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(app = %app.name_any(), %namespace, error = %e, "cannot list HPAs to audit");
                return None;
            }
        };
        let values: Vec<serde_json::Value> = hpas
            .iter()
            .filter_map(|h| {
                let mut v = serde_json::to_value(h).ok()?;
                // Listed items carry no apiVersion/kind; the audit names objects by kind.
                v["apiVersion"] = "autoscaling/v2".into();
                v["kind"] = "HorizontalPodAutoscaler".into();
                Some(v)
            })
            .collect();
        let targets = match serde_json::to_value(app)
            .map_err(|e| e.to_string())
            .and_then(|v| derm_core::migrate::targets(&v).map_err(|e| e.to_string()))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(app = %app.name_any(), error = %e, "cannot read the DermApp's services");
                return None;
            }
        };
        for t in &targets {
            let scales = |h: &&HorizontalPodAutoscaler| {
                h.spec.as_ref().is_some_and(|s| s.scale_target_ref.kind == t.kind && s.scale_target_ref.name == t.name)
            };
            if let Some(n) = hpas.iter().find(scales).and_then(|h| h.status.as_ref()).map(|s| s.desired_replicas) {
                self.metrics.hpa_desired(&format!("{namespace}/{}", t.app), &t.service, n);
            }
        }
        let report = audit::audit(&values, &targets);
        self.publish(&namespace, &hpas, &report).await;
        Some(condition(&report))
    }

    async fn publish(&mut self, namespace: &str, hpas: &[HorizontalPodAutoscaler], report: &Report) {
        for hpa in hpas {
            let name = hpa.name_any();
            let findings: Vec<_> = report.findings.iter().filter(|f| f.name == name).collect();
            let reasons: Vec<&'static str> = findings.iter().map(|f| f.reason).collect();
            let key = (namespace.to_owned(), name.clone());
            let before = self.said.get(&key);
            if before == Some(&reasons) || (before.is_none() && reasons.is_empty()) {
                continue;
            }
            let event = if reasons.is_empty() {
                Event {
                    type_: EventType::Normal,
                    reason: "ExactLanding".into(),
                    note: Some(format!("lands exactly on {}", derm_core::migrate::METRIC)),
                    action: "Audit".into(),
                    secondary: None,
                }
            } else {
                let note = findings.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ");
                Event {
                    type_: EventType::Warning,
                    reason: "NotExactLanding".into(),
                    note: Some(truncate(&format!("{}: {note}", reasons.join(",")), 1000)),
                    action: "Audit".into(),
                    secondary: None,
                }
            };
            let reference = ObjectReference { namespace: Some(namespace.to_owned()), ..hpa.object_ref(&()) };
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => {
                    self.said.insert(key, reasons);
                }
                Err(e) => tracing::warn!(hpa = %name, namespace, error = %e, "cannot publish the audit Event"),
            }
        }
    }
}

/// The DermApp condition for a report.
pub fn condition(report: &Report) -> serde_json::Value {
    let reason = if !report.findings.is_empty() {
        "Misconfigured"
    } else if !report.uncovered.is_empty() {
        "Uncovered"
    } else {
        "Exact"
    };
    serde_json::json!({
        "type": CONDITION,
        "status": if report.exact() { "True" } else { "False" },
        "reason": reason,
        "message": truncate(&report.summary(MESSAGE_FINDINGS), 1000),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use derm_core::audit::Finding;

    use super::*;

    #[test]
    fn conditions_say_which_way_the_hpas_miss() {
        let mut report = Report { audited: 2, ..Report::default() };
        assert_eq!(condition(&report)["status"], "True");
        assert_eq!(condition(&report)["reason"], "Exact");
        report.uncovered.push("web".into());
        assert_eq!(condition(&report)["reason"], "Uncovered");
        report.findings.push(Finding {
            hpa: "HorizontalPodAutoscaler shop/cart".into(),
            name: "cart".into(),
            reason: "Tolerance",
            message: "x".repeat(2000),
        });
        let c = condition(&report);
        assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("Misconfigured")));
        assert!(c["message"].as_str().unwrap().len() <= 1003);
    }
}
