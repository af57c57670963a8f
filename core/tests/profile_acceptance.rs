//! Acceptance of the profiling pipeline: traces generated with known parameters (seven
//! services, a simple and a complex graph with parallel calls, ten load levels, sampling
//! 0.1) go through the Jaeger writer, the decoder, call trees, windows and the fit; every
//! service's `l0` must come back within 5%, its rate at mid-load within 10%, and the graph
//! mix of every window within 0.03 of the truth.
//!
//! A window's mix is estimated from its sampled requests, so its error is at least binomial
//! noise, `sqrt(p (1 - p) / n)` for `n` sampled requests: 0.026 at the unscaled scenario's
//! lowest level (40 req/s, n = 240), where the worst of 40 windows was 0.051. The application
//! is therefore scaled out 8 times (320-1,760 req/s on 8-16 containers per service: the same
//! per-container loads and latencies), giving n >= 1,920 and a noise of 0.009 per window.

use std::collections::BTreeMap;

use derm_core::generate::Scenario;
use derm_core::graph::window;
use derm_core::pipeline::Ingest;
use derm_core::{profile, trace};

/// Window-aligned origin (a multiple of 60 s).
const ORIGIN_S: i64 = 1_699_999_980;

#[test]
fn profile_recovers_known_parameters() {
    let scenario = Scenario::acceptance(11).scaled_out(8);
    let traces = scenario.traces(ORIGIN_S);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("traces.json");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}")));
    trace::jaeger::write(&mut file, &traces).unwrap_or_else(|e| panic!("{e}"));
    drop(file);

    let mut ingest = Ingest::new(window::Config::default());
    ingest.read_path(&path, None, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let out = ingest.finish();
    assert_eq!(out.skips.total(), 0, "{:?}", out.skips);
    assert_eq!(out.requests as usize, traces.len());

    let (profiles, errors) = profile::fit_all(&out.windows.samples, &profile::Config::default());
    assert!(errors.is_empty(), "{errors:?}");
    let mid = scenario.levels_rps.len() / 2;
    let w_mid = scenario.per_container_rps(mid);
    for (truth, w) in scenario.services.iter().zip(&w_mid) {
        let p = &profiles.services[&truth.name];
        assert!(!p.fallback, "{}: {p:?}", truth.name);
        let l0_err = (p.l0_ms - truth.l0_ms).abs() / truth.l0_ms;
        let rate_err = (p.rate(*w) - truth.rate(*w)).abs() / truth.rate(*w);
        eprintln!(
            "{:<9} l0 {:.3} (true {:.3}, err {:.2}%), rate@{:.1}rps {:.4} (true {:.4}, err {:.2}%)",
            truth.name,
            p.l0_ms,
            truth.l0_ms,
            100.0 * l0_err,
            w,
            p.rate(*w),
            truth.rate(*w),
            100.0 * rate_err
        );
        assert!(l0_err < 0.05, "{}: l0 {} vs {}", truth.name, p.l0_ms, truth.l0_ms);
        assert!(rate_err < 0.10, "{}: rate {} vs {}", truth.name, p.rate(*w), truth.rate(*w));
    }

    let ids: Vec<String> = scenario.graphs.iter().map(|g| g.root.clone().canonical().id()).collect();
    let mut worst: f64 = 0.0;
    let mut sum = 0.0;
    for w in &out.windows.windows {
        let level = ((w.start_s - ORIGIN_S) / i64::from(scenario.level_s)) as usize;
        let truth: BTreeMap<&str, f64> = ids.iter().map(String::as_str).zip(scenario.mix(level)).collect();
        let err = truth
            .iter()
            .map(|(id, share)| (w.graph_mix.get(*id).copied().unwrap_or(0.0) - share).abs())
            .fold(0.0, f64::max);
        worst = worst.max(err);
        sum += err;
    }
    let mean = sum / out.windows.windows.len() as f64;
    eprintln!("graph mix error per window: mean {mean:.4}, worst {worst:.4}");
    assert!(worst < 0.03, "graph-mix error {worst} in the worst window (mean {mean})");
    assert_eq!(out.windows.windows.len(), scenario.levels_rps.len() * 4);
}
