//! The controller: an OTLP/HTTP receiver and the Jaeger pollers ([`crate::jaeger`]) feeding
//! one [`OnlineApp`] per DermApp, and the loop that ticks them every `intervalSeconds` and
//! writes the DermApp status that every replica serves ([`crate::dermapps`]).
//!
//! Receiver: `POST /v1/traces`, OTLP protobuf or JSON (detected from the bytes), optionally
//! gzip-encoded, answered with an empty `ExportTraceServiceResponse` (200) or 400 naming the
//! problem. A trace goes to every DermApp whose `entryService` served one of its spans. Each
//! request must carry whole traces (a collector's `groupbytrace` or tail-sampling processor
//! does that); spans of one trace split over requests are decoded as separate partial traces.
//! Pushed traces go only to apps whose source is `otlp`; a Jaeger-sourced app gets its traces
//! from its poller, and ticks only windows the poller has fetched completely.
//!
//! An app with `spec.callCounts` also gets a Prometheus poller ([`crate::prometheus`]); its
//! tick waits up to [`COUNT_WAIT_S`] past the interval's end for that interval's counts, so
//! the mix is fitted to the interval that just ended.
//!
//! With `--leader-elect`, only the replica holding the Lease ([`crate::leader`]) ticks, polls
//! and writes; the others drop their loops and pollers and wait. A new leader restores each
//! app's learned state from its ConfigMap ([`crate::state`]), written after every solve. A
//! follower answers exports with 503 (retryable in OTLP/HTTP), so a collector retries rather
//! than losing them; send OTLP to one controller replica (the chart's controller Deployment has
//! one, with the Recreate strategy; the Lease guards the overlap when a node is lost).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use derm_core::trace::{self, Skips, Trace};
use http::{HeaderMap, StatusCode, header};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::audit::Auditor;
use crate::conditions::{self, Kept};
use crate::crd::{DermApp, DermAppSpec};
use crate::leader::Lease;
use crate::online::{OnlineApp, Readiness, Tick};
use crate::telemetry::LoopMetrics;

/// Largest OTLP request body accepted (after decompression too).
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Seconds past an interval's end a tick waits for the call counts of that interval (at most
/// half the interval), then plans without them.
pub const COUNT_WAIT_S: i64 = 10;

/// One DermApp's loop.
#[derive(Debug)]
struct Slot {
    entry: String,
    online: OnlineApp,
    next_tick_s: i64,
    feed: Feed,
}

/// How a loop gets its traces.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feed {
    /// OTLP pushes to the receiver (`traceSource.otlp`).
    Pushed,
    /// A Jaeger poller (`traceSource.jaeger`): traces that started before `fetched_to_us`
    /// have all been fetched (`None`: no poll succeeded yet).
    Polled { fetched_to_us: Option<i64> },
}

/// Online loops by (namespace, name), shared by the receiver and the ticking loop.
#[derive(Debug, Clone, Default)]
pub struct Apps {
    slots: Arc<Mutex<BTreeMap<(String, String), Slot>>>,
    /// Whether this replica runs the loops (holds the Lease, or runs without election).
    leading: Arc<AtomicBool>,
    /// Trained mix models by DermApp (`--predictor-model`).
    models: crate::model::Models,
    metrics: LoopMetrics,
}

impl Apps {
    /// Loops that predict with `models` where one is given for their DermApp, reporting to
    /// `metrics`.
    pub fn new(models: crate::model::Models, metrics: LoopMetrics) -> Self {
        Apps { models, metrics, ..Apps::default() }
    }

    /// Whether exports are taken (this replica leads).
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Hands each trace to the apps whose entry service it reaches; returns how many traces
    /// found at least one app.
    pub fn route(&self, traces: Vec<Trace>) -> usize {
        let Ok(mut slots) = self.slots.lock() else { return 0 };
        let mut routed = 0;
        for t in traces {
            let mut used = false;
            for slot in slots.values_mut().filter(|s| s.feed == Feed::Pushed) {
                if t.spans.iter().any(|s| s.service == slot.entry) {
                    slot.online.add(t.clone());
                    used = true;
                }
            }
            routed += usize::from(used);
        }
        routed
    }

    /// Hands a poller's traces to its app's loop; `fetched_to_us`: traces that started
    /// before this have all been fetched.
    pub fn feed(&self, key: &(String, String), traces: Vec<Trace>, fetched_to_us: i64) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(key)
        {
            for t in traces {
                slot.online.add(t);
            }
            slot.feed = Feed::Polled { fetched_to_us: Some(fetched_to_us) };
        }
    }

    /// Hands a call-count poller's rates of `[start_s, start_s + duration_s)` to its app's
    /// loop.
    pub fn count(&self, key: &(String, String), start_s: i64, duration_s: u32, calls_rps: BTreeMap<String, f64>) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(key)
        {
            slot.online.add_counts(start_s, duration_s, calls_rps);
        }
    }

    /// Makes the set of loops match `apps` (edits keep learned state); returns the keys of
    /// the loops it created (empty: the caller restores their stored state).
    pub(crate) fn sync(&self, apps: &[DermApp], now_s: i64) -> Vec<(String, String)> {
        let Ok(mut slots) = self.slots.lock() else { return Vec::new() };
        let mut created = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        for app in apps {
            let key = (app.namespace().unwrap_or_default(), app.name_any());
            if let Err(e) = app.spec.validate() {
                tracing::warn!(app = %key.1, namespace = %key.0, error = %e, "invalid DermApp; not controlled");
                continue;
            }
            keep.insert(key.clone());
            if !slots.contains_key(&key) {
                created.push(key.clone());
            }
            let spec: DermAppSpec = app.spec.clone();
            let interval = i64::from(spec.interval_seconds.max(1));
            let feed =
                if spec.trace_source.jaeger.is_some() { Feed::Polled { fetched_to_us: None } } else { Feed::Pushed };
            slots
                .entry(key)
                .and_modify(|s| {
                    s.entry = spec.entry_service.clone();
                    s.online.set_spec(spec.clone());
                    // A new source starts unfetched (its poller restarts too).
                    if std::mem::discriminant(&s.feed) != std::mem::discriminant(&feed) {
                        s.feed = feed;
                    }
                })
                .or_insert_with_key(|key| {
                    let mut online = OnlineApp::new(spec.clone(), spec.trace_source.sampling_ratio);
                    if let Some(model) = self.models.0.get(key) {
                        online.set_model(model.clone());
                    }
                    Slot {
                        entry: spec.entry_service.clone(),
                        online,
                        next_tick_s: (now_s.div_euclid(interval) + 1) * interval,
                        feed,
                    }
                });
        }
        slots.retain(|k, _| keep.contains(k));
        created
    }

    /// Restores a loop's learned state.
    fn restore(&self, key: &(String, String), state: crate::online::State) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(key)
        {
            slot.online.restore(state);
        }
    }

    /// A loop's learned state, to store.
    fn state(&self, key: &(String, String)) -> Option<crate::online::State> {
        self.slots.lock().ok()?.get(key).map(|s| s.online.state())
    }

    /// Forgets every loop (this replica stopped leading: the leader owns the state now).
    fn clear(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.clear();
        }
    }

    /// Ticks every loop that is due; returns (namespace, name, tick). A polled app whose
    /// poller has not fetched the whole window to ingest holds (and keeps its traces).
    pub(crate) fn due(&self, now_s: i64) -> Vec<(String, String, Tick, Readiness)> {
        let Ok(mut slots) = self.slots.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for ((ns, name), slot) in slots.iter_mut() {
            if now_s < slot.next_tick_s {
                continue;
            }
            let interval = slot.online.interval_s();
            // The counts of the interval that just ended, for a while.
            let wait = COUNT_WAIT_S.min(i64::from(interval) / 2);
            let boundary = now_s.div_euclid(i64::from(interval)) * i64::from(interval);
            if slot.online.awaits_counts(boundary) && now_s < boundary + wait {
                continue;
            }
            slot.next_tick_s = (now_s.div_euclid(i64::from(interval)) + 1) * i64::from(interval);
            let cutoff_us = crate::online::cutoff_us(now_s, interval);
            let tick = match slot.feed {
                Feed::Polled { fetched_to_us } if fetched_to_us.is_none_or(|f| f < cutoff_us) => {
                    Tick::Hold("the trace source has not been fetched up to the end of the window yet".into())
                }
                _ => {
                    let started = std::time::Instant::now();
                    let tick = slot.online.tick(now_s, interval);
                    self.metrics.interval(&format!("{ns}/{name}"), started.elapsed().as_secs_f64());
                    tick
                }
            };
            out.push((ns.clone(), name.clone(), tick, slot.online.readiness()));
        }
        out
    }
}

/// The pollers the controller's loop runs for the apps' sources.
#[derive(Debug)]
pub struct Sources {
    pub jaeger: crate::jaeger::Pollers,
    pub counts: crate::prometheus::Pollers,
}

/// The receiver's router.
pub fn receiver(apps: Apps) -> Router {
    Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(apps)
}

async fn export(State(apps): State<Apps>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap, Vec<u8>) {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut out = HeaderMap::new();
    let content_type = if json { "application/json" } else { "application/x-protobuf" };
    out.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    let gzip = headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !apps.leading() {
        out.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        out.insert(header::RETRY_AFTER, http::HeaderValue::from_static("2"));
        let message = "this replica does not lead the controller; retry (the leader takes exports)";
        return (StatusCode::SERVICE_UNAVAILABLE, out, message.as_bytes().to_vec());
    }
    let decoded = tokio::task::spawn_blocking(move || decode(&body, gzip)).await;
    match decoded {
        Ok(Ok((traces, skips))) => {
            let n = traces.len();
            apps.metrics.decoded("otlp", n, &skips);
            let routed = apps.route(traces);
            tracing::debug!(traces = n, routed, skipped = skips.total(), "OTLP export");
            let body = if json { b"{}".to_vec() } else { Vec::new() };
            (StatusCode::OK, out, body)
        }
        Ok(Err(message)) => {
            out.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
            (StatusCode::BAD_REQUEST, out, message.into_bytes())
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, out, e.to_string().into_bytes()),
    }
}

fn decode(body: &[u8], gzip: bool) -> Result<(Vec<Trace>, Skips), String> {
    let inflated;
    let bytes = if gzip {
        let mut buf = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("gzip body: {e}"))?;
        if buf.len() > MAX_BODY_BYTES {
            return Err(format!("body larger than {MAX_BODY_BYTES} bytes after gzip"));
        }
        inflated = buf;
        &inflated[..]
    } else {
        body
    };
    let mut traces = Vec::new();
    let mut skips = Skips::default();
    trace::otlp::read(bytes, "OTLP/HTTP request", &trace::Config::default(), &mut skips, &mut |t| traces.push(t))
        .map_err(|e| e.to_string())?;
    Ok((traces, skips))
}

/// Lists DermApps and ticks the due loops every `period`, writing status and the learned
/// state, and runs the Jaeger `pollers`; with a `lease`, only while this replica leads. Runs
/// until dropped.
pub async fn run(client: Client, apps: Apps, period: Duration, lease: Option<Lease>, mut pollers: Sources) {
    let api: Api<DermApp> = Api::all(client.clone());
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = lease.is_none();
    apps.leading.store(leading, Ordering::Relaxed);
    let mut auditor = Auditor::new(client.clone(), apps.metrics.clone());
    // Each app's conditions besides Ready, written with every status patch (a merge patch
    // replaces the whole list).
    let mut kept = Kept::default();
    loop {
        timer.tick().await;
        if let Some(lease) = &lease {
            let now_leading = match lease.acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader Lease; following until it works");
                    false
                }
            };
            if now_leading != leading {
                tracing::info!(leading = now_leading, "controller leadership changed");
            }
            leading = now_leading;
            apps.leading.store(leading, Ordering::Relaxed);
            if !leading {
                pollers.jaeger.clear();
                pollers.counts.clear();
                apps.clear();
                continue;
            }
        }
        let now_s = unix_now();
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list DermApps; keeping the loops as they are");
                Vec::new()
            }
        };
        if !list.is_empty() {
            for key in apps.sync(&list, now_s) {
                if let Some(state) = crate::state::load(&client, &key.0, &key.1).await {
                    tracing::info!(
                        app = %key.1,
                        namespace = %key.0,
                        profiles = state.profiles.services.len(),
                        graphs = state.catalog.len(),
                        "restored learned state"
                    );
                    apps.restore(&key, state);
                }
            }
            pollers.jaeger.sync(&apps, &list);
            pollers.counts.sync(&apps, &list);
        }
        let ticks = match tokio::task::spawn_blocking({
            let apps = apps.clone();
            move || apps.due(now_s)
        })
        .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "tick task");
                continue;
            }
        };
        for (ns, name, tick, readiness) in ticks {
            let key = (ns.clone(), name.clone());
            let app = list.iter().find(|a| a.namespace().as_deref() == Some(&key.0) && a.name_any() == key.1);
            if let Some(app) = app
                && let Some(c) = auditor.audit(app).await
            {
                kept.set(&key, c);
            }
            if let Tick::Plan(u) = &tick {
                kept.set(&key, conditions::predictor(&u.predictor));
            }
            kept.set(&key, conditions::profiles(&readiness));
            for (service, rps) in &readiness.trusted_rps {
                apps.metrics.trusted(&format!("{ns}/{name}"), service, *rps);
            }
            if let Some(c) = conditions::feasible(&tick, &readiness) {
                kept.set(&key, c);
            }
            let last_solve = app.and_then(|a| a.status.as_ref()?.last_solve_time.as_ref().map(|t| t.0.as_second()));
            let hold_s = app.map_or(0, |a| a.spec.staleness.hold_seconds);
            kept.set(&key, conditions::fresh(&tick, last_solve, now_s, hold_s));
            let patch = status_patch(&tick, &kept.list(&key));
            if let Tick::Hold(reason) = &tick {
                tracing::info!(app = %name, namespace = %ns, reason, "holding the published values");
            }
            let api: Api<DermApp> = Api::namespaced(client.clone(), &ns);
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    if let Tick::Plan(u) = &tick {
                        for (service, n) in &u.desired_replicas {
                            apps.metrics.published(&format!("{ns}/{name}"), service, *n);
                        }
                    }
                }
                Err(e) => tracing::warn!(app = %name, namespace = %ns, error = %e, "cannot write status"),
            }
            if let (Tick::Plan(_), Some(app), Some(state)) = (&tick, app, apps.state(&key))
                && let Err(e) = crate::state::save(&client, app, &state).await
            {
                tracing::warn!(app = %key.1, namespace = %key.0, error = %e, "cannot store the learned state");
            }
        }
    }
}

/// The status merge patch for one tick: a plan sets the values and the solve time; a hold
/// only says why (the values and their time stay, so they age). `kept` are the other
/// conditions (the predictor's, the HPA audit's), written again because a merge patch
/// replaces the whole list.
fn status_patch(tick: &Tick, kept: &[&serde_json::Value]) -> serde_json::Value {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut patch = match tick {
        Tick::Plan(u) => serde_json::json!({"status": {
            "observedLoadRps": u.observed_load_rps,
            "predictedGraphMix": u.predicted_graph_mix,
            "predictedSlaProbability": u.predicted_sla_probability,
            "desiredReplicas": u.desired_replicas,
            "callAffinity": u.call_affinity,
            "lastSolveTime": now,
            "conditions": [conditions::condition("Ready", true, "Solved", "desired replicas published", &now)],
        }}),
        Tick::Hold(reason) => serde_json::json!({"status": {
            "conditions": [conditions::condition("Ready", false, "Holding", reason, &now)],
        }}),
    };
    if let Some(conditions) = patch["status"]["conditions"].as_array_mut() {
        for c in kept {
            let mut c = (*c).clone();
            if c.get("lastTransitionTime").is_none_or(serde_json::Value::is_null) {
                c["lastTransitionTime"] = serde_json::to_value(&now).unwrap_or_default();
            }
            conditions.push(c);
        }
    }
    patch
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use derm_core::generate::Scenario;

    use super::*;

    #[test]
    fn decodes_protobuf_json_and_gzip_and_names_bad_bodies() {
        let traces = Scenario::acceptance(1).traces(0).into_iter().take(20).collect::<Vec<_>>();
        let proto = trace::otlp::encode_protobuf(&traces);
        let (got, _) = decode(&proto, false).unwrap();
        assert_eq!(got.len(), 20);
        let mut json = Vec::new();
        trace::otlp::write_json(&mut json, &traces).unwrap();
        assert_eq!(decode(&json, false).unwrap().0.len(), 20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &proto).unwrap();
        assert_eq!(decode(&gz.finish().unwrap(), true).unwrap().0.len(), 20);
        assert!(decode(b"{\"resourceSpans\": 7}", false).is_err());
        assert!(decode(b"not gzip", true).unwrap_err().contains("gzip"));
    }

    #[tokio::test]
    async fn followers_answer_exports_with_retryable_503_and_the_leader_takes_them() {
        use tower::ServiceExt as _;
        let traces = Scenario::acceptance(1).traces(0).into_iter().take(5).collect::<Vec<_>>();
        let body = trace::otlp::encode_protobuf(&traces);
        let export = |apps: &Apps| {
            let req = http::Request::post("/v1/traces").body(axum::body::Body::from(body.clone())).unwrap();
            receiver(apps.clone()).oneshot(req)
        };
        let apps = Apps::default();
        let follower = export(&apps).await.unwrap();
        assert_eq!(follower.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(follower.headers().contains_key(header::RETRY_AFTER));
        apps.leading.store(true, Ordering::Relaxed);
        assert_eq!(export(&apps).await.unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn plan_patch_sets_values_and_time_hold_patch_does_not() {
        let hold = status_patch(&Tick::Hold("no traces".into()), &[]);
        assert!(hold["status"].get("lastSolveTime").is_none());
        assert!(hold["status"].get("desiredReplicas").is_none());
        assert_eq!(hold["status"]["conditions"][0]["status"], "False");
        assert_eq!(hold["status"]["conditions"].as_array().map(Vec::len), Some(1));
        let audit = serde_json::json!({"type": "HPAsExact", "status": "True"});
        let report =
            crate::online::PredictorReport { name: "lstm".into(), recent_tv: Some(0.0421), ..Default::default() };
        let predictor = conditions::predictor(&report);
        let plan = status_patch(
            &Tick::Plan(crate::online::Update {
                observed_load_rps: 10.0,
                predicted_graph_mix: Vec::new(),
                predicted_sla_probability: 0.97,
                desired_replicas: [("a".to_owned(), 3)].into_iter().collect(),
                call_affinity: Vec::new(),
                predictor: report,
            }),
            &[&predictor, &audit],
        );
        assert_eq!(plan["status"]["desiredReplicas"]["a"], 3);
        assert!(plan["status"]["lastSolveTime"].is_string());
        assert_eq!(plan["status"]["conditions"][1]["type"], "PredictorReady");
        // The kept conditions ride along (a merge patch replaces the whole list); one without
        // a transition time gets the patch's.
        assert_eq!(plan["status"]["conditions"][2]["type"], "HPAsExact");
        assert!(plan["status"]["conditions"][2]["lastTransitionTime"].is_string());
        let hold = status_patch(&Tick::Hold("no traces".into()), &[&predictor, &audit]);
        assert_eq!(hold["status"]["conditions"][1]["reason"], "Model");
    }
}
