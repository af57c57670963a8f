//! `derm migrate`'s transformation: an existing HorizontalPodAutoscaler (autoscaling/v2) on one
//! of a DermApp's scale targets becomes an HPA on Derm's external metric
//! `derm_desired_replicas{app=<DermApp>,service=<service>}` with the exact-landing recipe.
//!
//! Objects stay JSON ([`serde_json::Value`]) so every field this module does not own (labels,
//! annotations, other metrics, unknown future fields) passes through untouched; this crate has
//! no Kubernetes types on purpose. The recipe (see the README and `examples/trainticket`):
//! target `AverageValue "1"` so desired = ceil(value); tolerance `"0"` both ways so changes
//! under 10% are not ignored; no stabilization window; policies that reach any count in one
//! step. CPU metrics (what Derm replaces) go; every other metric stays, and the HPA then takes
//! the largest count, which the notes say.
//!
//! Nothing here decides silently: each HPA gets an [`Outcome`] with the reason, and the
//! command refuses the whole run when one HPA is [`Outcome::Refused`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The external metric the adapter publishes.
pub const METRIC: &str = "derm_desired_replicas";

/// Annotation keeping what migration replaced (`{"metrics": [...], "behavior": {...}}`), so a
/// migration can be undone by hand.
pub const PREVIOUS_ANNOTATION: &str = "derm.dev/migrated-from";

/// A malformed input object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct Error {
    /// `Kind namespace/name` of the object, as far as known.
    pub object: String,
    /// JSON path of the bad field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// One service of a DermApp: what an HPA must target to be migrated, and its metric labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Namespace of the DermApp (and of its workloads).
    pub namespace: String,
    /// DermApp name: the metric's `app` label.
    pub app: String,
    /// Traced service name: the metric's `service` label.
    pub service: String,
    /// Workload kind (`Deployment`, `StatefulSet`, `ReplicaSet`).
    pub kind: String,
    /// Workload name.
    pub name: String,
    /// The DermApp's bounds for this service.
    pub min_replicas: u64,
    /// Upper bound.
    pub max_replicas: u64,
}

/// The [`Target`]s of one DermApp object (`derm.dev/v1alpha1`).
pub fn targets(app: &Value) -> Result<Vec<Target>, Error> {
    let who = describe(app);
    let bad = |field: &str, message: &str| Error { object: who.clone(), field: field.into(), message: message.into() };
    let app_name = str_at(app, "/metadata/name").ok_or_else(|| bad("metadata.name", "missing"))?;
    let namespace = str_at(app, "/metadata/namespace").ok_or_else(|| bad("metadata.namespace", "missing"))?;
    let services =
        app.pointer("/spec/services").and_then(Value::as_array).ok_or_else(|| bad("spec.services", "missing"))?;
    services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = |f: &str| format!("spec.services[{i}].{f}");
            Ok(Target {
                namespace: namespace.into(),
                app: app_name.into(),
                service: str_at(s, "/name").ok_or_else(|| bad(&field("name"), "missing"))?.into(),
                kind: str_at(s, "/scaleTargetRef/kind").unwrap_or("Deployment").into(),
                name: str_at(s, "/scaleTargetRef/name")
                    .ok_or_else(|| bad(&field("scaleTargetRef.name"), "missing"))?
                    .into(),
                min_replicas: s.get("minReplicas").and_then(Value::as_u64).unwrap_or(1),
                max_replicas: s
                    .get("maxReplicas")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad(&field("maxReplicas"), "missing or not a whole number"))?,
            })
        })
        .collect()
}

/// What to do with one HPA.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Rewrite `before` as `after`; `notes` say what the user should know.
    Migrate {
        /// The HPA as read.
        before: Value,
        /// The HPA to write.
        after: Value,
        /// Consequences worth reading (kept metrics, narrower bounds, replaced behavior).
        notes: Vec<String>,
    },
    /// Already on Derm's metric with the recipe: nothing to write.
    Unchanged,
    /// Its scale target is in no DermApp.
    Unrelated,
    /// Cannot be migrated safely; the reason says why and what to do.
    Refused(String),
}

/// Choices of the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Replace a `spec.behavior` the user wrote (otherwise such an HPA is refused).
    pub replace_behavior: bool,
}

/// Decides what to do with `hpa` (autoscaling/v2) given the DermApps' targets.
pub fn migrate(hpa: &Value, targets: &[Target], options: Options) -> Result<Outcome, Error> {
    let who = describe(hpa);
    let bad = |field: &str, message: &str| Error { object: who.clone(), field: field.into(), message: message.into() };
    if str_at(hpa, "/kind") != Some("HorizontalPodAutoscaler") {
        return Err(bad("kind", "not a HorizontalPodAutoscaler"));
    }
    if str_at(hpa, "/apiVersion") != Some("autoscaling/v2") {
        return Ok(Outcome::Refused(format!(
            "apiVersion is {}, not autoscaling/v2: read it as autoscaling/v2 (kubectl get hpa.v2.autoscaling -o yaml)",
            str_at(hpa, "/apiVersion").unwrap_or("missing")
        )));
    }
    let namespace = str_at(hpa, "/metadata/namespace").ok_or_else(|| bad("metadata.namespace", "missing"))?;
    let kind = str_at(hpa, "/spec/scaleTargetRef/kind").ok_or_else(|| bad("spec.scaleTargetRef.kind", "missing"))?;
    let name = str_at(hpa, "/spec/scaleTargetRef/name").ok_or_else(|| bad("spec.scaleTargetRef.name", "missing"))?;
    let group = str_at(hpa, "/spec/scaleTargetRef/apiVersion").unwrap_or("").split('/').next().unwrap_or("");
    let max = hpa
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("spec.maxReplicas", "missing or not a whole number"))?;
    let matches: Vec<&Target> = targets
        .iter()
        .filter(|t| t.namespace == namespace && t.kind == kind && t.name == name && group == "apps")
        .collect();
    let target = match matches.as_slice() {
        [] => return Ok(Outcome::Unrelated),
        [one] => *one,
        [first, second, ..] => {
            return Ok(Outcome::Refused(format!(
                "{kind}/{name} is a scale target of DermApps {} and {}: one workload, one DermApp",
                first.app, second.app
            )));
        }
    };
    let metrics = match hpa.pointer("/spec/metrics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(m)) => m.clone(),
        Some(_) => return Err(bad("spec.metrics", "not a list")),
    };
    let derm_metric = derm_metric(target);
    let behavior = recipe_behavior(max);
    if metrics.iter().any(is_derm) {
        let exact = metrics.first() == Some(&derm_metric) && hpa.pointer("/spec/behavior") == Some(&behavior);
        return Ok(if exact {
            Outcome::Unchanged
        } else {
            Outcome::Refused(format!(
                "already scales on {METRIC} but not with the exact-landing recipe for app={},service={}: edit it by hand \
                 (see examples/trainticket/hpas.yaml)",
                target.app, target.service
            ))
        });
    }
    // An HPA without metrics scales on 80% CPU (the API's default).
    let (replaced, kept): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu);
    if replaced.is_empty() && !kept.is_empty() {
        return Ok(Outcome::Refused(format!(
            "has no CPU metric for Derm to replace (metrics: {}); next to them Derm's count would only be a floor. \
             Write the HPA by hand if that is what you want",
            kept.iter().map(metric_label).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut notes = Vec::new();
    let old_behavior = hpa.pointer("/spec/behavior").filter(|b| !b.is_null()).cloned();
    if old_behavior.as_ref().is_some_and(|old| *old != behavior) {
        if !options.replace_behavior {
            return Ok(Outcome::Refused(
                "has its own spec.behavior, which would keep it off Derm's count (stabilization windows, rate \
                 policies, the 10% tolerance): pass --replace-behavior to use the exact-landing recipe"
                    .into(),
            ));
        }
        notes.push("spec.behavior replaced by the exact-landing recipe (the old one is in the annotation)".into());
    }
    if !kept.is_empty() {
        notes.push(format!(
            "keeps {} (the HPA takes the largest count, so these can raise replicas above Derm's)",
            kept.iter().map(metric_label).collect::<Vec<_>>().join(", ")
        ));
    }
    let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_u64).unwrap_or(1);
    if max < target.max_replicas || min > target.min_replicas {
        notes.push(format!(
            "the HPA's bounds {min}..{max} are narrower than the DermApp's {}..{} for {}: the HPA clamps Derm's count",
            target.min_replicas, target.max_replicas, target.service
        ));
    }

    let mut after = hpa.clone();
    let previous = json!({"metrics": replaced, "behavior": old_behavior});
    let spec = after.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| bad("spec", "not an object"))?;
    spec.insert("metrics".into(), Value::Array(std::iter::once(derm_metric).chain(kept).collect()));
    spec.insert("behavior".into(), behavior);
    let metadata =
        after.get_mut("metadata").and_then(Value::as_object_mut).ok_or_else(|| bad("metadata", "not an object"))?;
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    if let Some(a) = annotations.as_object_mut() {
        a.insert(PREVIOUS_ANNOTATION.into(), Value::String(previous.to_string()));
    } else {
        return Err(bad("metadata.annotations", "not an object"));
    }
    if let Some(a) = after.as_object_mut() {
        a.remove("status");
    }
    Ok(Outcome::Migrate { before: hpa.clone(), after, notes })
}

/// The External metric entry of a migrated HPA.
pub fn derm_metric(target: &Target) -> Value {
    json!({
        "type": "External",
        "external": {
            "metric": {
                "name": METRIC,
                "selector": {"matchLabels": {"app": target.app, "service": target.service}}
            },
            "target": {"type": "AverageValue", "averageValue": "1"}
        }
    })
}

/// The exact-landing `spec.behavior`: tolerance 0, no stabilization window, and policies that
/// reach any count up to `max_replicas` (or down to the minimum) in one 15 s period.
pub fn recipe_behavior(max_replicas: u64) -> Value {
    json!({
        "scaleUp": {
            "tolerance": "0",
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": max_replicas.max(1), "periodSeconds": 15}]
        },
        "scaleDown": {
            "tolerance": "0",
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
        }
    })
}

/// The object without server-managed noise, for showing a diff.
pub fn for_display(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink"] {
            meta.remove(key);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    obj
}

/// `Kind namespace/name` of an object, for messages.
pub fn describe(obj: &Value) -> String {
    format!(
        "{} {}/{}",
        str_at(obj, "/kind").unwrap_or("object"),
        str_at(obj, "/metadata/namespace").unwrap_or("-"),
        str_at(obj, "/metadata/name").unwrap_or("?")
    )
}

/// Splits parsed documents (and `kind: List` items) into DermApps and HPAs; other kinds are
/// counted by kind.
pub fn sort_objects(docs: Vec<Value>) -> (Vec<Value>, Vec<Value>, BTreeMap<String, usize>) {
    let (mut apps, mut hpas, mut others) = (Vec::new(), Vec::new(), BTreeMap::new());
    let mut stack: Vec<Value> = docs.into_iter().rev().collect();
    while let Some(doc) = stack.pop() {
        match str_at(&doc, "/kind") {
            Some("List") | Some("HorizontalPodAutoscalerList") | Some("DermAppList") => {
                if let Some(Value::Array(items)) = doc.get("items") {
                    stack.extend(items.iter().rev().cloned());
                }
            }
            Some("DermApp") => apps.push(doc),
            Some("HorizontalPodAutoscaler") => hpas.push(doc),
            Some(kind) => *others.entry(kind.to_string()).or_insert(0) += 1,
            None if doc.is_null() => {}
            None => *others.entry("(no kind)".to_string()).or_insert(0) += 1,
        }
    }
    (apps, hpas, others)
}

/// Fills `metadata.namespace` where a file left it out (kubectl's `-n` does the same).
pub fn default_namespace(obj: &mut Value, namespace: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace").or_insert_with(|| Value::String(namespace.into()));
    }
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub(crate) fn is_derm(metric: &Value) -> bool {
    ["/external/metric/name", "/object/metric/name"]
        .iter()
        .any(|p| metric.pointer(p).and_then(Value::as_str) == Some(METRIC))
}

fn is_cpu(metric: &Value) -> bool {
    match str_at(metric, "/type") {
        Some("Resource") => str_at(metric, "/resource/name") == Some("cpu"),
        Some("ContainerResource") => str_at(metric, "/containerResource/name") == Some("cpu"),
        _ => false,
    }
}

fn metric_label(metric: &Value) -> String {
    let kind = str_at(metric, "/type").unwrap_or("?");
    let name = [
        "/resource/name",
        "/containerResource/name",
        "/external/metric/name",
        "/object/metric/name",
        "/pods/metric/name",
    ]
    .iter()
    .find_map(|p| str_at(metric, p))
    .unwrap_or("?");
    format!("{kind} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Value {
        json!({
            "apiVersion": "derm.dev/v1alpha1", "kind": "DermApp",
            "metadata": {"name": "shop", "namespace": "prod"},
            "spec": {"services": [
                {"name": "cart-svc", "scaleTargetRef": {"kind": "Deployment", "name": "cart"}, "minReplicas": 1, "maxReplicas": 30},
                {"name": "front", "scaleTargetRef": {"name": "frontend"}, "maxReplicas": 10}
            ]}
        })
    }

    /// A CPU HPA on Deployment `name`, with chained modifiers below.
    fn cpu_hpa(name: &str) -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": "prod", "resourceVersion": "42", "labels": {"team": "a"}},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 2, "maxReplicas": 20,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]
            },
            "status": {"currentReplicas": 3}
        })
    }

    fn with(mut v: Value, pointer: &str, value: Value) -> Value {
        *v.pointer_mut(pointer).unwrap() = value;
        v
    }

    fn outcome(hpa: &Value) -> Outcome {
        migrate(hpa, &targets(&app()).unwrap(), Options::default()).unwrap()
    }

    fn refusal(hpa: &Value) -> String {
        match outcome(hpa) {
            Outcome::Refused(reason) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn targets_carry_labels_bounds_and_default_kind() {
        let t = targets(&app()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].app.as_str(), t[0].service.as_str(), t[0].name.as_str()), ("shop", "cart-svc", "cart"));
        assert_eq!((t[1].kind.as_str(), t[1].min_replicas, t[1].max_replicas), ("Deployment", 1, 10));
        let broken = with(app(), "/spec/services/1/maxReplicas", json!("ten"));
        let err = targets(&broken).unwrap_err();
        assert_eq!(err.field, "spec.services[1].maxReplicas");
        assert!(err.to_string().starts_with("DermApp prod/shop: spec.services[1].maxReplicas"));
    }

    #[test]
    fn cpu_hpa_becomes_the_exact_landing_recipe_keeping_bounds_and_labels() {
        let Outcome::Migrate { after, notes, .. } = outcome(&cpu_hpa("cart")) else { panic!("not migrated") };
        assert_eq!(after["spec"]["minReplicas"], 2);
        assert_eq!(after["spec"]["maxReplicas"], 20);
        assert_eq!(after["metadata"]["labels"]["team"], "a");
        assert_eq!(after["metadata"]["resourceVersion"], "42", "kept for an optimistic-concurrency replace");
        assert!(after.get("status").is_none());
        let metrics = after["spec"]["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 1, "CPU replaced");
        assert_eq!(metrics[0]["external"]["metric"]["name"], METRIC);
        assert_eq!(
            metrics[0]["external"]["metric"]["selector"]["matchLabels"],
            json!({"app": "shop", "service": "cart-svc"})
        );
        assert_eq!(metrics[0]["external"]["target"], json!({"type": "AverageValue", "averageValue": "1"}));
        assert_eq!(after["spec"]["behavior"]["scaleUp"]["tolerance"], "0");
        assert_eq!(after["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 0);
        assert_eq!(after["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 20);
        let previous: Value =
            serde_json::from_str(after["metadata"]["annotations"][PREVIOUS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(previous["metrics"][0]["resource"]["name"], "cpu");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("narrower than the DermApp's 1..30"), "{notes:?}");
    }

    #[test]
    fn other_metrics_stay_after_derms_with_a_note() {
        let hpa = with(
            cpu_hpa("cart"),
            "/spec/metrics",
            json!([
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "External", "external": {"metric": {"name": "queue_depth"}, "target": {"type": "AverageValue", "averageValue": "30"}}}
            ]),
        );
        let Outcome::Migrate { after, notes, .. } = outcome(&hpa) else { panic!("not migrated") };
        let names: Vec<String> = after["spec"]["metrics"].as_array().unwrap().iter().map(metric_label).collect();
        assert_eq!(names, ["External derm_desired_replicas", "Resource memory", "External queue_depth"]);
        assert!(notes.iter().any(|n| n.contains("keeps Resource memory, External queue_depth")), "{notes:?}");
    }

    #[test]
    fn no_metrics_means_default_cpu_and_migrates() {
        let hpa = with(cpu_hpa("cart"), "/spec/metrics", Value::Null);
        assert!(matches!(outcome(&hpa), Outcome::Migrate { .. }));
    }

    #[test]
    fn unrelated_ambiguous_and_non_cpu_hpas() {
        assert_eq!(outcome(&cpu_hpa("payments")), Outcome::Unrelated);
        let other_ns = with(cpu_hpa("cart"), "/metadata/namespace", json!("staging"));
        assert_eq!(outcome(&other_ns), Outcome::Unrelated, "namespaces must match");
        let mut two = targets(&app()).unwrap();
        two.push(Target { app: "shop2".into(), ..two[0].clone() });
        match migrate(&cpu_hpa("cart"), &two, Options::default()).unwrap() {
            Outcome::Refused(r) => assert!(r.contains("DermApps shop and shop2"), "{r}"),
            other => panic!("{other:?}"),
        }
        let memory_only = with(
            cpu_hpa("cart"),
            "/spec/metrics",
            json!([{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
        assert!(refusal(&memory_only).contains("no CPU metric"));
        let v1 = with(cpu_hpa("cart"), "/apiVersion", json!("autoscaling/v1"));
        assert!(refusal(&v1).contains("not autoscaling/v2"));
    }

    #[test]
    fn own_behavior_is_refused_unless_replaced() {
        let hpa = with(
            cpu_hpa("cart"),
            "/spec",
            json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
                "maxReplicas": 20,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}
            }),
        );
        assert!(refusal(&hpa).contains("--replace-behavior"));
        let t = targets(&app()).unwrap();
        let Outcome::Migrate { after, notes, .. } = migrate(&hpa, &t, Options { replace_behavior: true }).unwrap()
        else {
            panic!("not migrated")
        };
        assert_eq!(after["spec"]["behavior"], recipe_behavior(20));
        assert!(notes.iter().any(|n| n.contains("behavior replaced")));
        let previous: Value =
            serde_json::from_str(after["metadata"]["annotations"][PREVIOUS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(previous["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 300);
    }

    #[test]
    fn a_migrated_hpa_is_unchanged_and_a_hand_made_derm_hpa_is_refused() {
        let Outcome::Migrate { after, .. } = outcome(&cpu_hpa("cart")) else { panic!("not migrated") };
        assert_eq!(outcome(&after), Outcome::Unchanged, "migrating twice is a no-op");
        let tweaked = with(after, "/spec/metrics/0/external/target/averageValue", json!("2"));
        assert!(refusal(&tweaked).contains(&format!("already scales on {METRIC}")));
    }

    #[test]
    fn malformed_input_names_the_field() {
        let err =
            migrate(&with(cpu_hpa("cart"), "/spec/maxReplicas", json!("x")), &[], Options::default()).unwrap_err();
        assert_eq!(err.field, "spec.maxReplicas");
        let err = migrate(&json!({"kind": "Pod"}), &[], Options::default()).unwrap_err();
        assert_eq!(err.field, "kind");
    }

    #[test]
    fn lists_are_flattened_and_other_kinds_counted() {
        let docs = vec![
            json!({"kind": "List", "items": [cpu_hpa("a"), {"kind": "Service"}]}),
            app(),
            cpu_hpa("b"),
            Value::Null,
        ];
        let (apps, hpas, others) = sort_objects(docs);
        assert_eq!(apps.len(), 1);
        assert_eq!(hpas.iter().map(|h| h["metadata"]["name"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(others, BTreeMap::from([("Service".to_string(), 1)]));
    }

    #[test]
    fn display_drops_server_noise() {
        let mut hpa = cpu_hpa("cart");
        hpa["metadata"]["managedFields"] = json!([{}]);
        hpa["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"});
        let shown = for_display(&hpa);
        assert!(shown.get("status").is_none());
        assert_eq!(shown["metadata"], json!({"name": "cart", "namespace": "prod", "labels": {"team": "a"}}));
    }
}
