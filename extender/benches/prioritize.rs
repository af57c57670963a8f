//! Load generator for `POST /prioritize` in names-only mode (nodeCacheCapable), through the real
//! serving loop over loopback HTTP/1.1 keep-alive, like kube-scheduler's calls.
//!
//! Knowledge: 1,000 nodes, 100 DermApps x 10 services x 10 replicas = 10,000 pods, about 25
//! calling pairs per app; every request offers all 1,000 nodes. Prints latency percentiles and
//! calls/s for the handler alone, then over HTTP for 1 connection (kube-scheduler scores one pod
//! at a time) and for 4.
//!
//! `cargo bench -p derm-extender --bench prioritize [-- REQUESTS]`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use derm_adapter::server::{Limits, Server};
use derm_extender::api::{self, Context};
use derm_extender::inflight::InFlight;
use derm_extender::knowledge::{App, Call, Knowledge, NodeInfo, Placement, Service, Store, Workload};
use derm_extender::metrics::Metrics;
use derm_extender::plan::{self, PlanStore};
use derm_extender::score::{Config, Weights};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const NODES: usize = 1_000;
const APPS: usize = 100;
const SERVICES: usize = 10;
const REPLICAS: u32 = 10;

/// A small deterministic generator (the bench needs reproducible inputs, not quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn knowledge(rng: &mut Lcg) -> Knowledge {
    let node = |i: usize| format!("node-{i:04}");
    let mut apps = Vec::new();
    let mut placements = Vec::new();
    for a in 0..APPS {
        let ns = format!("app-{a}");
        let services: Vec<Service> = (0..SERVICES)
            .map(|s| Service {
                name: format!("s{s}"),
                workload: Workload::new(&ns, "Deployment", format!("s{s}")),
                desired: Some(REPLICAS),
            })
            .collect();
        let mut calls: Vec<Call> =
            (1..SERVICES).map(|s| Call { from: format!("s{}", s - 1), to: format!("s{s}"), rate: 100.0 }).collect();
        for _ in 0..16 {
            let (i, j) = (rng.next(SERVICES), rng.next(SERVICES));
            calls.push(Call { from: format!("s{i}"), to: format!("s{j}"), rate: 1.0 + rng.next(50) as f64 });
        }
        for s in &services {
            for _ in 0..REPLICAS {
                placements.push(Placement { workload: s.workload.clone(), node: node(rng.next(NODES)), count: 1 });
            }
        }
        apps.push(App { namespace: ns, name: "app".into(), services, calls, updated: Some(SystemTime::now()) });
    }
    let nodes: Vec<NodeInfo> =
        (0..NODES).map(|i| NodeInfo { name: node(i), pods_allocatable: Some(110), pods_used: 10 }).collect();
    Knowledge::build(&apps, &placements, &nodes, SystemTime::now())
}

fn body(rng: &mut Lcg, uid: usize) -> String {
    let (a, s) = (rng.next(APPS), rng.next(SERVICES));
    let names: Vec<String> = (0..NODES).map(|i| format!("\"node-{i:04}\"")).collect();
    format!(
        r#"{{"Pod":{{"metadata":{{"name":"s{s}-h-{uid}","namespace":"app-{a}","uid":"pod-{uid}","labels":{{"pod-template-hash":"h"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"s{s}-h","uid":"r","controller":true}}]}},"spec":{{"containers":[{{"name":"c","image":"pause","resources":{{"requests":{{"cpu":"100m"}}}}}}]}},"status":{{"phase":"Pending"}}}},"Nodes":null,"NodeNames":[{}]}}"#,
        names.join(",")
    )
}

async fn call(conn: &mut BufReader<TcpStream>, body: &str) -> usize {
    let head = format!(
        "POST /prioritize HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).await.expect("write");
    conn.get_mut().write_all(body.as_bytes()).await.expect("write");
    let mut line = String::new();
    let mut length = 0;
    conn.read_line(&mut line).await.expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("content-length");
        }
    }
    let mut buf = vec![0; length];
    conn.read_exact(&mut buf).await.expect("body");
    length
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn run(addr: std::net::SocketAddr, bodies: Arc<Vec<String>>, connections: usize, requests: usize) {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
                conn.get_mut().set_nodelay(true).expect("nodelay");
                let mut lat = Vec::with_capacity(requests / connections);
                for r in (c..requests).step_by(connections) {
                    let t = Instant::now();
                    call(&mut conn, &bodies[r % bodies.len()]).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let wall = t0.elapsed();
    lat.sort();
    println!(
        "prioritize, {NODES} nodes, {} pods, names-only, {connections} connection(s), {requests} calls: \
         p50 {:?}, p99 {:?}, max {:?}, {:.0} calls/s",
        APPS * SERVICES * REPLICAS as usize,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        requests as f64 / wall.as_secs_f64()
    );
}

fn main() {
    let requests: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut rng = Lcg(42);
        let store = Arc::new(Store::default());
        store.publish(knowledge(&mut rng));
        // The placement plan over the same snapshot (off the request path in the extender).
        let t0 = Instant::now();
        let (_, results) = plan::plan(&store.load(), &plan::Config::default());
        let solved: Vec<_> = results.iter().flatten().collect();
        let mean = |f: fn(&plan::AppPlan) -> Option<f64>| {
            let v: Vec<f64> = solved.iter().filter_map(|p| f(p)).collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        println!(
            "placement plan: {} of {APPS} apps solved in {:?}; mean cross-node traffic share {:.3} now, {:.3} planned",
            solved.len(),
            t0.elapsed(),
            mean(|p| p.cross_now),
            mean(|p| p.cross_planned)
        );
        let ctx = Arc::new(Context {
            store,
            inflight: Arc::new(InFlight::new(Duration::from_secs(30))),
            plans: Arc::new(PlanStore::default()),
            config: Config { weights: Weights::default(), max_per_node: None, max_age: Some(Duration::from_secs(600)) },
            shadow: false,
            max_nodes: 20_000,
            metrics: Metrics::register(&mut Registry::default()),
        });
        let bodies: Arc<Vec<String>> = Arc::new((0..2_000).map(|i| body(&mut rng, i)).collect());
        println!("request body: {} bytes", bodies[0].len());
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), None, Limits::default()).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(server.serve(api::router(ctx.clone()), std::future::pending()));
        // The handler alone (decode, score, encode), without HTTP or a client on the same cores.
        let mut lat = Vec::with_capacity(requests);
        let t0 = Instant::now();
        for r in 0..requests {
            let t = Instant::now();
            let reply = api::prioritize_body(&ctx, bodies[r % bodies.len()].as_bytes()).expect("scored");
            std::hint::black_box(serde_json::to_vec(&reply).expect("encode"));
            lat.push(t.elapsed());
        }
        let wall = t0.elapsed();
        lat.sort();
        println!(
            "prioritize handler only (decode + score + encode), {requests} calls: p50 {:?}, p99 {:?}, max {:?}, {:.0} calls/s",
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
            requests as f64 / wall.as_secs_f64()
        );
        run(addr, bodies.clone(), 1, requests / 10).await; // warm-up
        run(addr, bodies.clone(), 1, requests).await;
        run(addr, bodies, 4, requests).await;
    });
}
