//! The simulator against queueing theory and against `core::latency`.
//!
//! - One container with one worker and exponential service is M/M/1: a call's latency is
//!   `l0 + Exp(mu - w)`; mean and P95 must match within 3%.
//! - A tandem chain of such containers (calls issued after the caller's service, workers not
//!   held) is a Jackson tandem: per-hop sojourn times of one request are independent, so the
//!   E2E latency is exactly Derm's shifted hypoexponential; its CDF at the SLA must match
//!   `core::latency::Compiled::cdf` within 0.01.

use derm_core::graph::Node;
use derm_core::latency::{Compiled, Params};
use derm_core::sim::Pattern;
use derm_core::sim::app::{App, Curve, RequestType, Service, ServiceTime};
use derm_core::sim::engine::{Config, Engine};

fn service(name: &str, l0_ms: f64, mean_ms: f64) -> Service {
    Service { name: name.into(), l0_ms, time: ServiceTime::Exponential { mean_ms }, workers: 1 }
}

fn app(services: Vec<Service>, graph: Node) -> App {
    let ty = RequestType {
        name: "only".into(),
        weight: Curve::flat(1.0),
        load_exponent: 0.0,
        argument: None,
        graphs: vec![[0, 0]],
    };
    App::new("test", services, vec![graph], vec![ty], f64::INFINITY, 1.0).unwrap_or_else(|e| panic!("{e}"))
}

/// E2E latencies (ms, sorted) of every request started in `[warmup_s, warmup_s + run_s)`.
fn latencies(app: &App, rps: f64, warmup_s: f64, run_s: f64, seed: u64) -> Vec<f64> {
    let pattern = Pattern::Constant { rps };
    let config = Config {
        sampling: 0.0,
        startup_s: 0.0,
        seed,
        origin_s: 0,
        start_s: 0.0,
        stop_s: warmup_s + run_s,
        record_from_s: warmup_s,
        window_s: run_s,
    };
    let replicas = vec![1; app.services.len()];
    let mut engine = Engine::new(app, &pattern, config, &replicas);
    engine.run_until(warmup_s + run_s);
    engine.drain(warmup_s + run_s + 60.0);
    let rec = engine.finish();
    assert_eq!(rec.unfinished, 0);
    let mut all: Vec<f64> = rec.windows.into_iter().flatten().map(f64::from).collect();
    all.sort_by(f64::total_cmp);
    all
}

#[test]
fn sim_mm1_response_time_matches_theory() {
    // mu = 0.1 /ms (10 ms mean), w = 60 req/s = 0.06 /ms: rho 0.6, sojourn Exp(0.04).
    let (l0, mean_ms, rps) = (0.5, 10.0, 60.0);
    let a = app(vec![service("s", l0, mean_ms)], Node::leaf("s"));
    let xs = latencies(&a, rps, 100.0, 2_000.0, 3);
    assert!(xs.len() > 100_000, "{}", xs.len());
    let rate = 1.0 / mean_ms - rps / 1000.0;
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let expected_mean = l0 + 1.0 / rate;
    let p95 = xs[(0.95 * xs.len() as f64) as usize];
    let expected_p95 = l0 + 20f64.ln() / rate;
    eprintln!("mean {mean:.3} (theory {expected_mean:.3}), p95 {p95:.3} (theory {expected_p95:.3})");
    assert!((mean - expected_mean).abs() / expected_mean < 0.03, "mean {mean} vs {expected_mean}");
    assert!((p95 - expected_p95).abs() / expected_p95 < 0.03, "p95 {p95} vs {expected_p95}");
    // Nothing is faster than the fixed delay.
    assert!(xs[0] >= l0 - 1e-3);
}

#[test]
fn sim_e2e_cdf_matches_latency_model() {
    // Four hops with different rates at 40 req/s (utilisation 0.16 to 0.48): `a` calls `b`,
    // which calls `c`, then `a` calls `d`. (A service visited twice by one request is not a
    // tandem: its two sojourns are correlated, and the model's independence does not hold.)
    let services =
        vec![service("a", 0.4, 4.0), service("b", 0.8, 8.0), service("c", 0.3, 12.0), service("d", 0.6, 6.0)];
    let graph = Node::leaf("a").then(Node::chain(["b", "c"])).then(Node::leaf("d"));
    let a = app(services.clone(), graph.clone());
    let rps = 40.0;
    let xs = latencies(&a, rps, 100.0, 3_000.0, 11);
    let calls = graph.calls();
    let index = |s: &str| services.iter().position(|x| x.name == s);
    let compiled = Compiled::new(&graph, index).unwrap_or_else(|e| panic!("{e}"));
    let params: Vec<Params> = services
        .iter()
        .map(|s| {
            let w = rps * f64::from(calls[s.name.as_str()]);
            Params { l0_ms: s.l0_ms, rate_per_ms: 1.0 / s.time.mean_ms() - w / 1000.0 }
        })
        .collect();
    for q in [0.5, 0.9, 0.95] {
        let sla = xs[(q * xs.len() as f64) as usize];
        let empirical = xs.partition_point(|x| *x <= sla) as f64 / xs.len() as f64;
        let model = compiled.cdf(&params, sla);
        eprintln!("SLA {sla:.2} ms: simulated {empirical:.4}, model {model:.4}");
        assert!((empirical - model).abs() < 0.01, "at {sla} ms: simulated {empirical}, model {model}");
    }
}

#[test]
fn queued_counts_the_backlog_of_an_overload_and_its_drain() {
    // One container serving 100 calls/s (10 ms mean) offered 200/s: the queue grows by about
    // 100 calls per second; four more containers then drain it.
    let a = app(vec![service("s", 0.5, 10.0)], Node::leaf("s"));
    let pattern = Pattern::Constant { rps: 200.0 };
    let config = Config {
        sampling: 0.0,
        startup_s: 0.0,
        seed: 5,
        origin_s: 0,
        start_s: 0.0,
        stop_s: 60.0,
        record_from_s: 0.0,
        window_s: 60.0,
    };
    let mut engine = Engine::new(&a, &pattern, config, &[1]);
    engine.run_until(10.0);
    let backlog = engine.queued()[0];
    assert!((700..=1300).contains(&backlog), "backlog after 10 s of 2x overload: {backlog}");
    engine.set_replicas(0, 5);
    engine.run_until(30.0);
    let left = engine.queued()[0];
    assert!(left < 50, "backlog 20 s after scaling to 5 containers: {left}");
}
