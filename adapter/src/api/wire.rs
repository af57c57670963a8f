//! Wire types of external.metrics.k8s.io/v1beta1 and custom.metrics.k8s.io/v1beta2, mirroring
//! `k8s.io/metrics/pkg/apis/*` field for field (camelCase). Pinned by golden tests in
//! `tests/api.rs`. Discovery and `Status` use k8s-openapi's types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ListMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// `ExternalMetricValueList`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValueList {
    /// Always `ExternalMetricValueList`.
    pub kind: &'static str,
    /// Always `external.metrics.k8s.io/v1beta1`.
    pub api_version: &'static str,
    /// Empty list metadata.
    pub metadata: ListMeta,
    /// The values.
    pub items: Vec<ExternalMetricValue>,
}

impl ExternalMetricValueList {
    /// A list of `items`.
    pub fn new(items: Vec<ExternalMetricValue>) -> Self {
        Self {
            kind: "ExternalMetricValueList",
            api_version: "external.metrics.k8s.io/v1beta1",
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// `ExternalMetricValue`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    /// Metric name.
    pub metric_name: String,
    /// Labels of the series (always present, may be empty).
    pub metric_labels: BTreeMap<String, String>,
    /// When the value was computed (RFC 3339, seconds).
    pub timestamp: Time,
    /// Window in seconds, when the value is an aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<i64>,
    /// A Kubernetes quantity; integers here.
    pub value: String,
}

/// `MetricValueList` of custom.metrics.k8s.io/v1beta2.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValueList {
    /// Always `MetricValueList`.
    pub kind: &'static str,
    /// Always `custom.metrics.k8s.io/v1beta2`.
    pub api_version: &'static str,
    /// Empty list metadata.
    pub metadata: ListMeta,
    /// The values.
    pub items: Vec<MetricValue>,
}

impl MetricValueList {
    /// A list of `items`.
    pub fn new(items: Vec<MetricValue>) -> Self {
        Self {
            kind: "MetricValueList",
            api_version: "custom.metrics.k8s.io/v1beta2",
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// `MetricValue` of custom.metrics.k8s.io/v1beta2.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    /// The object the metric describes.
    pub described_object: ObjectReference,
    /// The metric.
    pub metric: MetricIdentifier,
    /// When the value was computed.
    pub timestamp: Time,
    /// Window in seconds, when the value is an aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// A Kubernetes quantity.
    pub value: String,
}

/// `MetricIdentifier`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricIdentifier {
    /// Metric name.
    pub name: String,
    /// The metric label selector of the request, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A `metav1.Time` (whole seconds) from a `SystemTime`.
pub fn time(t: SystemTime) -> Time {
    Time(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}
