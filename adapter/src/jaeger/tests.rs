//! Pollers against an in-process fake Jaeger (both APIs) serving the acceptance scenario's
//! traces on simulated time: traces reach the loop and it plans, an outage loses nothing and
//! holds, overlapping polls do not count a trace twice, a busy range is split.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use derm_core::generate::Scenario;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::*;
use crate::crd::DermApp;
use crate::online::Tick;
use crate::server::{Limits, Server};

const INTERVAL: i64 = 240;
/// A multiple of the interval, so windows line up with the scenario's load levels.
const ORIGIN_S: i64 = 7_083_333 * INTERVAL;

/// What the fake serves and saw.
#[derive(Debug, Default)]
struct Fake {
    /// Sorted by start.
    traces: Vec<(i64, Trace)>,
    /// Answer 500 to requests with these sequence numbers.
    fail: std::ops::Range<usize>,
    requests: usize,
    /// Traces sent in all answers (with the overlap's repeats).
    served: usize,
}

type Shared = Arc<Mutex<Fake>>;

/// The traces of `[min, max]` for `service`, at most `limit`; or a 500.
fn select(fake: &Shared, service: &str, min: i64, max: i64, limit: usize) -> Option<Vec<Trace>> {
    let mut f = fake.lock().unwrap();
    let n = f.requests;
    f.requests += 1;
    if f.fail.contains(&n) {
        return None;
    }
    let from = f.traces.partition_point(|(s, _)| *s < min);
    let out: Vec<Trace> = f.traces[from..]
        .iter()
        .take_while(|(s, _)| *s <= max)
        .filter(|(_, t)| t.spans.iter().any(|s| s.service == service))
        .take(limit)
        .map(|(_, t)| t.clone())
        .collect();
    f.served += out.len();
    Some(out)
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map_or("", String::as_str)
}

async fn v3(State(fake): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let time = |k| param(&q, k).parse::<Timestamp>().unwrap().as_microsecond();
    let (min, max) = (time("query.start_time_min"), time("query.start_time_max"));
    let limit = param(&q, "query.num_traces").parse().unwrap();
    match select(&fake, param(&q, "query.service_name"), min, max, limit) {
        None => (http::StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":{"httpCode":500,"message":"storage down"}}"#)
            .into_response(),
        Some(t) if t.is_empty() => {
            (http::StatusCode::NOT_FOUND, r#"{"error":{"httpCode":404,"message":"No traces found"}}"#).into_response()
        }
        Some(t) => {
            // A stream of `result` objects, one per line, as the gRPC gateway writes it.
            let mut body = Vec::new();
            for chunk in t.chunks(100) {
                body.extend_from_slice(b"{\"result\":");
                trace::otlp::write_json(&mut body, chunk).unwrap();
                body.extend_from_slice(b"}\n");
            }
            body.into_response()
        }
    }
}

async fn v1(State(fake): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let int = |k| param(&q, k).parse::<i64>().unwrap();
    let limit = param(&q, "limit").parse().unwrap();
    match select(&fake, param(&q, "service"), int("start"), int("end"), limit) {
        None => (http::StatusCode::INTERNAL_SERVER_ERROR, "storage down").into_response(),
        Some(t) => {
            let mut body = Vec::new();
            trace::jaeger::write(&mut body, &t).unwrap();
            body.into_response()
        }
    }
}

async fn serve(fake: Shared) -> (SocketAddr, watch::Sender<bool>) {
    serve_tls(fake, None).await
}

async fn serve_tls(fake: Shared, tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, watch::Sender<bool>) {
    let router = Router::new().route("/api/v3/traces", get(v3)).route("/api/traces", get(v1)).with_state(fake);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), tls, Limits::default()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(server.serve(router, crate::server::shutdown::stopped(stopped)));
    (addr, stop)
}

fn app(url: &str, api: &str) -> DermApp {
    let services: Vec<_> = ["frontend", "auth", "ticket", "route", "seat", "price", "order"]
        .iter()
        .map(|s| serde_json::json!({"name": s, "scaleTargetRef": {"kind": "Deployment", "name": s}, "minReplicas": 1, "maxReplicas": 50}))
        .collect();
    let spec: DermAppSpec = serde_json::from_value(serde_json::json!({
        "sla": {"latencyMs": 40.0, "percentile": 95.0},
        "entryService": "frontend",
        "traceSource": {"jaeger": {"url": url, "api": api}, "samplingRatio": 0.1},
        "services": services,
        "intervalSeconds": INTERVAL
    }))
    .unwrap();
    let mut app = DermApp::new("shop", spec);
    app.metadata.namespace = Some("default".into());
    app
}

/// What one simulated run saw.
struct Run {
    scenario: Scenario,
    /// (simulated time, tick).
    ticks: Vec<(i64, Tick)>,
    delivered: Vec<String>,
    cursor_us: i64,
    fake: Shared,
    registry: Registry,
}

/// Serves the scenario, then polls every 60 simulated seconds (again at once while behind,
/// as [`run`] does) and ticks the loop, for every load level and two intervals more.
async fn simulate(api: &str, fail: std::ops::Range<usize>, max_traces: usize) -> Run {
    let scenario = Scenario::acceptance(11);
    let mut traces: Vec<(i64, Trace)> = scenario.traces(ORIGIN_S).into_iter().map(|t| (start_of(&t), t)).collect();
    traces.sort_by_key(|(s, _)| *s);
    let fake = Arc::new(Mutex::new(Fake { traces, fail, ..Fake::default() }));
    let (addr, _stop) = serve(fake.clone()).await;
    let app = app(&format!("http://{addr}/"), api);
    let apps = Apps::default();
    let key = ("default".to_owned(), "shop".to_owned());
    assert_eq!(apps.sync(std::slice::from_ref(&app), ORIGIN_S), vec![key.clone()]);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, crate::telemetry::LoopMetrics::default());
    let source = Source::of(&app.spec).unwrap();
    let client = Client::new(REQUEST_TIMEOUT).unwrap();
    let mut poller = Poller::new("default/shop".into(), source, client, metrics.clone(), ORIGIN_S * US + 1)
        .with_max_traces(max_traces);
    assert_eq!(poller.cursor_us(), (ORIGIN_S - INTERVAL) * US);
    let (mut ticks, mut delivered) = (Vec::new(), Vec::new());
    let end_s = ORIGIN_S + (scenario.levels_rps.len() as i64 + 2) * INTERVAL;
    for now_s in (ORIGIN_S + 60..=end_s).step_by(60) {
        for _ in 0..CATCH_UP {
            match poller.poll(now_s * US).await {
                Ok(p) => {
                    delivered.extend(p.traces.iter().map(|t| t.id.clone()));
                    apps.feed(&key, p.traces, poller.cursor_us());
                    if p.caught_up {
                        break;
                    }
                }
                Err(e) => {
                    metrics.error(&poller.app, e.reason());
                    break;
                }
            }
        }
        ticks.extend(apps.due(now_s).into_iter().map(|(_, _, t, _)| (now_s, t)));
    }
    Run { scenario, ticks, delivered, cursor_us: poller.cursor_us(), fake, registry }
}

impl Run {
    /// Scenario traces that started before the cursor: all must have been delivered.
    fn expected(&self) -> usize {
        self.fake.lock().unwrap().traces.iter().filter(|(s, _)| *s < self.cursor_us).count()
    }

    /// Plans with the load level of the window each ingested.
    fn plans(&self) -> Vec<(usize, f64)> {
        self.ticks
            .iter()
            .filter_map(|(now_s, t)| match t {
                Tick::Plan(u) => Some((((now_s - ORIGIN_S) / INTERVAL - 2) as usize, u.observed_load_rps)),
                Tick::Hold(_) => None,
            })
            .collect()
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// Every trace exactly once, every plan at its level's load (never below it by much).
    fn assert_complete_and_planned(&self, min_plans: usize) {
        let unique: HashSet<&String> = self.delivered.iter().collect();
        assert_eq!(unique.len(), self.delivered.len(), "a trace was delivered twice");
        assert_eq!(self.delivered.len(), self.expected());
        assert!(self.cursor_us >= (ORIGIN_S + self.scenario.levels_rps.len() as i64 * INTERVAL) * US);
        let plans = self.plans();
        assert!(plans.len() >= min_plans, "{:?}", self.ticks);
        for (k, load) in plans {
            let want = self.scenario.levels_rps[k];
            assert!((load - want).abs() < 0.15 * want, "level {k}: {load} vs {want}");
        }
    }
}

#[tokio::test]
async fn v3_traces_reach_the_loop_once_and_it_plans() {
    let run = simulate("v3", 0..0, MAX_TRACES).await;
    run.assert_complete_and_planned(7);
    // The overlap asked for some traces again; they were dropped, not counted twice.
    let served = run.fake.lock().unwrap().served;
    assert!(served > run.delivered.len(), "{served} served, {} delivered", run.delivered.len());
    let text = run.metrics_text();
    assert!(
        text.contains(&format!(
            "derm_adapter_trace_source_traces_total{{app=\"default/shop\"}} {}",
            run.delivered.len()
        )),
        "{text}"
    );
    assert!(!text.contains("derm_adapter_trace_source_errors_total{"), "{text}");
}

#[tokio::test]
async fn v1_traces_reach_the_loop_once_and_it_plans() {
    let run = simulate("v1", 0..0, MAX_TRACES).await;
    run.assert_complete_and_planned(7);
    assert!(run.fake.lock().unwrap().served > run.delivered.len());
}

#[tokio::test]
async fn an_outage_loses_no_trace_and_holds() {
    // The first poll (60 s) catches up in 5 requests, then one per minute: requests 10..20
    // are the polls at 420..=960 s, so the window [240, 480) s was fetched up to 345 s only.
    let run = simulate("v3", 10..20, MAX_TRACES).await;
    run.assert_complete_and_planned(5);
    let text = run.metrics_text();
    assert!(
        text.contains("derm_adapter_trace_source_errors_total{app=\"default/shop\",reason=\"Status\"} 10"),
        "{text}"
    );
    let held: Vec<i64> = run
        .ticks
        .iter()
        .filter(|(_, t)| matches!(t, Tick::Hold(r) if r.contains("not been fetched")))
        .map(|(s, _)| s - ORIGIN_S)
        .collect();
    // The ticks at 720 and 960 s needed windows not fetched yet and held, keeping their
    // traces (planning from the part of [240, 480) s would have published a lower count);
    // the one at 1200 s planned from them all.
    assert_eq!(held, vec![720, 960]);
    assert!(run.plans().iter().any(|(k, _)| *k == 3), "{:?}", run.ticks);
}

#[tokio::test]
async fn a_busy_range_is_split_until_it_fits() {
    let run = simulate("v1", 0..0, 400).await;
    run.assert_complete_and_planned(7);
    let requests = run.fake.lock().unwrap().requests;
    let polls = ((run.scenario.levels_rps.len() as i64 + 2) * INTERVAL / 60) as usize;
    assert!(requests > 2 * polls, "{requests} requests for {polls} polls");
    assert!(!run.metrics_text().contains("Saturated"));
}

#[tokio::test]
async fn a_long_outage_skips_to_a_window_boundary() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let (addr, _stop) = serve(fake).await;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, crate::telemetry::LoopMetrics::default());
    let source = Source::of(&app(&format!("http://{addr}"), "v1").spec).unwrap();
    let client = Client::new(REQUEST_TIMEOUT).unwrap();
    let mut poller = Poller::new("default/shop".into(), source, client, metrics, ORIGIN_S * US);
    // 3,000 s later: fetch up to 2,985 s, at most 900 s back, from the next window start
    // (2,160 s), one 60 s step.
    let got = poller.poll((ORIGIN_S + 3_000) * US).await.unwrap();
    assert!(!got.caught_up);
    assert_eq!(poller.cursor_us(), (ORIGIN_S + 2_220) * US);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"derm_adapter_trace_source_errors_total{app="default/shop",reason="Skipped"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_jaeger_is_an_error_and_the_cursor_stays() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, crate::telemetry::LoopMetrics::default());
    // A port nothing listens on: bind one, then close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let source = Source::of(&app(&format!("http://{addr}"), "v3").spec).unwrap();
    let client = Client::new(REQUEST_TIMEOUT).unwrap();
    let mut poller = Poller::new("default/shop".into(), source, client, metrics, ORIGIN_S * US);
    let before = poller.cursor_us();
    let e = poller.poll((ORIGIN_S + 60) * US).await.unwrap_err();
    assert_eq!(e.reason(), Reason::Unreachable, "{e}");
    assert_eq!(poller.cursor_us(), before);
}

#[tokio::test]
async fn https_sources_are_verified() {
    let scenario = Scenario::acceptance(12);
    let traces = scenario.traces(ORIGIN_S).into_iter().map(|t| (start_of(&t), t)).collect();
    let fake = Arc::new(Mutex::new(Fake { traces, ..Fake::default() }));
    let identity = crate::server::tls::Identity::self_signed(&["127.0.0.1"]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.certs()[0].clone()).unwrap();
    let tls = crate::server::tls::server_config(identity, None).unwrap();
    let (addr, _stop) = serve_tls(fake, Some(tls)).await;
    let source = Source::of(&app(&format!("https://{addr}"), "v1").spec).unwrap();
    // Created in the second window: the cursor starts at the scenario's beginning.
    let (created_us, now_us) = ((ORIGIN_S + INTERVAL) * US, (ORIGIN_S + INTERVAL + 60) * US);
    let trusting = Client::with_roots(REQUEST_TIMEOUT, roots).unwrap();
    let mut poller = Poller::new("default/shop".into(), source.clone(), trusting, Metrics::default(), created_us);
    let got = poller.poll(now_us).await.unwrap();
    assert!(got.traces.len() > 100, "{}", got.traces.len());
    // The system's CAs do not know the fake's certificate.
    let system = Client::new(REQUEST_TIMEOUT).unwrap();
    let mut poller = Poller::new("default/shop".into(), source, system, Metrics::default(), created_us);
    let e = poller.poll(now_us).await.unwrap_err();
    assert_eq!(e.reason(), Reason::Unreachable, "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[test]
fn queries_name_the_parameters_jaeger_reads() {
    let spec = app("https://jaeger.example:16686/", "v3").spec;
    let mut source = Source::of(&spec).unwrap();
    assert_eq!(
        source.uri(1_700_000_000_000_000, 1_700_000_060_000_000, 7),
        "https://jaeger.example:16686/api/v3/traces?query.service_name=frontend\
         &query.start_time_min=2023-11-14T22%3A13%3A20.000000Z\
         &query.start_time_max=2023-11-14T22%3A14%3A19.999999Z&query.num_traces=7"
    );
    source.api = JaegerApi::V1;
    source.service = "front end".into();
    assert_eq!(
        source.uri(1_700_000_000_000_000, 1_700_000_060_000_000, 7),
        "https://jaeger.example:16686/api/traces?service=front+end&start=1700000000000000&end=1700000059999999&limit=7"
    );
    assert_eq!(source.lag_s(), 15);
    assert_eq!(source.period(), Duration::from_secs(10));
}

#[test]
fn decode_rejects_bodies_that_are_not_the_api() {
    let config = trace::Config::default();
    assert!(decode(&Bytes::from_static(b"<html>"), true, &config).is_err());
    assert!(decode(&Bytes::from_static(b"<html>"), false, &config).is_err());
    let err = decode(
        &Bytes::from_static(b"{\"result\":{\"resourceSpans\":[]}}\n{\"error\":{\"message\":\"boom\"}}\n"),
        true,
        &config,
    )
    .unwrap_err();
    assert!(err.contains("boom"), "{err}");
}
