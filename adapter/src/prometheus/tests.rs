//! The call-count poller against an in-process fake Prometheus on loopback: answers decode
//! (bad series skipped and counted), the first poll reads the kept history, an outage loses
//! no interval, and the controller's tick waits for the interval that just ended.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::*;
use crate::crd::DermApp;
use crate::jaeger::REQUEST_TIMEOUT;
use crate::online::counts::KEEP;
use crate::server::{Limits, Server};

const INTERVAL: i64 = 30;
const ORIGIN_S: i64 = 60_000_000 * INTERVAL;
const QUERY: &str = r#"sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[$interval]))"#;

/// What the fake saw; requests with these sequence numbers get a 503.
#[derive(Debug, Default)]
struct Fake {
    fail: std::ops::Range<usize>,
    requests: Vec<(String, i64)>,
}

type Shared = Arc<Mutex<Fake>>;

/// Rates of the interval ending at `time`: frontend `k`, auth `2k` for the interval that ends
/// `k - 100` intervals after the origin,
/// plus a series without the label and one whose value is `NaN`.
async fn query(State(fake): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let time: i64 = q["time"].parse().unwrap();
    let mut f = fake.lock().unwrap();
    let n = f.requests.len();
    f.requests.push((q["query"].clone(), time));
    if f.fail.contains(&n) {
        let body = r#"{"status":"error","errorType":"unavailable","error":"no store"}"#;
        return (http::StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let k = ((time - ORIGIN_S) / INTERVAL + 100) as f64;
    serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"destination_workload": "frontend"}, "value": [time, k.to_string()]},
        {"metric": {"destination_workload": "auth"}, "value": [time, (2.0 * k).to_string()]},
        {"metric": {"job": "mesh"}, "value": [time, "1"]},
        {"metric": {"destination_workload": "seat"}, "value": [time, "NaN"]},
    ]}})
    .to_string()
    .into_response()
}

async fn serve(fake: Shared) -> (SocketAddr, watch::Sender<bool>) {
    let router = Router::new().route("/api/v1/query", get(query)).with_state(fake);
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), None, Limits::default()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(server.serve(router, crate::server::shutdown::stopped(stopped)));
    (addr, stop)
}

fn app(url: &str) -> DermApp {
    let services: Vec<_> = ["frontend", "auth"]
        .iter()
        .map(|s| serde_json::json!({"name": s, "scaleTargetRef": {"name": s}, "maxReplicas": 50}))
        .collect();
    let spec: DermAppSpec = serde_json::from_value(serde_json::json!({
        "sla": {"latencyMs": 40.0, "percentile": 95.0},
        "entryService": "frontend",
        "traceSource": {"otlp": {}},
        "callCounts": {"prometheus": {"url": url, "query": QUERY}},
        "services": services,
        "intervalSeconds": INTERVAL
    }))
    .unwrap();
    let mut app = DermApp::new("shop", spec);
    app.metadata.namespace = Some("default".into());
    app
}

#[test]
fn decodes_vectors_and_names_what_is_not_one() {
    let body = Bytes::from(
        r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"svc":"a"},"value":[1,"2.5"]},{"metric":{"svc":"a"},"value":[1,"0.5"]},
            {"metric":{"svc":"b"},"value":[1,"-1"]},{"metric":{},"value":[1,"3"]},
            {"metric":{"svc":"c"},"value":[1,"+Inf"]},{"metric":{"svc":"d"},"value":[1,"0"]}]}}"#,
    );
    let (rates, skipped) = decode(&body, "svc").unwrap();
    assert_eq!(rates, [("a".to_owned(), 3.0), ("d".to_owned(), 0.0)].into());
    assert_eq!(skipped, 3);
    let error = Bytes::from(r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#);
    assert!(decode(&error, "svc").unwrap_err().contains("parse error at char 4"));
    let matrix = Bytes::from(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
    assert!(decode(&matrix, "svc").unwrap_err().contains("instant vector"));
    assert!(decode(&Bytes::from("<html>"), "svc").unwrap_err().contains("not a Prometheus query answer"));
}

/// Polls as [`run`] does at `now_s`: until nothing is due or the first error.
async fn poll_all(poller: &mut Poller, metrics: &Metrics, now_s: i64) -> (Vec<Counted>, usize) {
    let mut got = Vec::new();
    loop {
        match poller.poll(now_s).await {
            Ok(Some(c)) => got.push(c),
            Ok(None) => return (got, 0),
            Err(e) => {
                assert!(e.to_string().contains("503"), "{e}");
                metrics.error("default/shop", e.reason());
                return (got, 1);
            }
        }
    }
}

#[tokio::test]
async fn reads_the_history_then_each_interval_and_loses_none_to_an_outage() {
    let fake: Shared = Arc::new(Mutex::new(Fake { fail: KEEP..KEEP + 2, ..Fake::default() }));
    let (addr, _stop) = serve(fake.clone()).await;
    let app = app(&format!("http://{addr}/"));
    let source = Source::of(&app.spec).unwrap();
    assert!(source.query.contains("[30s]") && !source.query.contains("$interval"), "{}", source.query);
    let mut registry = Registry::default();
    let metrics = register(&mut registry);
    let client = Client::new(REQUEST_TIMEOUT).unwrap();
    // One second past a boundary: that interval is not due yet (lag 3 s).
    let mut poller = Poller::new("default/shop".into(), source, client, metrics.clone(), ORIGIN_S + 1);
    let (got, errors) = poll_all(&mut poller, &metrics, ORIGIN_S + 1).await;
    assert_eq!((got.len(), errors), (KEEP, 0));
    assert_eq!(got.last().unwrap().start_s, ORIGIN_S - 2 * INTERVAL);
    assert!(got.windows(2).all(|w| w[1].start_s - w[0].start_s == INTERVAL));
    // The series without the label and the NaN are skipped.
    let newest = &got.last().unwrap().calls_rps;
    assert_eq!(newest, &[("auth".to_owned(), 198.0), ("frontend".to_owned(), 99.0)].into());
    // The interval ending at the origin is due at +3 s; the first two asks fail and the
    // cursor waits; nothing is skipped.
    for _ in 0..2 {
        assert_eq!(poll_all(&mut poller, &metrics, ORIGIN_S + 3).await.1, 1);
        assert_eq!(poller.cursor_s(), ORIGIN_S - INTERVAL);
    }
    let (got, errors) = poll_all(&mut poller, &metrics, ORIGIN_S + 2 * INTERVAL + 3).await;
    let starts: Vec<i64> = got.iter().map(|c| c.start_s).collect();
    assert_eq!((starts, errors), (vec![ORIGIN_S - INTERVAL, ORIGIN_S, ORIGIN_S + INTERVAL], 0));
    assert_eq!(got[2].calls_rps["auth"], 204.0);
    let f = fake.lock().unwrap();
    assert!(f.requests.iter().all(|(q, _)| q.contains("[30s]")));
    assert_eq!(f.requests.last().unwrap().1, ORIGIN_S + 2 * INTERVAL);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains(r#"derm_adapter_call_count_errors_total{app="default/shop",reason="Status"} 2"#), "{text}");
    let windows = format!(r#"derm_adapter_call_count_windows_total{{app="default/shop"}} {}"#, KEEP + 3);
    assert!(text.contains(&windows), "{text}");
}

#[test]
fn the_tick_waits_a_little_for_the_interval_that_just_ended() {
    let apps = Apps::default();
    let key = ("default".to_owned(), "shop".to_owned());
    let app = app("http://127.0.0.1:9");
    apps.sync(std::slice::from_ref(&app), ORIGIN_S - 1);
    // Due at the origin, but its counts are not in: no tick until the wait is over.
    assert!(apps.due(ORIGIN_S).is_empty());
    assert!(apps.due(ORIGIN_S + crate::controller::COUNT_WAIT_S - 1).is_empty());
    assert_eq!(apps.due(ORIGIN_S + crate::controller::COUNT_WAIT_S).len(), 1);
    // The next interval's counts arrive three seconds after its end: the tick follows.
    let next = ORIGIN_S + INTERVAL;
    assert!(apps.due(next + 2).is_empty());
    apps.count(&key, next - INTERVAL, INTERVAL as u32, BTreeMap::new());
    assert_eq!(apps.due(next + 3).len(), 1);
}
