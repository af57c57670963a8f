//! The `DermApp` custom resource (`derm.dev/v1alpha1`): one per application.
//!
//! The spec says what to keep within SLA and where traces come from; the status is the single
//! source of truth for published values (every adapter replica serves from a watch of it).
//! The OpenAPI schema carries the simple bounds so kube-apiserver rejects obvious mistakes;
//! [`DermAppSpec::validate`] checks the rest and names the field of every problem.
//!
//! TODO(next slice): the controller that watches DermApps, writes status and conditions, and
//! a committed CRD manifest regenerated and diffed by a test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a DermApp.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "derm.dev",
    version = "v1alpha1",
    kind = "DermApp",
    namespaced,
    status = "DermAppStatus",
    shortname = "dapp",
    category = "derm",
    doc = "A microservice application whose replicas Derm sizes to meet an end-to-end latency SLA",
    printcolumn = r#"{"name": "SLA-ms", "type": "number", "jsonPath": ".spec.sla.latencyMs"}"#,
    printcolumn = r#"{"name": "Percentile", "type": "number", "jsonPath": ".spec.sla.percentile"}"#,
    printcolumn = r#"{"name": "Load-rps", "type": "number", "jsonPath": ".status.observedLoadRps"}"#,
    printcolumn = r#"{"name": "P(SLA)", "type": "number", "jsonPath": ".status.predictedSlaProbability"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DermAppSpec {
    /// The end-to-end latency objective.
    pub sla: Sla,
    /// Tracing name of the service that receives the application's requests.
    #[schemars(length(min = 1))]
    pub entry_service: String,
    /// Where traces come from.
    pub trace_source: TraceSource,
    /// Request arguments (span tags) that change the call graph, with their buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argument_tags: Vec<ArgumentTag>,
    /// The services Derm sizes.
    #[schemars(length(min = 1))]
    pub services: Vec<Service>,
    /// Seconds between solves.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Graphs with a predicted share below this leave the SLA constraint (0..1).
    #[serde(default = "default_rare_graph_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub rare_graph_threshold: f64,
    /// How long published values stay good without an update.
    #[serde(default)]
    pub staleness: StalenessSpec,
}

fn default_interval_seconds() -> u32 {
    30
}

fn default_rare_graph_threshold() -> f64 {
    0.02
}

/// The latency objective: `percentile` percent of requests within `latencyMs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sla {
    /// End-to-end latency bound in milliseconds.
    pub latency_ms: f64,
    /// Share of requests within the bound, in percent (95 for P95).
    pub percentile: f64,
}

/// Exactly one trace source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceSource {
    /// Poll a Jaeger query service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaeger: Option<Jaeger>,
    /// Receive OTLP/HTTP pushes (an OpenTelemetry Collector exports to Derm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
    /// Share of requests that are traced, (0, 1]: loads are traced requests divided by it.
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.000001, max = 1.0))]
    pub sampling_ratio: f64,
}

fn default_sampling_ratio() -> f64 {
    1.0
}

/// A Jaeger query service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Jaeger {
    /// Base URL of the query service, e.g. `http://jaeger-query.tracing:16686`.
    pub url: String,
    /// Query API: `v3` (`/api/v3/traces`) or `v1` (`/api/traces`, older Jaeger).
    #[serde(default)]
    pub api: JaegerApi,
}

/// Jaeger query API version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum JaegerApi {
    /// `/api/v3/traces`.
    #[default]
    V3,
    /// `/api/traces`.
    V1,
}

/// OTLP/HTTP push: traces arrive at the adapter's receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct Otlp {}

/// A request argument that changes the call graph.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgumentTag {
    /// Span tag name.
    pub name: String,
    /// Bucket upper bounds, strictly increasing.
    pub buckets: Vec<f64>,
}

/// A service Derm sizes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Service name as it appears in traces.
    pub name: String,
    /// The workload whose replicas the HPA sets.
    pub scale_target_ref: ScaleTargetRef,
    /// Lower bound on desired replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: u32,
    /// Upper bound on desired replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
}

fn default_min_replicas() -> u32 {
    1
}

/// A scalable workload in the DermApp's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    /// `Deployment`, `StatefulSet` or `ReplicaSet` (group `apps`).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Workload name.
    pub name: String,
}

fn default_kind() -> String {
    "Deployment".into()
}

/// Kinds a scale target may have.
pub const SCALE_TARGET_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "ReplicaSet"];

impl ScaleTargetRef {
    /// The API resource of the kind, as custom.metrics.k8s.io paths name it (`deployments.apps`).
    pub fn resource(&self) -> Option<&'static str> {
        match self.kind.as_str() {
            "Deployment" => Some("deployments.apps"),
            "StatefulSet" => Some("statefulsets.apps"),
            "ReplicaSet" => Some("replicasets.apps"),
            _ => None,
        }
    }
}

/// Staleness limits (see `metrics::Staleness`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StalenessSpec {
    /// Seconds a value stays fresh without an update.
    pub hold_seconds: u32,
    /// Seconds after which the value is answered with an error (the HPA keeps its count).
    pub error_after_seconds: u32,
}

impl Default for StalenessSpec {
    fn default() -> Self {
        Self { hold_seconds: 120, error_after_seconds: 600 }
    }
}

/// Observed state, written by the leader's online loop.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct DermAppStatus {
    /// Ready, ProfilesReady, PredictorReady, Feasible, Fresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Requests per second at the entry service in the last window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_load_rps: Option<f64>,
    /// Predicted share of each call graph in the next window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_graph_mix: Vec<GraphShare>,
    /// Predicted weighted probability of meeting the SLA with the desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_sla_probability: Option<f64>,
    /// Desired replicas per service (tracing name); what the metrics API publishes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub desired_replicas: BTreeMap<String, u32>,
    /// When the published values were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_solve_time: Option<Time>,
    /// Call rates between services, for the scheduler extender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_affinity: Vec<CallAffinity>,
}

/// A call graph's predicted share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphShare {
    /// Graph id in the catalog.
    pub graph: String,
    /// Share of requests, 0..1.
    pub share: f64,
}

/// Calls per second from one service to another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallAffinity {
    /// Caller service.
    pub from: String,
    /// Callee service.
    pub to: String,
    /// Calls per second.
    pub calls_per_second: f64,
}

/// One problem in a spec, with the JSON path of its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.services[1].maxReplicas`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// All problems found in a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid DermApp: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl DermAppSpec {
    /// Checks what the schema cannot; returns every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut errs = Vec::new();
        let mut bad = |field: String, message: &str| errs.push(FieldError { field, message: message.into() });
        let sla = &self.sla;
        if !(sla.latency_ms.is_finite() && sla.latency_ms > 0.0) {
            bad("spec.sla.latencyMs".into(), "must be a positive number of milliseconds");
        }
        if !(sla.percentile > 0.0 && sla.percentile < 100.0) {
            bad("spec.sla.percentile".into(), "must be in (0, 100), e.g. 95 for P95");
        }
        match (&self.trace_source.jaeger, &self.trace_source.otlp) {
            (Some(_), Some(_)) | (None, None) => bad("spec.traceSource".into(), "set exactly one of jaeger, otlp"),
            (Some(j), None) => {
                if !(j.url.starts_with("http://") || j.url.starts_with("https://")) {
                    bad("spec.traceSource.jaeger.url".into(), "must be an http:// or https:// URL");
                }
            }
            (None, Some(_)) => {}
        }
        let ratio = self.trace_source.sampling_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            bad("spec.traceSource.samplingRatio".into(), "must be in (0, 1], the share of requests traced");
        }
        let mut tags = BTreeSet::new();
        for (i, tag) in self.argument_tags.iter().enumerate() {
            if tag.name.is_empty() {
                bad(format!("spec.argumentTags[{i}].name"), "must not be empty");
            } else if !tags.insert(&tag.name) {
                bad(format!("spec.argumentTags[{i}].name"), "duplicate tag name");
            }
            if tag.buckets.is_empty() {
                bad(format!("spec.argumentTags[{i}].buckets"), "must list at least one bucket bound");
            } else if !tag.buckets.iter().all(|b| b.is_finite()) || tag.buckets.windows(2).any(|w| w[0] >= w[1]) {
                bad(format!("spec.argumentTags[{i}].buckets"), "must be finite and strictly increasing");
            }
        }
        if self.services.is_empty() {
            bad("spec.services".into(), "must list at least one service");
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if s.name.is_empty() {
                bad(format!("spec.services[{i}].name"), "must not be empty");
            } else if !names.insert(s.name.as_str()) {
                bad(format!("spec.services[{i}].name"), "duplicate service name");
            }
            if s.scale_target_ref.resource().is_none() {
                bad(format!("spec.services[{i}].scaleTargetRef.kind"), "must be Deployment, StatefulSet or ReplicaSet");
            }
            if s.scale_target_ref.name.is_empty() {
                bad(format!("spec.services[{i}].scaleTargetRef.name"), "must not be empty");
            }
            if s.min_replicas < 1 {
                bad(format!("spec.services[{i}].minReplicas"), "must be at least 1");
            }
            if s.max_replicas < s.min_replicas {
                bad(format!("spec.services[{i}].maxReplicas"), "must be at least minReplicas");
            }
        }
        if !self.entry_service.is_empty() && !names.contains(self.entry_service.as_str()) {
            bad("spec.entryService".into(), "must name one of spec.services");
        } else if self.entry_service.is_empty() {
            bad("spec.entryService".into(), "must not be empty");
        }
        if !(1..=3600).contains(&self.interval_seconds) {
            bad("spec.intervalSeconds".into(), "must be in 1..=3600");
        }
        if !(0.0..1.0).contains(&self.rare_graph_threshold) {
            bad("spec.rareGraphThreshold".into(), "must be in [0, 1)");
        }
        if self.staleness.error_after_seconds == 0 {
            bad("spec.staleness.errorAfterSeconds".into(), "must be at least 1");
        }
        if self.staleness.hold_seconds > self.staleness.error_after_seconds {
            bad("spec.staleness.holdSeconds".into(), "must not exceed errorAfterSeconds");
        }
        if errs.is_empty() { Ok(()) } else { Err(Invalid(errs)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const SAMPLE: &str = r#"{
        "apiVersion": "derm.dev/v1alpha1", "kind": "DermApp",
        "metadata": {"name": "trainticket", "namespace": "shop"},
        "spec": {
            "sla": {"latencyMs": 350, "percentile": 95},
            "entryService": "ts-ui",
            "traceSource": {"jaeger": {"url": "http://jaeger-query.tracing:16686", "api": "v3"}},
            "argumentTags": [{"name": "distance", "buckets": [1, 3, 6]}],
            "services": [
                {"name": "ts-ui", "scaleTargetRef": {"kind": "Deployment", "name": "ts-ui"}, "maxReplicas": 10},
                {"name": "ts-order", "scaleTargetRef": {"name": "ts-order"}, "minReplicas": 2, "maxReplicas": 20}
            ]
        }
    }"#;

    fn sample() -> DermApp {
        serde_json::from_str(SAMPLE).unwrap()
    }

    #[test]
    fn sample_parses_with_defaults_and_validates() {
        let app = sample();
        assert_eq!(app.spec.interval_seconds, 30);
        assert_eq!(app.spec.services[1].scale_target_ref.kind, "Deployment");
        assert_eq!(app.spec.services[0].min_replicas, 1);
        assert_eq!(app.spec.staleness, StalenessSpec::default());
        app.spec.validate().unwrap();
    }

    #[test]
    fn validate_names_each_bad_field() {
        let mut spec = sample().spec;
        spec.sla.percentile = 100.0;
        spec.trace_source.otlp = Some(Otlp {});
        spec.argument_tags[0].buckets = vec![3.0, 1.0];
        spec.services[1].max_replicas = 1;
        spec.services[1].scale_target_ref.kind = "Pod".into();
        spec.entry_service = "nope".into();
        spec.staleness.hold_seconds = 9999;
        let err = spec.validate().unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.sla.percentile",
                "spec.traceSource",
                "spec.argumentTags[0].buckets",
                "spec.services[1].scaleTargetRef.kind",
                "spec.services[1].maxReplicas",
                "spec.entryService",
                "spec.staleness.holdSeconds",
            ]
        );
        assert!(err.to_string().contains("spec.services[1].maxReplicas: must be at least minReplicas"));
    }

    #[test]
    fn crd_has_names_columns_and_camel_case_schema() {
        let crd = serde_json::to_value(DermApp::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "dermapps.derm.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "dapp");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["SLA-ms", "Percentile", "Load-rps", "P(SLA)", "Ready", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        for field in ["sla", "entryService", "traceSource", "argumentTags", "services", "intervalSeconds", "staleness"]
        {
            assert!(spec.get(field).is_some(), "schema lacks spec.{field}");
        }
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in ["conditions", "observedLoadRps", "desiredReplicas", "lastSolveTime", "callAffinity"] {
            assert!(status.get(field).is_some(), "schema lacks status.{field}");
        }
    }
}
