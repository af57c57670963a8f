//! The aggregated metrics API: an axum [`Router`] served by [`crate::server`].
//!
//! | route | answer |
//! |---|---|
//! | `GET /apis/external.metrics.k8s.io/v1beta1` | APIResourceList with `derm_desired_replicas` (never empty) |
//! | `GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/derm_desired_replicas?labelSelector=` | ExternalMetricValueList, one integer item per matching (app, service) |
//! | `GET /apis/custom.metrics.k8s.io/v1beta2` | APIResourceList of object metrics on scale targets |
//! | `GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/derm_desired_replicas` | MetricValueList with one item |
//! | `GET /openapi/v2`, `/openapi/v3` | minimal documents |
//! | `GET /healthz`, `/livez`, `/readyz` | `ok`, or 503 with the reason (unauthenticated) |
//! | anything else, `/apis` included | 404 `Status` (kube-apiserver answers `/apis` itself) |
//!
//! Metric GETs are authorized per user ([`crate::authz`], when configured): 403 `Status`
//! naming the user, verb and resource, or 503 when kube-apiserver cannot be asked. Discovery
//! and OpenAPI need authentication only (like the built-in `system:discovery` role).
//!
//! With an upstream ([`crate::upstream`], `serve --upstream URL`), metric GETs of any other name
//! are forwarded to the adapter Derm replaced, after the same authentication and authorization
//! as Derm's own metric (the forward happens inside the handlers, behind both), and discovery
//! lists the upstream's resources after Derm's. Root-scoped object metrics
//! (`/apis/custom.metrics.k8s.io/v1beta2/{resource}/{name}/{metric}`) and namespace metrics
//! (`.../namespaces/{ns}/metrics/{metric}`) exist only to be forwarded; Derm has none.
//!
//! Labels are `app` (DermApp name) and `service` (tracing name); selectors use the full
//! Kubernetes grammar ([`crate::selector`]). Answers come from the in-memory snapshot only.
//! A matching value older than its app's error threshold turns the whole answer into 503, so
//! the HPA keeps its count instead of acting on old data.

mod error;
pub mod wire;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, MatchedPath, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, Uri, header};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
use serde::Deserialize;
use tracing::Instrument;

pub use self::error::Error;
use self::wire::{ExternalMetricValue, ExternalMetricValueList, MetricIdentifier, MetricValue, MetricValueList};
use crate::admin::{Health, Metrics, Route};
use crate::auth::{Peer, Policy, Rejection, User};
use crate::authz::{Attributes, Refusal};
use crate::crd::{SCALE_TARGET_KINDS, ScaleTargetRef};
use crate::metrics::{Freshness, Key, Store, Value};
use crate::selector::Selector;
use crate::upstream::{self, Upstream};

/// The one metric Derm publishes.
pub const METRIC: &str = "derm_desired_replicas";
/// Group-version of external metrics.
pub const EXTERNAL_GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
/// Group-version of custom (object) metrics.
pub const CUSTOM_GROUP_VERSION: &str = "custom.metrics.k8s.io/v1beta2";

/// What the handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Published values.
    pub store: Arc<Store>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Who may call.
    pub policy: Arc<Policy>,
    /// Request metrics.
    pub metrics: Metrics,
    /// The adapter Derm replaced, if any: other metric names are forwarded to it.
    pub upstream: Option<Arc<Upstream>>,
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/apis/external.metrics.k8s.io/v1beta1", get(external_discovery))
        .route("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}", get(external_metric))
        .route("/apis/custom.metrics.k8s.io/v1beta2", get(custom_discovery))
        .route(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/{resource}/{name}/{metric}",
            get(object_metric),
        )
        .route("/apis/custom.metrics.k8s.io/v1beta2/{resource}/{name}/{metric}", get(root_object_metric))
        .route("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/metrics/{metric}", get(namespace_metric))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(livez))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

fn route_of(path: Option<&str>) -> Route {
    match path {
        Some("/apis/external.metrics.k8s.io/v1beta1") => Route::ExternalDiscovery,
        Some("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}") => Route::ExternalMetric,
        Some("/apis/custom.metrics.k8s.io/v1beta2") => Route::CustomDiscovery,
        Some(p) if p.starts_with("/apis/custom.metrics.k8s.io/v1beta2/") => Route::ObjectMetric,
        Some(p) if p.starts_with("/openapi/") => Route::OpenApi,
        Some("/healthz" | "/livez" | "/readyz") => Route::Health,
        _ => Route::Other,
    }
}

/// Request span, latency and count by route and code.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_of(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
    let span =
        tracing::debug_span!("request", method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty);
    let start = Instant::now();
    let resp = next.run(req).instrument(span).await;
    st.metrics.observe_request(route, resp.status().as_u16(), start.elapsed());
    resp
}

async fn authenticate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let result = st.policy.authenticate(req.extensions().get::<Peer>(), req.headers()).await;
    match result {
        Ok(user) => {
            tracing::Span::current().record("user", user.name.as_str());
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(r @ Rejection::NameNotAllowed { .. }) => Error::Forbidden(r.to_string()).into_response(),
        Err(r @ Rejection::Unavailable(_)) => Error::Unavailable(r.to_string()).into_response(),
        Err(r) => Error::Unauthorized(r.to_string()).into_response(),
    }
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.health.ready(SystemTime::now()) {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn not_found(req: Request) -> Error {
    Error::NotFound(format!("the server could not find the requested resource {:?}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Error {
    Error::MethodNotAllowed(format!("method {} is not supported: the metrics API is read-only", req.method()))
}

fn resource(name: String, kind: &str) -> APIResource {
    APIResource { name, kind: kind.into(), namespaced: true, verbs: vec!["get".into()], ..APIResource::default() }
}

/// Derm's `resources` on `group_version`, followed by the upstream's (if any) not named alike.
async fn discovery(st: &AppState, group_version: &str, resources: Vec<APIResource>) -> Json<APIResourceList> {
    let resources = match &st.upstream {
        Some(up) => upstream::merge(resources, up.resources(group_version).await),
        None => resources,
    };
    Json(APIResourceList { group_version: group_version.into(), resources })
}

async fn external_discovery(State(st): State<AppState>) -> Json<APIResourceList> {
    discovery(&st, EXTERNAL_GROUP_VERSION, vec![resource(METRIC.into(), "ExternalMetricValueList")]).await
}

async fn custom_discovery(State(st): State<AppState>) -> Json<APIResourceList> {
    let resources = SCALE_TARGET_KINDS
        .iter()
        .filter_map(|kind| ScaleTargetRef { kind: (*kind).into(), name: String::new() }.resource())
        .map(|r| resource(format!("{r}/{METRIC}"), "MetricValueList"))
        .collect();
    discovery(&st, CUSTOM_GROUP_VERSION, resources).await
}

async fn openapi_v2() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "swagger": "2.0",
        "info": {"title": "derm-adapter", "version": env!("CARGO_PKG_VERSION")},
        "paths": {},
    }))
}

async fn openapi_v3() -> Json<serde_json::Value> {
    Json(serde_json::json!({"paths": {}}))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(rename = "labelSelector", default)]
    label_selector: Option<String>,
    #[serde(rename = "metricLabelSelector", default)]
    metric_label_selector: Option<String>,
}

fn selector(param: &str, text: Option<&str>) -> Result<Selector, Error> {
    Selector::parse(text.unwrap_or_default()).map_err(|e| Error::BadRequest(format!("invalid {param}: {e}")))
}

fn labels<'a>(key: &'a Key, label: &str) -> Option<&'a str> {
    match label {
        "app" => Some(&key.app),
        "service" => Some(&key.service),
        _ => None,
    }
}

fn expired(key: &Key, value: &Value, now: SystemTime) -> Error {
    Error::Unavailable(format!(
        "{METRIC} for app {:?} service {:?} in namespace {:?} is stale: computed {}s ago, limit {}s; \
         the HPA keeps its current replica count",
        key.app,
        key.service,
        key.namespace,
        value.age(now).as_secs(),
        value.staleness.error_after.as_secs()
    ))
}

/// Asks the policy's authorizer, if any, whether the authenticated user may do `attributes`.
async fn authorize(st: &AppState, user: Option<&User>, attributes: Attributes) -> Result<(), Error> {
    let (Some(authorizer), Some(user)) = (st.policy.authorizer(), user) else { return Ok(()) };
    authorizer.authorize(user, attributes).await.map_err(|refusal| match refusal {
        Refusal::Forbidden { .. } => Error::Forbidden(refusal.to_string()),
        Refusal::Unavailable { .. } => Error::Unavailable(refusal.to_string()),
    })
}

fn unknown_metric(metric: &str) -> Error {
    Error::NotFound(format!("the server could not find the metric {metric:?}: derm-adapter serves only {METRIC}"))
}

/// A metric Derm does not serve, after authorization: the upstream's answer, or 404.
async fn other_metric(st: &AppState, metric: &str, uri: &Uri, headers: &HeaderMap) -> Response {
    match &st.upstream {
        Some(up) => {
            let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            up.forward(path, headers.get(header::ACCEPT)).await
        }
        None => unknown_metric(metric).into_response(),
    }
}

async fn external_metric(
    State(st): State<AppState>,
    user: Option<Extension<User>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path((namespace, metric)) = path.map_err(|e| Error::BadRequest(e.body_text()))?;
    authorize(&st, user.as_deref(), Attributes::external(&namespace, &metric)).await?;
    if metric != METRIC {
        // The query is the upstream's to judge.
        return Ok(other_metric(&st, &metric, &uri, &headers).await);
    }
    let Query(params) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let selector = selector("labelSelector", params.label_selector.as_deref())?;
    let snapshot = st.store.load();
    let now = SystemTime::now();
    let mut items = Vec::new();
    for (key, value) in snapshot.namespace(&namespace) {
        if !selector.matches(|label| labels(key, label)) {
            continue;
        }
        if value.freshness(now) == Freshness::Expired {
            return Err(expired(key, value, now));
        }
        items.push(ExternalMetricValue {
            metric_name: METRIC.into(),
            metric_labels: [("app".into(), key.app.clone()), ("service".into(), key.service.clone())].into(),
            timestamp: wire::time(value.timestamp),
            window: None,
            value: value.replicas.to_string(),
        });
    }
    Ok(Json(ExternalMetricValueList::new(items)).into_response())
}

async fn object_metric(
    State(st): State<AppState>,
    user: Option<Extension<User>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path((namespace, resource, name, metric)) = path.map_err(|e| Error::BadRequest(e.body_text()))?;
    authorize(&st, user.as_deref(), Attributes::object(&namespace, &resource, &name, &metric)).await?;
    if metric != METRIC {
        return Ok(other_metric(&st, &metric, &uri, &headers).await);
    }
    let Query(params) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    // `deployments` and `deployments.apps` name the same resource.
    let resource = if resource.contains('.') { resource } else { format!("{resource}.apps") };
    let selector = selector("metricLabelSelector", params.metric_label_selector.as_deref())?;
    let snapshot = st.store.load();
    let now = SystemTime::now();
    // Two apps naming one workload is a misconfiguration; serve the larger count, never the smaller.
    let mut found: Option<(&Key, &Value)> = None;
    for (key, value) in snapshot.namespace(&namespace) {
        let Some(target) = &value.scale_target else { continue };
        if target.name != name || target.resource() != Some(resource.as_str()) || !selector.matches(|l| labels(key, l))
        {
            continue;
        }
        if value.freshness(now) == Freshness::Expired {
            return Err(expired(key, value, now));
        }
        if found.is_none_or(|(_, v)| v.replicas < value.replicas) {
            found = Some((key, value));
        }
    }
    let Some((_, value)) = found else {
        return Err(Error::NotFound(format!("{resource} {name:?} in namespace {namespace:?} has no {METRIC}")));
    };
    let kind = value.scale_target.as_ref().map(|t| t.kind.clone());
    Ok(Json(MetricValueList::new(vec![MetricValue {
        described_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind,
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectReference::default()
        },
        metric: MetricIdentifier { name: METRIC.into(), selector: None },
        timestamp: wire::time(value.timestamp),
        window_seconds: None,
        value: value.replicas.to_string(),
    }]))
    .into_response())
}

/// An object metric on a cluster-scoped object (e.g. a node): the upstream's, if any.
async fn root_object_metric(
    State(st): State<AppState>,
    user: Option<Extension<User>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, Error> {
    let Path((resource, name, metric)) = path.map_err(|e| Error::BadRequest(e.body_text()))?;
    authorize(&st, user.as_deref(), Attributes::object("", &resource, &name, &metric)).await?;
    if metric == METRIC {
        return Err(Error::NotFound(format!("{METRIC} exists only on namespaced scale targets, not on {resource}")));
    }
    Ok(other_metric(&st, &metric, &uri, &headers).await)
}

/// A metric of a namespace itself (`.../namespaces/{ns}/metrics/{metric}`): the upstream's, if any.
async fn namespace_metric(
    State(st): State<AppState>,
    user: Option<Extension<User>>,
    uri: Uri,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Error> {
    let Path((namespace, metric)) = path.map_err(|e| Error::BadRequest(e.body_text()))?;
    // As kube-apiserver's request-info parser reads this path: `get` of resource `metrics`.
    let attributes = Attributes {
        verb: "get",
        resource: "metrics".into(),
        subresource: String::new(),
        name: metric.clone(),
        ..Attributes::object(&namespace, "", "", "")
    };
    authorize(&st, user.as_deref(), attributes).await?;
    if metric == METRIC {
        return Err(Error::NotFound(format!("{METRIC} exists only on scale targets, not on namespaces")));
    }
    Ok(other_metric(&st, &metric, &uri, &headers).await)
}
