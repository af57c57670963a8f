//! The extender's own metrics (prometheus-client, bounded labels) and the admin router:
//! `/livez`, `/readyz` (knowledge loaded and not shutting down), `/metrics`.

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
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

use crate::inflight::InFlight;
use crate::knowledge::Store;
use crate::score::Outcome;

/// Extender verbs, as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Verb {
    /// `POST /filter`.
    Filter,
    /// `POST /prioritize`.
    Prioritize,
}

/// Labels of request counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The verb.
    pub verb: Verb,
    /// HTTP status code (200 also for a filter reply carrying `Error`).
    pub code: u16,
}

/// Labels of decisions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The verb.
    pub verb: Verb,
    /// Scored, NotDerm or Stale.
    pub outcome: Outcome,
    /// Whether `--shadow` kept the decision out of the reply.
    pub shadow: Mode,
}

/// `--shadow` as a label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Mode {
    /// Decisions reach kube-scheduler.
    Active,
    /// Decisions are logged only.
    Shadow,
}

/// Labels with the verb only.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// The verb.
    pub verb: Verb,
}

type HistogramFamily = Family<VerbLabels, Histogram, fn() -> Histogram>;

/// Metrics; clones share the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    decisions: Family<DecisionLabels, Counter>,
    filtered: Counter,
    preferred_score: Histogram,
    preferred_margin: Histogram,
    inflight: Gauge,
    knowledge_age: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 10 µs .. about 80 ms.
    Histogram::new(exponential_buckets(0.00001, 2.0, 14))
}

impl Metrics {
    /// Registers the metrics under `derm_extender_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let this = Self {
            requests: Family::default(),
            latency: HistogramFamily::new_with_constructor(latency_histogram),
            decisions: Family::default(),
            filtered: Counter::default(),
            preferred_score: Histogram::new(linear_buckets(0.0, 1.0, 11)),
            preferred_margin: Histogram::new(linear_buckets(0.0, 1.0, 11)),
            inflight: Gauge::default(),
            knowledge_age: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("derm_extender");
        sub.register("requests", "Extender requests by verb and HTTP status", this.requests.clone());
        sub.register("request_duration_seconds", "Extender request handling time by verb", this.latency.clone());
        sub.register("decisions", "Decisions by verb, outcome and mode", this.decisions.clone());
        sub.register(
            "filtered_nodes",
            "Candidate nodes failed by a hard limit (or that would be, in shadow mode)",
            this.filtered.clone(),
        );
        sub.register(
            "preferred_score",
            "Score of the node Derm rated best, per scored pod",
            this.preferred_score.clone(),
        );
        sub.register(
            "preferred_margin",
            "Best score minus the worst candidate's, per scored pod",
            this.preferred_margin.clone(),
        );
        sub.register("inflight_pods", "Pods scored and not yet seen bound", this.inflight.clone());
        sub.register("knowledge_age_seconds", "Age of the knowledge snapshot", this.knowledge_age.clone());
        this
    }

    /// Records one request.
    pub fn observe_request(&self, verb: Verb, code: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { verb, code }).inc();
        self.latency.get_or_create(&VerbLabels { verb }).observe(elapsed.as_secs_f64());
    }

    /// Records one decision.
    pub fn observe_decision(&self, verb: Verb, outcome: Outcome, shadow: bool) {
        let shadow = if shadow { Mode::Shadow } else { Mode::Active };
        self.decisions.get_or_create(&DecisionLabels { verb, outcome, shadow }).inc();
    }

    /// Records the best score and its margin over the worst candidate.
    pub fn observe_preference(&self, best: i64, worst: i64) {
        // Scores are 0..=10: exact in f64.
        self.preferred_score.observe(best as f64);
        self.preferred_margin.observe((best - worst) as f64);
    }

    /// Records nodes failed by the filter.
    pub fn observe_filtered(&self, n: usize) {
        self.filtered.inc_by(n as u64);
    }
}

/// Readiness: knowledge loaded, not shutting down.
#[derive(Debug, Default)]
pub struct Health {
    loaded: AtomicBool,
    shutting_down: AtomicBool,
}

impl Health {
    /// Marks the knowledge loaded (state file read, or caches synced).
    pub fn loaded(&self) {
        self.loaded.store(true, Ordering::Relaxed);
    }

    /// Marks the replica not ready for good.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Ready, or why not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            Err("shutting down")
        } else if !self.loaded.load(Ordering::Relaxed) {
            Err("knowledge not loaded yet")
        } else {
            Ok(())
        }
    }
}

/// What the admin router reads.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The registry holding [`Metrics`].
    pub registry: Arc<Registry>,
    /// The metrics.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Arc<Health>,
    /// Knowledge (for its age).
    pub store: Arc<Store>,
    /// In-flight pods (for their count).
    pub inflight: Arc<InFlight>,
}

/// The admin router.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(admin)
}

async fn readyz(State(a): State<Admin>) -> Response {
    match a.health.ready() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn scrape(State(a): State<Admin>) -> Response {
    a.metrics.inflight.set(i64::try_from(a.inflight.len()).unwrap_or(i64::MAX));
    let built = a.store.load().built;
    let age = built.and_then(|b| SystemTime::now().duration_since(b).ok()).unwrap_or_default();
    a.metrics.knowledge_age.set(age.as_secs_f64());
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &a.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
