//! The extender's HTTP API: `POST /filter` and `POST /prioritize` (kube-scheduler's
//! `filterVerb` and `prioritizeVerb`), answered from memory only.
//!
//! Bad requests never panic: a filter request that cannot be decoded is answered 200 with
//! `Error` set (the protocol's place for it; kube-scheduler then fails or, with `ignorable`,
//! skips the extender); prioritize has no error field, so it answers 400 with the reason.
//! Bodies over the server's limit are 413. Every decision is logged with its explanation and
//! counted (see [`crate::metrics`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;

use crate::inflight::InFlight;
use crate::knowledge::{Knowledge, Store, Workload};
use crate::metrics::{Metrics, Verb};
use crate::plan::PlanStore;
use crate::score::{self, Config, Counts, Outcome, Scored};
use crate::wire::{self, HostPriority, Pod, Request};

/// What the handlers share.
#[derive(Debug)]
pub struct Context {
    /// Current knowledge.
    pub store: Arc<Store>,
    /// Pods scored and not yet bound.
    pub inflight: Arc<InFlight>,
    /// The placement plan.
    pub plans: Arc<PlanStore>,
    /// Scoring configuration.
    pub config: Config,
    /// Log and count decisions, but answer neutral scores and filter nothing.
    pub shadow: bool,
    /// Largest candidate list accepted.
    pub max_nodes: usize,
    /// Metrics.
    pub metrics: Metrics,
}

/// The router.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new().route("/filter", post(filter)).route("/prioritize", post(prioritize)).with_state(ctx)
}

fn workload_of(pod: &Pod) -> Option<Workload> {
    let m = &pod.metadata;
    let owners = m.owner_references.iter().map(|o| (o.kind.as_str(), o.name.as_str(), o.controller.unwrap_or(false)));
    Workload::of_pod(&m.namespace, m.labels.get("pod-template-hash").map(String::as_str), owners)
}

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name)
}

/// Classifies the pod: its service (if any) and whether Derm has an opinion.
fn classify(ctx: &Context, k: &Knowledge, pod: &Pod) -> (Option<usize>, Outcome) {
    let service = workload_of(pod).and_then(|w| k.service_of(&w));
    (service, score::classify(k, service, &ctx.config, SystemTime::now()))
}

/// Scores `names` for `pod` (with in-flight counts), or neutral.
pub fn decide(ctx: &Context, k: &Knowledge, pod: &Pod, names: &[impl AsRef<str>]) -> Scored {
    let (service, outcome) = classify(ctx, k, pod);
    let Some(s) = service.filter(|_| outcome == Outcome::Scored) else {
        return score::neutral(outcome, service, names.len());
    };
    let entry = &k.services[s];
    let mut keys: Vec<&Arc<str>> = vec![&entry.key];
    keys.extend(entry.peers.iter().map(|(j, _)| &k.services[*j].key));
    let mut maps = ctx.inflight.counts(&keys, Instant::now()).into_iter();
    let own = maps.next().unwrap_or_default();
    let planned = ctx.plans.load().by_service.get(&entry.key).cloned().unwrap_or_default();
    let counts = Counts { own, peers: maps.collect(), planned };
    score::score(k, s, names, &counts, &ctx.config)
}

async fn prioritize(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    let t0 = Instant::now();
    let (code, response) = match prioritize_body(&ctx, &body) {
        Ok(reply) => (StatusCode::OK, axum::Json(reply).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "prioritize: bad request");
            (StatusCode::BAD_REQUEST, (StatusCode::BAD_REQUEST, e.to_string()).into_response())
        }
    };
    ctx.metrics.observe_request(Verb::Prioritize, code.as_u16(), t0.elapsed());
    response
}

/// The prioritize reply for a request body (the handler minus HTTP; benchmarks call it).
pub fn prioritize_body<'a>(ctx: &Context, body: &'a [u8]) -> Result<Vec<HostPriority<'a>>, wire::Error> {
    let req = Request::decode(body, ctx.max_nodes)?;
    let k = ctx.store.load();
    let scored = decide(ctx, &k, &req.pod, &req.names);
    ctx.metrics.observe_decision(Verb::Prioritize, scored.outcome, ctx.shadow);
    if let (Some(best), Some(s)) = (scored.best(), scored.service) {
        let worst = scored.scores.iter().min().map_or(0, |s| s.get());
        ctx.metrics.observe_preference(scored.scores[best].get(), worst);
        let t = scored.terms[best];
        tracing::info!(
            pod = pod_name(&req.pod),
            service = &*k.services[s].key,
            shadow = ctx.shadow,
            candidates = req.names.len(),
            node = &*req.names[best],
            score = scored.scores[best].get(),
            worst,
            affinity = t.affinity,
            spread = t.spread,
            headroom = t.headroom,
            plan = t.plan,
            "prioritize: preferred node"
        );
        if !ctx.shadow {
            let uid = if req.pod.metadata.uid.is_empty() { pod_name(&req.pod) } else { req.pod.metadata.uid.clone() };
            ctx.inflight.record(&uid, k.services[s].key.clone(), Arc::from(&*req.names[best]), Instant::now());
        }
    } else {
        tracing::debug!(pod = pod_name(&req.pod), outcome = ?scored.outcome, "prioritize: neutral");
    }
    let neutral = ctx.shadow || scored.outcome != Outcome::Scored;
    Ok(req
        .names
        .into_iter()
        .zip(&scored.scores)
        .map(|(host, s)| HostPriority { host, score: if neutral { score::Score::NEUTRAL.get() } else { s.get() } })
        .collect())
}

async fn filter(State(ctx): State<Arc<Context>>, body: Bytes) -> Response {
    let t0 = Instant::now();
    let response = filter_body(&ctx, &body);
    ctx.metrics.observe_request(Verb::Filter, 200, t0.elapsed());
    response
}

/// The filter reply (always 200; decoding errors go into `Error`).
pub fn filter_body(ctx: &Context, body: &[u8]) -> Response {
    let req = match Request::decode(body, ctx.max_nodes) {
        Ok(req) => req,
        Err(e) => {
            tracing::warn!(error = %e, "filter: bad request");
            return axum::Json(wire::filter_error(e.to_string())).into_response();
        }
    };
    let k = ctx.store.load();
    let (service, outcome) = classify(ctx, &k, &req.pod);
    ctx.metrics.observe_decision(Verb::Filter, outcome, ctx.shadow);
    let reasons = match service {
        Some(s) if outcome == Outcome::Scored => score::filter(&k, s, &req.names, &ctx.config),
        _ => vec![None; req.names.len()],
    };
    let failed: BTreeMap<String, String> =
        req.names.iter().zip(&reasons).filter_map(|(n, r)| Some((n.to_string(), r.clone()?))).collect();
    if !failed.is_empty() {
        ctx.metrics.observe_filtered(failed.len());
        tracing::info!(
            pod = pod_name(&req.pod),
            shadow = ctx.shadow,
            candidates = req.names.len(),
            failed = failed.len(),
            first = failed.iter().next().map(|(n, r)| format!("{n}: {r}")),
            "filter: nodes fail a hard limit"
        );
    }
    if ctx.shadow {
        let keep = vec![true; req.names.len()];
        return axum::Json(req.filter_reply(&keep, BTreeMap::new())).into_response();
    }
    let keep: Vec<bool> = reasons.iter().map(Option::is_none).collect();
    axum::Json(req.filter_reply(&keep, failed)).into_response()
}

#[cfg(test)]
mod tests;
