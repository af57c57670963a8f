//! Audit of the HorizontalPodAutoscalers that scale on a DermApp's metric: does each one land
//! exactly on Derm's count? The controller turns the findings into Events on the HPA and a
//! DermApp condition; `derm migrate` writes HPAs that pass.
//!
//! Exact landing needs (see [`crate::migrate`]): the external metric with this app's and the
//! right service's labels, target `AverageValue` 1 (desired = ceil(value)), tolerance 0 both
//! ways (else changes under 10% are ignored), no scale-down stabilization window (the default
//! holds the highest count of 5 minutes), and bounds no narrower than the DermApp's. Other
//! metrics next to Derm's are legal but make the HPA take the largest count, so they are
//! reported too. Objects stay JSON, as in [`crate::migrate`].

use serde_json::Value;

use crate::migrate::{METRIC, Target, describe, is_derm, str_at};

/// One way an HPA can miss Derm's count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `HorizontalPodAutoscaler namespace/name`.
    pub hpa: String,
    /// The HPA's name (for an Event's object reference).
    pub name: String,
    /// PascalCase, for Events and conditions.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The audit of one DermApp's HPAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// HPAs on this app's metric that would not land exactly.
    pub findings: Vec<Finding>,
    /// HPAs on this app's metric.
    pub audited: usize,
    /// Services with no HPA on this app's metric (Derm's count for them moves nothing).
    pub uncovered: Vec<String>,
}

impl Report {
    /// Every service has an HPA and every HPA lands exactly.
    pub fn exact(&self) -> bool {
        self.findings.is_empty() && self.uncovered.is_empty()
    }

    /// One line for a condition message: the first findings, then the uncovered services.
    pub fn summary(&self, max_findings: usize) -> String {
        if self.exact() {
            return format!("all {} HPAs on {METRIC} land exactly on Derm's count", self.audited);
        }
        let mut parts: Vec<String> =
            self.findings.iter().take(max_findings).map(|f| format!("{}: {}", f.hpa, f.message)).collect();
        if self.findings.len() > max_findings {
            parts.push(format!("and {} more (see the HPAs' events)", self.findings.len() - max_findings));
        }
        if !self.uncovered.is_empty() {
            parts.push(format!("no HPA on {METRIC} for {}", self.uncovered.join(", ")));
        }
        parts.join("; ")
    }
}

/// Audits `hpas` (autoscaling/v2 objects of the app's namespace) against one DermApp's
/// `targets` (all of the same app). HPAs not on this app's metric are ignored.
pub fn audit(hpas: &[Value], targets: &[Target]) -> Report {
    let Some(app) = targets.first().map(|t| t.app.as_str()) else { return Report::default() };
    let mut report = Report::default();
    let mut covered = std::collections::BTreeSet::new();
    for hpa in hpas {
        let metrics = hpa.pointer("/spec/metrics").and_then(Value::as_array).cloned().unwrap_or_default();
        let Some(derm) = metrics.iter().find(|m| is_derm(m) && label(m, "app") == Some(app)) else { continue };
        report.audited += 1;
        let who = describe(hpa);
        let name = str_at(hpa, "/metadata/name").unwrap_or_default().to_owned();
        let mut find = |reason: &'static str, message: String| {
            report.findings.push(Finding { hpa: who.clone(), name: name.clone(), reason, message });
        };
        let kind = str_at(hpa, "/spec/scaleTargetRef/kind").unwrap_or_default();
        let workload = str_at(hpa, "/spec/scaleTargetRef/name").unwrap_or_default();
        let Some(target) = targets.iter().find(|t| t.kind == kind && t.name == workload) else {
            find("NotAScaleTarget", format!("scales {kind}/{workload}, which is no service of DermApp {app}"));
            continue;
        };
        covered.insert(target.service.clone());
        let service = label(derm, "service");
        if service != Some(target.service.as_str()) {
            find(
                "WrongService",
                format!(
                    "scales {kind}/{workload} (service {}) on service={}'s count",
                    target.service,
                    service.unwrap_or("<none>")
                ),
            );
        }
        let (kind_of, value) = match str_at(derm, "/type") {
            Some("Object") => (str_at(derm, "/object/target/type"), str_at(derm, "/object/target/value")),
            _ => (str_at(derm, "/external/target/type"), str_at(derm, "/external/target/averageValue")),
        };
        let exact_target = match kind_of {
            Some("AverageValue") => value.and_then(quantity) == Some(1.0),
            Some("Value") => str_at(derm, "/type") == Some("Object") && value.and_then(quantity) == Some(1.0),
            _ => false,
        };
        if !exact_target {
            find(
                "NotExactTarget",
                format!(
                    "target {} {}: use type AverageValue, averageValue \"1\" (desired = the value)",
                    kind_of.unwrap_or("?"),
                    value.unwrap_or("?")
                ),
            );
        }
        for way in ["scaleUp", "scaleDown"] {
            let tolerance = hpa.pointer(&format!("/spec/behavior/{way}/tolerance"));
            let zero = tolerance.and_then(|t| t.as_str().and_then(quantity).or_else(|| t.as_f64())) == Some(0.0);
            if !zero {
                find(
                    "Tolerance",
                    format!(
                        "behavior.{way}.tolerance is not \"0\": changes under 10% of the count are ignored \
                         (needs Kubernetes 1.35+, HPAConfigurableTolerance)"
                    ),
                );
            }
        }
        let window = hpa.pointer("/spec/behavior/scaleDown/stabilizationWindowSeconds").and_then(Value::as_u64);
        if window != Some(0) {
            find(
                "Stabilization",
                format!(
                    "behavior.scaleDown.stabilizationWindowSeconds is {}: the HPA keeps the highest count of that \
                     window instead of Derm's; set 0",
                    window.map_or("unset (300 s)".to_owned(), |w| format!("{w} s"))
                ),
            );
        }
        if metrics.len() > 1 {
            find(
                "OtherMetrics",
                format!(
                    "{} other metric(s): the HPA takes the largest count, so it can run above Derm's",
                    metrics.len() - 1
                ),
            );
        }
        let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_u64).unwrap_or(1);
        let max = hpa.pointer("/spec/maxReplicas").and_then(Value::as_u64).unwrap_or(u64::MAX);
        if max < target.max_replicas || min > target.min_replicas {
            find(
                "Bounds",
                format!(
                    "bounds {min}..{max} are narrower than the DermApp's {}..{} for {}: the HPA clamps Derm's count",
                    target.min_replicas, target.max_replicas, target.service
                ),
            );
        }
    }
    report.uncovered = targets.iter().filter(|t| !covered.contains(&t.service)).map(|t| t.service.clone()).collect();
    report
}

/// A label of the metric's selector (`matchLabels`).
fn label<'a>(metric: &'a Value, key: &str) -> Option<&'a str> {
    ["/external/metric/selector/matchLabels", "/object/metric/selector/matchLabels"]
        .iter()
        .find_map(|p| metric.pointer(p))
        .and_then(|labels| labels.get(key))
        .and_then(Value::as_str)
}

/// A Kubernetes quantity as a number, for the plain forms HPAs use ("1", "0", "0.1", "1000m").
fn quantity(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|v| v / 1000.0),
        None => q.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::migrate::{derm_metric, recipe_behavior};

    fn targets() -> Vec<Target> {
        ["cart", "web"]
            .iter()
            .map(|s| Target {
                namespace: "shop".into(),
                app: "shop".into(),
                service: (*s).into(),
                kind: "Deployment".into(),
                name: format!("{s}-deploy"),
                min_replicas: 1,
                max_replicas: 20,
            })
            .collect()
    }

    fn recipe(service: &str) -> Value {
        let t = targets().into_iter().find(|t| t.service == service).unwrap();
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": service, "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t.name},
                "minReplicas": 1, "maxReplicas": 20,
                "metrics": [derm_metric(&t)],
                "behavior": recipe_behavior(20),
            }
        })
    }

    fn reasons(report: &Report) -> Vec<&'static str> {
        report.findings.iter().map(|f| f.reason).collect()
    }

    #[test]
    fn the_migrate_recipe_passes() {
        let report = audit(&[recipe("cart"), recipe("web")], &targets());
        assert!(report.exact(), "{report:?}");
        assert_eq!(report.audited, 2);
        assert!(report.summary(3).starts_with("all 2 HPAs"));
    }

    #[test]
    fn each_misconfiguration_is_named() {
        let mut h = recipe("cart");
        h["spec"]["metrics"][0]["external"]["target"] = json!({"type": "AverageValue", "averageValue": "2"});
        assert_eq!(reasons(&audit(&[h], &targets())), ["NotExactTarget"]);

        let mut h = recipe("cart");
        h["spec"]["behavior"]["scaleUp"].as_object_mut().unwrap().remove("tolerance");
        assert_eq!(reasons(&audit(&[h], &targets())), ["Tolerance"]);

        let mut h = recipe("cart");
        h["spec"]["behavior"] = Value::Null;
        assert_eq!(reasons(&audit(&[h], &targets())), ["Tolerance", "Tolerance", "Stabilization"]);

        let mut h = recipe("cart");
        h["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["service"] = json!("web");
        assert_eq!(reasons(&audit(&[h], &targets())), ["WrongService"]);

        let mut h = recipe("cart");
        h["spec"]["maxReplicas"] = json!(10);
        h["spec"]["metrics"].as_array_mut().unwrap().push(json!({"type": "Resource", "resource": {"name": "cpu"}}));
        assert_eq!(reasons(&audit(&[h], &targets())), ["OtherMetrics", "Bounds"]);

        let mut h = recipe("cart");
        h["spec"]["scaleTargetRef"]["name"] = json!("payments");
        let report = audit(&[h], &targets());
        assert_eq!(reasons(&report), ["NotAScaleTarget"]);
        assert_eq!(report.uncovered, ["cart", "web"]);
    }

    #[test]
    fn quantities_in_other_spellings_and_other_apps() {
        let mut h = recipe("cart");
        h["spec"]["metrics"][0]["external"]["target"]["averageValue"] = json!("1000m");
        h["spec"]["behavior"]["scaleDown"]["tolerance"] = json!("0m");
        let mut other = recipe("web");
        other["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["app"] = json!("blog");
        let report = audit(&[h, other, json!({"kind": "HorizontalPodAutoscaler"})], &targets());
        assert!(report.findings.is_empty(), "{report:?}");
        assert_eq!((report.audited, report.uncovered.clone()), (1, vec!["web".to_owned()]));
        assert!(report.summary(3).contains("no HPA on derm_desired_replicas for web"));
        assert_eq!(audit(&[recipe("cart")], &[]), Report::default());
    }
}
