//! Load generator for the metrics API: starts the real `derm-adapter serve` process with 1,000
//! series from `--static-values`, front-proxy authentication and a CA-signed serving certificate,
//! then sends metric GETs the way kube-apiserver's aggregator does (HTTP/2 over TLS, client
//! certificate, `X-Remote-User`) at a constant rate, open loop: a pacing thread releases request
//! i at `start + i / rate` whatever the responses do, and latency runs from that intended time
//! to the last byte of the answer, so a stalled server cannot hide its queue (no coordinated
//! omission). Prints latency percentiles, how late the pacer itself was, the load average, and
//! the adapter's peak and current RSS (`VmHWM`, `VmRSS` of the serve process).
//!
//! `cargo bench -p derm-adapter --bench serve [-- --rate 5000 --seconds 10 --series 1000
//! --namespaces 10 --connections 1]`

// A benchmark binary: a failure to set up is a crash with its reason, which is what we want.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls_pki_types::{PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

const FRONT_PROXY_CN: &str = "front-proxy-client";
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const SERVICES_PER_APP: usize = 10;

struct Options {
    rate: f64,
    seconds: f64,
    warmup: f64,
    series: usize,
    namespaces: usize,
    connections: usize,
}

fn options() -> Options {
    let mut o = Options { rate: 5000.0, seconds: 10.0, warmup: 2.0, series: 1000, namespaces: 10, connections: 1 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<f64>().ok()).expect("flag value: a number");
        match args[i].as_str() {
            "--rate" => o.rate = value(),
            "--seconds" => o.seconds = value(),
            "--warmup" => o.warmup = value(),
            "--series" => o.series = value() as usize,
            "--namespaces" => o.namespaces = value() as usize,
            "--connections" => o.connections = value() as usize,
            _ => {
                // cargo bench passes `--bench`; anything else unknown is ignored the same way.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

type Issuer = CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Issuer {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &Issuer, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert, key)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (namespace, app, service) of series `i`: `namespaces` namespaces of apps with 10 services.
fn series(i: usize, namespaces: usize) -> (String, String, String) {
    let ns = i % namespaces;
    let within = i / namespaces;
    (format!("ns-{ns}"), format!("app-{}", within / SERVICES_PER_APP), format!("svc-{}", within % SERVICES_PER_APP))
}

struct Adapter {
    child: Child,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_adapter(o: &Options) -> Adapter {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let values: Vec<serde_json::Value> = (0..o.series)
        .map(|i| {
            let (namespace, app, service) = series(i, o.namespaces);
            serde_json::json!({"namespace": namespace, "app": app, "service": service, "replicas": 1 + i % 50})
        })
        .collect();
    let values = write("values.json", &serde_json::to_string(&values).unwrap());
    let serving_ca = ca("bench-serving-ca");
    let (cert, key) = leaf(&serving_ca, "derm-adapter", &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let cert_path = write("tls.crt", &cert.pem());
    let key_path = write("tls.key", &key.serialize_pem());
    let front_ca = ca("bench-front-proxy-ca");
    let front_ca_path = write("front-proxy-ca.crt", &front_ca.pem());
    let (client, client_key) = leaf(&front_ca, FRONT_PROXY_CN, &[], ExtendedKeyUsagePurpose::ClientAuth);

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new(env!("CARGO_BIN_EXE_derm-adapter"))
        .args(["--log", "warn", "serve", "--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
        .arg("--static-values")
        .arg(&values)
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--requestheader-client-ca")
        .arg(&front_ca_path)
        .args(["--requestheader-allowed-names", FRONT_PROXY_CN])
        .stdin(Stdio::null())
        .spawn()
        .expect("start derm-adapter serve");

    let mut roots = RootCertStore::empty();
    roots.add(serving_ca.der().clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.der().clone()], PrivatePkcs8KeyDer::from(client_key.serialize_der()).into())
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Adapter { child, addr, tls: Arc::new(tls), _dir: dir }
}

async fn connect(adapter: &Adapter) -> std::io::Result<SendRequest<Empty<Bytes>>> {
    let tcp = TcpStream::connect(adapter.addr).await?;
    tcp.set_nodelay(true)?;
    let stream =
        TlsConnector::from(adapter.tls.clone()).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(send)
}

/// Retries until the adapter accepts connections (it binds after loading its inputs).
async fn connect_when_up(adapter: &mut Adapter) -> SendRequest<Empty<Bytes>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(adapter).await {
            Ok(send) => return send,
            Err(_) if Instant::now() < deadline => {
                if let Some(status) = adapter.child.try_wait().unwrap() {
                    panic!("derm-adapter exited with {status} before serving");
                }
                // Polling a process we started: nothing to wait on but time.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("derm-adapter did not come up in 30 s: {e}"),
        }
    }
}

fn path(i: usize, namespaces: usize) -> String {
    let (ns, app, service) = series(i, namespaces);
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/derm_desired_replicas?labelSelector=app%3D{app}%2Cservice%3D{service}"
    )
}

async fn get(mut send: SendRequest<Empty<Bytes>>, path: &str) -> Result<usize, String> {
    let req = Request::get(format!("https://localhost{path}"))
        .header("x-remote-user", HPA_USER)
        .header("x-remote-group", "system:serviceaccounts")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if status != StatusCode::OK || !body.starts_with(b"{") {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body.len())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim_start_matches(':').trim().to_owned()))
        .unwrap_or_else(|| "?".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Releases request indices at `start + i / rate` from a plain thread (finer than tokio's 1 ms
/// timer), with the intended time attached.
fn pace(rate: f64, total: usize, start: Instant, tx: mpsc::UnboundedSender<(usize, Instant)>) {
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if tx.send((i, due)).is_err() {
            return;
        }
    }
}

fn main() {
    let o = options();
    let mut adapter = start_adapter(&o);
    let pid = adapter.child.id();
    // The client gets one thread: the adapter keeps the other core.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let first = connect_when_up(&mut adapter).await;
        let mut conns = vec![first];
        for _ in 1..o.connections {
            conns.push(connect(&adapter).await.expect("connect"));
        }
        let probe = get(conns[0].clone(), &path(0, o.namespaces)).await.expect("first GET");
        let rss_idle = proc_status(pid, "VmRSS");
        println!(
            "derm-adapter serve pid {pid}: {} series in {} namespaces, idle RSS {rss_idle}; one answer {probe} bytes",
            o.series, o.namespaces
        );

        let warm = (o.warmup * o.rate) as usize;
        let total = warm + (o.seconds * o.rate) as usize;
        let paths: Arc<Vec<String>> = Arc::new((0..o.series).map(|i| path(i, o.namespaces)).collect());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now() + Duration::from_millis(20);
        let rate = o.rate;
        let pacer = std::thread::spawn(move || pace(rate, total, start, tx));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        while let Some((i, due)) = rx.recv().await {
            let late = due.elapsed();
            let send = conns[i % conns.len()].clone();
            let paths = paths.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let result = get(send, &paths[i % paths.len()]).await;
                let _ = done.send((i, late, due.elapsed(), result));
            });
        }
        drop(done_tx);
        pacer.join().unwrap();
        let mut latency = Vec::with_capacity(total - warm);
        let mut lateness = Vec::with_capacity(total - warm);
        let mut errors = 0;
        let mut first_error = None;
        let mut last_done = start;
        while let Some((i, late, took, result)) = done_rx.recv().await {
            last_done = last_done.max(Instant::now());
            if let Err(e) = result {
                errors += 1;
                first_error.get_or_insert(e);
                continue;
            }
            if i >= warm {
                latency.push(took);
                lateness.push(late);
            }
        }
        let wall = last_done.duration_since(start + Duration::from_secs_f64(o.warmup));
        latency.sort();
        lateness.sort();
        println!(
            "metric GET, HTTP/2 over TLS, {} connection(s), open loop at {} req/s for {} s after {} s warm-up: \
             {} answered in {:.1} s ({:.0}/s), {errors} errors",
            o.connections,
            o.rate,
            o.seconds,
            o.warmup,
            latency.len(),
            wall.as_secs_f64(),
            latency.len() as f64 / wall.as_secs_f64()
        );
        if let Some(e) = first_error {
            println!("first error: {e}");
        }
        if !latency.is_empty() {
            println!(
                "latency from intended send: p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
                percentile(&latency, 0.50),
                percentile(&latency, 0.90),
                percentile(&latency, 0.99),
                percentile(&latency, 0.999),
                latency.last().copied().unwrap_or_default()
            );
            println!(
                "of which the load generator's own lateness: p50 {:?}, p99 {:?}, max {:?}",
                percentile(&lateness, 0.50),
                percentile(&lateness, 0.99),
                lateness.last().copied().unwrap_or_default()
            );
        }
        println!(
            "derm-adapter RSS: peak (VmHWM) {}, now (VmRSS) {}; load average {}",
            proc_status(pid, "VmHWM"),
            proc_status(pid, "VmRSS"),
            load_average()
        );
    });
}
