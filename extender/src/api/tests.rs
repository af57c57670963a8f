//! Handler tests through the router, and one through the real serving loop.

use std::time::Duration;

use axum::body::Body;
use http::Request as HttpRequest;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::*;
use crate::knowledge::Knowledge;
use crate::score::Weights;
use crate::state_file::StateFile;

/// frontend (3 replicas on node-1) calls cart at 120/s; node-3 is nearly full.
const STATE: &str = r#"{
  "apps": [{"namespace": "shop", "name": "shop",
    "services": [{"name": "frontend", "scaleTargetRef": {"name": "frontend"}},
                 {"name": "cart", "scaleTargetRef": {"name": "cart"}}],
    "callAffinity": [{"from": "frontend", "to": "cart", "callsPerSecond": 120}]}],
  "pods": [{"namespace": "shop", "workload": {"name": "frontend"}, "node": "node-1", "count": 3},
           {"namespace": "shop", "workload": {"name": "cart"}, "node": "node-2", "count": 2}],
  "nodes": [{"name": "node-1", "allocatablePods": 110}, {"name": "node-2", "allocatablePods": 110},
            {"name": "node-3", "allocatablePods": 110, "usedPods": 109}]
}"#;

fn knowledge() -> Knowledge {
    let doc: StateFile = serde_json::from_str(STATE).unwrap();
    doc.knowledge(SystemTime::now())
}

fn context(shadow: bool, max_per_node: Option<u32>) -> Arc<Context> {
    context_with(shadow, max_per_node, Weights::default())
}

fn context_with(shadow: bool, max_per_node: Option<u32>, weights: Weights) -> Arc<Context> {
    let store = Arc::new(Store::default());
    store.publish(knowledge());
    Arc::new(Context {
        store,
        inflight: Arc::new(InFlight::new(Duration::from_secs(30))),
        plans: Arc::new(PlanStore::default()),
        config: Config { weights, max_per_node, max_age: Some(Duration::from_secs(600)) },
        shadow,
        max_nodes: 100,
        metrics: Metrics::register(&mut Registry::default()),
    })
}

fn pod(deployment: &str, uid: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{deployment}-h-{uid}","namespace":"shop","uid":"{uid}","labels":{{"pod-template-hash":"h"}},
        "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{deployment}-h","uid":"r","controller":true}}]}},
        "spec":{{"containers":[{{"name":"c","image":"pause"}}]}}}}"#
    )
}

fn names_body(pod: &str) -> String {
    format!(r#"{{"Pod":{pod},"Nodes":null,"NodeNames":["node-1","node-2","node-3"]}}"#)
}

async fn post(ctx: &Arc<Context>, path: &str, body: String) -> (u16, String) {
    let req = HttpRequest::post(path).header("content-type", "application/json").body(Body::from(body)).unwrap();
    let res = router(ctx.clone()).oneshot(req).await.unwrap();
    let code = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8(bytes.to_vec()).unwrap())
}

fn scores(json: &str) -> Vec<i64> {
    let v: Vec<HostPriority> = serde_json::from_str(json).unwrap();
    v.into_iter().map(|h| h.score).collect()
}

#[tokio::test]
async fn prioritize_prefers_the_peer_node_and_remembers_the_pod() {
    let ctx = context(false, None);
    let (code, body) = post(&ctx, "/prioritize", names_body(&pod("cart", "u1"))).await;
    assert_eq!(code, 200, "{body}");
    let s = scores(&body);
    assert!(s[0] > s[1] && s[0] > s[2], "{body}");
    assert!(s.iter().all(|v| (0..=10).contains(v)));
    assert!(body.starts_with(r#"[{"Host":"node-1","Score":"#), "{body}");
    assert_eq!(ctx.inflight.len(), 1);
}

/// The preferred node of each of `n` cart pods scored back to back (no binding in between).
async fn burst(ctx: &Arc<Context>, n: usize) -> Vec<usize> {
    let mut best = Vec::new();
    for i in 0..n {
        let (_, body) = post(ctx, "/prioritize", names_body(&pod("cart", &format!("u{i}")))).await;
        let s = scores(&body);
        best.push(s.iter().enumerate().max_by_key(|(i, v)| (**v, std::cmp::Reverse(*i))).map(|(i, _)| i).unwrap());
    }
    best
}

#[tokio::test]
async fn bursts_spread_through_the_in_flight_cache() {
    // Without a spread penalty every pod of the burst follows frontend to node-1.
    let ctx = context_with(false, None, Weights::new(1.0, 0.0, 0.25, 0.0).unwrap());
    assert_eq!(burst(&ctx, 8).await, [0; 8]);
    // With a strong one, the pods already sent to node-1 (in flight) push later ones away.
    let ctx = context_with(false, None, Weights::new(1.0, 3.0, 0.25, 0.0).unwrap());
    let best = burst(&ctx, 8).await;
    assert_eq!(best[0], 0);
    assert!(best.iter().any(|&b| b != 0), "the burst never left node-1: {best:?}");
    assert_eq!(ctx.inflight.len(), 8);
}

#[tokio::test]
async fn pods_of_no_dermapp_are_neutral_and_never_filtered() {
    let ctx = context(false, Some(1));
    let (code, body) = post(&ctx, "/prioritize", names_body(&pod("unrelated", "u1"))).await;
    assert_eq!((code, scores(&body)), (200, vec![0, 0, 0]));
    let (code, body) = post(&ctx, "/filter", names_body(&pod("unrelated", "u1"))).await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""NodeNames":["node-1","node-2","node-3"]"#), "{body}");
    assert!(ctx.inflight.is_empty());
}

#[tokio::test]
async fn filter_fails_nodes_over_the_limit_with_a_reason() {
    let ctx = context(false, Some(2));
    let (code, body) = post(&ctx, "/filter", names_body(&pod("cart", "u1"))).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["NodeNames"], serde_json::json!(["node-1", "node-3"]));
    assert_eq!(v["Nodes"], serde_json::Value::Null);
    assert!(v["FailedNodes"]["node-2"].as_str().unwrap().contains("2 replicas of service shop/shop/cart"), "{body}");
    assert_eq!(v["Error"], "");
}

#[tokio::test]
async fn shadow_mode_answers_neutral_and_filters_nothing() {
    let ctx = context(true, Some(2));
    let (_, body) = post(&ctx, "/prioritize", names_body(&pod("cart", "u1"))).await;
    assert_eq!(scores(&body), [0, 0, 0]);
    let (_, body) = post(&ctx, "/filter", names_body(&pod("cart", "u1"))).await;
    assert!(body.contains(r#""NodeNames":["node-1","node-2","node-3"],"FailedNodes":{}"#), "{body}");
    assert!(ctx.inflight.is_empty(), "shadow decisions must not steer later ones");
}

#[tokio::test]
async fn stale_status_is_neutral() {
    let ctx = context(false, Some(1));
    let doc: StateFile = serde_json::from_str(
        &STATE.replace(r#""name": "shop","#, r#""name": "shop", "lastSolveTime": "2020-01-01T00:00:00Z","#),
    )
    .unwrap();
    ctx.store.publish(doc.knowledge(SystemTime::now()));
    let (_, body) = post(&ctx, "/prioritize", names_body(&pod("cart", "u1"))).await;
    assert_eq!(scores(&body), [0, 0, 0]);
    let (_, body) = post(&ctx, "/filter", names_body(&pod("cart", "u1"))).await;
    assert!(body.contains(r#""FailedNodes":{}"#), "{body}");
}

#[tokio::test]
async fn full_node_mode_works_for_both_verbs() {
    let ctx = context(false, Some(2));
    let nodes = r#"{"items":[{"metadata":{"name":"node-1"}},{"metadata":{"name":"node-2"}}]}"#;
    let body = format!(r#"{{"Pod":{},"Nodes":{nodes}}}"#, pod("cart", "u1"));
    let (_, reply) = post(&ctx, "/prioritize", body.clone()).await;
    let s = scores(&reply);
    assert!(s[0] > s[1], "{reply}");
    let (_, reply) = post(&ctx, "/filter", body).await;
    assert!(
        reply.starts_with(
            r#"{"Nodes":{"items":[{"metadata":{"name":"node-1"}}]},"NodeNames":null,"FailedNodes":{"node-2":"#
        ),
        "{reply}"
    );
}

#[tokio::test]
async fn bad_input_is_an_error_never_a_panic() {
    let ctx = context(false, None);
    let huge = format!(r#"{{"Pod":{{}},"NodeNames":[{}]}}"#, vec![r#""n""#; 101].join(","));
    for body in ["", "{", "null", "[]", r#"{"NodeNames":["a"]}"#, r#"{"Pod":{}}"#, r#"{"Pod":7,"NodeNames":[]}"#, &huge]
    {
        let (code, reply) = post(&ctx, "/prioritize", body.to_owned()).await;
        assert_eq!(code, 400, "prioritize {body:.40}: {reply}");
        let (code, reply) = post(&ctx, "/filter", body.to_owned()).await;
        assert_eq!(code, 200, "filter {body:.40}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(!v["Error"].as_str().unwrap().is_empty(), "filter {body:.40}: {reply}");
    }
    // Empty candidate lists are fine.
    let (code, reply) = post(&ctx, "/prioritize", r#"{"Pod":{},"NodeNames":[]}"#.into()).await;
    assert_eq!((code, reply.as_str()), (200, "[]"));
    let req = HttpRequest::get("/prioritize").body(Body::empty()).unwrap();
    assert_eq!(router(ctx).oneshot(req).await.unwrap().status().as_u16(), 405);
}

#[tokio::test]
async fn the_real_server_answers_and_caps_bodies() {
    use derm_adapter::server::{Limits, Server};
    let ctx = context(false, None);
    let limits = Limits { body_limit: 4096, ..Limits::default() };
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), None, limits).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(router(ctx), async {
        let _ = stopped.await;
    }));
    let send = |body: String| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /prioritize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = send(names_body(&pod("cart", "u1"))).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(r#"{"Host":"node-1","Score":"#), "{ok}");
    let big = send(format!(r#"{{"Pod":{{}},"NodeNames":["{}"]}}"#, "x".repeat(5000))).await;
    assert!(big.starts_with("HTTP/1.1 413"), "{big:.200}");
    let _ = stop.send(());
    task.await.unwrap();
}
