//! The admin port (plain HTTP, for the kubelet and Prometheus): `/livez`, `/readyz`, `/metrics`.
//!
//! Readiness ([`Health`]) is false until the value source has loaded once (or a value is
//! published), false when every value has expired, and false from the first shutdown signal
//! on, so endpoints drain before the server stops. Metrics ([`Metrics`]) use bounded label
//! sets only.
//!
//! The controller's series (traces received and rejected, interval time, published count vs
//! the HPA's desired replicas) are [`crate::telemetry`]'s, on the same registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics::{Freshness, Store};

/// Routes of the metrics API, as a bounded label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Route {
    /// external.metrics.k8s.io discovery.
    ExternalDiscovery,
    /// An external metric.
    ExternalMetric,
    /// custom.metrics.k8s.io discovery.
    CustomDiscovery,
    /// An object metric.
    ObjectMetric,
    /// OpenAPI documents.
    OpenApi,
    /// Health probes.
    Health,
    /// Anything else (404, 405).
    Other,
}

/// Labels of request counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route.
    pub route: Route,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of request latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route.
    pub route: Route,
}

/// Labels of published series counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FreshnessLabels {
    /// `fresh`, `stale` or `expired`.
    pub freshness: FreshnessLabel,
}

/// [`Freshness`] as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FreshnessLabel {
    /// Within the hold time.
    Fresh,
    /// Served, but older than the hold time.
    Stale,
    /// Not served.
    Expired,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The adapter's own metrics. Clones share the same series.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    series: Family<FreshnessLabels, Gauge>,
    data_age: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. about 1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Metrics {
    /// Registers the metrics under `derm_adapter_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self {
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
            series: Family::default(),
            data_age: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("derm_adapter");
        sub.register("api_requests", "Metrics API requests by route and status code", this.requests.clone());
        sub.register("api_request_duration_seconds", "Metrics API request latency by route", this.latency.clone());
        sub.register("published_series", "Published desired-replica series by freshness", this.series.clone());
        sub.register("data_age_seconds", "Age of the oldest published value", this.data_age.clone());
        this
    }

    /// Records one request.
    pub fn observe_request(&self, route: Route, code: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route, code }).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    /// Refreshes the published-series gauges from the store (called at scrape time).
    pub fn observe_store(&self, store: &Store, now: SystemTime) {
        let snapshot = store.load();
        let (mut fresh, mut stale, mut expired) = (0, 0, 0);
        for (_, v) in snapshot.iter() {
            match v.freshness(now) {
                Freshness::Fresh => fresh += 1,
                Freshness::Stale => stale += 1,
                Freshness::Expired => expired += 1,
            }
        }
        for (freshness, n) in
            [(FreshnessLabel::Fresh, fresh), (FreshnessLabel::Stale, stale), (FreshnessLabel::Expired, expired)]
        {
            self.series.get_or_create(&FreshnessLabels { freshness }).set(n);
        }
        self.data_age.set(snapshot.max_age(now).unwrap_or_default().as_secs_f64());
    }
}

/// What was reloaded while serving, as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadSource {
    /// ConfigMap kube-system/extension-apiserver-authentication.
    AuthenticationConfigMap,
    /// The `--tls-cert`/`--tls-key` files.
    ServingCertificate,
}

/// Outcome of a reload, as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadResult {
    /// Applied.
    Applied,
    /// Rejected; the last good configuration stays.
    Rejected,
}

/// Labels of reload counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// What was reloaded.
    pub source: ReloadSource,
    /// Applied or rejected.
    pub result: ReloadResult,
}

/// Counts of live reloads (authentication ConfigMap, serving certificate). Clones share series.
#[derive(Debug, Clone, Default)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
}

impl ReloadMetrics {
    /// Registers `derm_adapter_reloads_total{source,result}`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self::default();
        let sub = registry.sub_registry_with_prefix("derm_adapter");
        sub.register("reloads", "Live reloads of trust and certificates by source and result", this.reloads.clone());
        this
    }

    /// Counts one reload.
    pub fn record(&self, source: ReloadSource, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { source, result }).inc();
    }

    /// Reloads counted so far for `source` with `result`.
    pub fn count(&self, source: ReloadSource, result: ReloadResult) -> u64 {
        self.reloads.get_or_create(&ReloadLabels { source, result }).get()
    }
}

/// Readiness of this replica.
#[derive(Debug)]
pub struct Health {
    store: Arc<Store>,
    shutting_down: AtomicBool,
    /// The value source has loaded once (DermApps listed, static file read): from then on an
    /// empty store is a real "nothing to publish", not "not loaded yet".
    synced: AtomicBool,
}

impl Health {
    /// Readiness over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, shutting_down: AtomicBool::new(false), synced: AtomicBool::new(false) }
    }

    /// Marks the value source as loaded once.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Marks the replica not ready for good (first shutdown signal).
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Ready, or why not.
    pub fn ready(&self, now: SystemTime) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        let snapshot = self.store.load();
        if snapshot.is_empty() {
            return if self.synced.load(Ordering::Relaxed) { Ok(()) } else { Err("no published values yet") };
        }
        if snapshot.iter().all(|(_, v)| v.freshness(now) == Freshness::Expired) {
            return Err("every published value has expired");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    registry: Arc<Registry>,
    metrics: Metrics,
    store: Arc<Store>,
    health: Arc<Health>,
}

/// The admin router. `registry` must already hold `metrics`.
pub fn router(registry: Arc<Registry>, metrics: Metrics, store: Arc<Store>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(AdminState { registry, metrics, store, health })
}

async fn readyz(State(st): State<AdminState>) -> Response {
    match st.health.ready(SystemTime::now()) {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn scrape(State(st): State<AdminState>) -> Response {
    st.metrics.observe_store(&st.store, SystemTime::now());
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &st.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Key, Snapshot, Staleness, Value};

    #[test]
    fn readiness_needs_data_and_drops_on_shutdown() {
        let store = Arc::new(Store::default());
        let health = Health::new(store.clone());
        let now = SystemTime::now();
        assert_eq!(health.ready(now), Err("no published values yet"));
        let value = |age: u64| Value {
            replicas: 2,
            timestamp: now - Duration::from_secs(age),
            staleness: Staleness { hold: Duration::from_secs(10), error_after: Duration::from_secs(60) },
            scale_target: None,
        };
        store.publish(Snapshot::new([(Key::new("n", "a", "s"), value(120))]));
        assert_eq!(health.ready(now), Err("every published value has expired"));
        store.publish(Snapshot::new([(Key::new("n", "a", "s"), value(120)), (Key::new("n", "a", "t"), value(30))]));
        assert_eq!(health.ready(now), Ok(()));
        health.shut_down();
        assert_eq!(health.ready(now), Err("shutting down"));
    }

    #[test]
    fn scrape_reports_requests_and_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.observe_request(Route::ExternalMetric, 200, Duration::from_millis(1));
        let store = Store::new(Snapshot::new([(
            Key::new("n", "a", "s"),
            Value { replicas: 1, timestamp: SystemTime::now(), staleness: Staleness::NEVER, scale_target: None },
        )]));
        metrics.observe_store(&store, SystemTime::now());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"derm_adapter_api_requests_total{route="ExternalMetric",code="200"} 1"#), "{text}");
        assert!(text.contains(r#"derm_adapter_published_series{freshness="Fresh"} 1"#), "{text}");
        assert!(text.contains("derm_adapter_data_age_seconds"), "{text}");
    }
}
