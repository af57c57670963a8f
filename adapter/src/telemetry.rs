//! The controller's own metrics on the admin registry: traces received and rejected by
//! reason, the time of each interval's work, and the published count next to what each HPA
//! decided (a gap that persists means the HPA does not land on Derm's count: see the audit),
//! and each service's trust region (the highest per-container load a plan may give it: when
//! the published count sits at `calls / trusted load`, the region, not the SLA, set it).
//!
//! Label sets are bounded: sources and reasons are fixed lists, `app` and `service` come from
//! the DermApps (a handful of series per configured service).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of received traces.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `otlp` (the receiver) or `jaeger` (a poller).
    pub source: String,
}

/// Labels of rejected records: the decoder's reason ([`derm_core::trace::Reason`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    pub reason: String,
}

/// Labels of per-app series (`app` is `namespace/name`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

/// Labels of per-service series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub app: String,
    pub service: String,
}

type Seconds = Family<AppLabels, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LoopMetrics {
    received: Family<SourceLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    interval: Seconds,
    published: Family<ServiceLabels, Gauge>,
    hpa_desired: Family<ServiceLabels, Gauge>,
    trusted: Family<ServiceLabels, Gauge<f64, AtomicU64>>,
}

impl Default for LoopMetrics {
    fn default() -> Self {
        LoopMetrics {
            received: Family::default(),
            rejected: Family::default(),
            interval: Family::new_with_constructor(seconds),
            published: Family::default(),
            hpa_desired: Family::default(),
            trusted: Family::default(),
        }
    }
}

impl LoopMetrics {
    /// Registers `derm_adapter_traces_received_total`, `derm_adapter_traces_rejected_total`,
    /// `derm_adapter_interval_seconds`, `derm_adapter_published_replicas`,
    /// `derm_adapter_hpa_desired_replicas` and `derm_adapter_trusted_load_rps`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        let sub = registry.sub_registry_with_prefix("derm_adapter");
        sub.register("traces_received", "Traces decoded, by source", this.received.clone());
        sub.register("traces_rejected", "Records skipped by the decoder, by source and reason", this.rejected.clone());
        sub.register(
            "interval_seconds",
            "Time of one interval's work per DermApp: ingest, profile refits, prediction, solve",
            this.interval.clone(),
        );
        sub.register("published_replicas", "Desired replicas Derm last published", this.published.clone());
        sub.register(
            "hpa_desired_replicas",
            "The HPA's own desired replicas for the same workload",
            this.hpa_desired.clone(),
        );
        sub.register(
            "trusted_load_rps",
            "Highest per-container load (requests/s) a plan may give the service: its trust region",
            this.trusted.clone(),
        );
        this
    }

    /// A decoded batch: `traces` kept, `skips` counted by reason.
    pub fn decoded(&self, source: &str, traces: usize, skips: &derm_core::trace::Skips) {
        self.received.get_or_create(&SourceLabels { source: source.into() }).inc_by(traces as u64);
        for (reason, n, _) in skips.iter() {
            let labels = RejectLabels { source: source.into(), reason: reason.as_str().into() };
            self.rejected.get_or_create(&labels).inc_by(n);
        }
    }

    /// One interval's work for `app` took `seconds`.
    pub fn interval(&self, app: &str, seconds: f64) {
        self.interval.get_or_create(&AppLabels { app: app.into() }).observe(seconds);
    }

    /// Derm published `replicas` for `app`'s `service`.
    pub fn published(&self, app: &str, service: &str, replicas: u32) {
        self.published
            .get_or_create(&ServiceLabels { app: app.into(), service: service.into() })
            .set(i64::from(replicas));
    }

    /// `app`'s `service` is trusted up to `rps` per container.
    pub fn trusted(&self, app: &str, service: &str, rps: f64) {
        self.trusted.get_or_create(&ServiceLabels { app: app.into(), service: service.into() }).set(rps);
    }

    /// The HPA scaling `app`'s `service` wants `replicas`.
    pub fn hpa_desired(&self, app: &str, service: &str, replicas: i32) {
        self.hpa_desired
            .get_or_create(&ServiceLabels { app: app.into(), service: service.into() })
            .set(i64::from(replicas));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use derm_core::trace::{Reason, Skips};

    #[test]
    fn series_are_exposed_with_their_labels() {
        let mut registry = Registry::default();
        let m = LoopMetrics::register(&mut registry);
        let mut skips = Skips::default();
        skips.add(Reason::Orphan, || "x".into());
        skips.add(Reason::Orphan, || "y".into());
        m.decoded("otlp", 7, &skips);
        m.interval("shop/ticket", 0.02);
        m.published("shop/ticket", "seat", 4);
        m.hpa_desired("shop/ticket", "seat", 3);
        m.trusted("shop/ticket", "seat", 16.5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for want in [
            r#"derm_adapter_traces_received_total{source="otlp"} 7"#,
            r#"derm_adapter_traces_rejected_total{source="otlp",reason="orphan"} 2"#,
            r#"derm_adapter_interval_seconds_count{app="shop/ticket"} 1"#,
            r#"derm_adapter_published_replicas{app="shop/ticket",service="seat"} 4"#,
            r#"derm_adapter_hpa_desired_replicas{app="shop/ticket",service="seat"} 3"#,
            r#"derm_adapter_trusted_load_rps{app="shop/ticket",service="seat"} 16.5"#,
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
