//! `derm simulate` end to end on small runs: determinism, traces that the decoders and the
//! pipeline accept, result files and plots, and errors that name the flag or field.

use std::path::Path;

use clap::Parser as _;
use derm_core::cli::Cli;
use derm_core::graph::window;
use derm_core::pipeline::Ingest;
use derm_core::sim::engine::{Config as EngineConfig, Engine};
use derm_core::sim::eval::{self, Config};
use derm_core::sim::policy::Name;
use derm_core::sim::policy::derm::MixSource;
use derm_core::sim::{Pattern, Scenario, plot};
use derm_core::trace::{self, Skips};

fn small(policies: Vec<Name>) -> Config {
    Config {
        scenario: "trainticket".into(),
        policies,
        duration_s: 120.0,
        warmup_s: 30,
        profile_levels: 4,
        profile_level_s: 20,
        refit_every: 2,
        ..Config::default()
    }
}

/// The report as JSON without wall-clock fields.
fn deterministic_part(config: &Config) -> serde_json::Value {
    let e = eval::evaluate(config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
    let mut v = serde_json::to_value(&e.report).unwrap_or_else(|e| panic!("{e}"));
    if let Some(ps) = v["policies"].as_object_mut() {
        for p in ps.values_mut() {
            p["wall_s"] = 0.into();
            p["stats"]["mean_decision_ms"] = 0.into();
        }
    }
    v["profiling"]["wall_s"] = 0.into();
    v["series"] = serde_json::to_value(&e.series).unwrap_or_else(|e| panic!("{e}"));
    v
}

#[test]
fn sim_same_seed_same_results() {
    let config = small(vec![Name::Derm, Name::HpaCpu]);
    let a = deterministic_part(&config);
    let b = deterministic_part(&config);
    assert_eq!(a, b);
    let other = deterministic_part(&Config { seed: 2, ..config });
    assert_ne!(a["policies"], other["policies"], "a different seed must change the run");
    assert!(a["policies"]["derm"]["requests"].as_u64().unwrap_or(0) > 10_000);
    // The default predictor is the trend forecast; another one changes the `derm` run.
    assert_eq!(a["predictor"], "trend");
    assert_eq!(a["mix_source"], "counters", "the call counters are the default mix source");
    let ewma = deterministic_part(&Config { predictor: "ewma".into(), ..small(vec![Name::Derm, Name::HpaCpu]) });
    assert_eq!(ewma["predictor"], "ewma");
    assert_eq!(a["policies"]["hpa-cpu"], ewma["policies"]["hpa-cpu"], "hpa-cpu does not predict mixes");
    assert_ne!(a["series"]["derm"], ewma["series"]["derm"], "the predictor must reach the derm policy");
}

#[test]
fn sim_traces_decode_and_profile() {
    let scenario = Scenario::named("trainticket").unwrap_or_else(|e| panic!("{e}"));
    let pattern = Pattern::Constant { rps: 100.0 };
    let app = &scenario.app;
    let replicas = app.replicas_for(&app.demand(&app.mix(0.0, 100.0), 100.0), 0.5);
    let config = EngineConfig {
        sampling: 0.2,
        startup_s: 10.0,
        seed: 5,
        origin_s: 1_699_999_200,
        start_s: 0.0,
        stop_s: 60.0,
        record_from_s: 0.0,
        window_s: 60.0,
    };
    let run = || {
        let mut e = Engine::new(app, &pattern, config.clone(), &replicas);
        e.run_until(60.0);
        e.drain(120.0);
        e.take_traces()
    };
    let traces = run();
    assert_eq!(traces, run(), "same seed, same traces");
    assert!(traces.len() > 800, "{}", traces.len());
    let mut json = Vec::new();
    trace::jaeger::write(&mut json, &traces).unwrap_or_else(|e| panic!("{e}"));
    let mut ingest = Ingest::new(window::Config {
        args: vec![window::ArgSpec::parse("distance").unwrap_or_else(|e| panic!("{e}"))],
        ..Default::default()
    });
    let mut skips = Skips::default();
    let decode = ingest.decode_config().clone();
    let mut decoded = 0;
    trace::jaeger::read(json.as_slice(), "sim.json", &decode, &mut skips, &mut |t| {
        decoded += 1;
        ingest.add(t);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(decoded, traces.len());
    let out = ingest.finish();
    assert_eq!(out.skips.total() + skips.total(), 0, "{:?}", out.skips);
    // Every graph the pipeline rebuilt from spans is one of the application's graphs.
    for g in &out.windows.graphs.graphs {
        assert!(app.ids.contains(&g.id), "unknown graph {}", g.root.signature());
    }
    let w = &out.windows.windows[0];
    assert!((w.load_rps - 100.0).abs() < 10.0, "sampling-corrected load {}", w.load_rps);
    assert!(w.arg_mix.keys().any(|k| k.starts_with("distance=")), "{:?}", w.arg_mix);
    assert!(w.containers["ts-basic-service"] > 1, "containers named in spans");
}

#[test]
fn sim_writes_results_and_plots() {
    let config = small(vec![Name::HpaCpu, Name::StaticPeak]);
    let e = eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(e.report.profiling.is_none(), "no profile-based policy, no profiling phase");
    let hpa = &e.report.policies["hpa-cpu"];
    assert_eq!(hpa.containers_vs_hpa, Some(1.0));
    assert!(hpa.summary.mean_containers > 32.0 && hpa.summary.windows == 4);
    let md = eval::markdown(&e.report);
    assert!(md.contains("| hpa-cpu |") && md.contains("| static-peak |"), "{md}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = plot::write_all(dir.path(), &e).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 6);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match f.extension().and_then(|x| x.to_str()) {
            Some("png") => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display()),
            _ => {
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.contains("<svg") && text.contains("hpa-cpu"), "{}", f.display());
            }
        }
    }
}

fn parse_error(args: &[&str]) -> String {
    let mut full = vec!["derm", "simulate", "--out-dir", "x"];
    full.extend_from_slice(args);
    match Cli::try_parse_from(full) {
        Ok(_) => panic!("{args:?} parsed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sim_bad_input_names_the_flag() {
    assert!(parse_error(&["--scenario", "kubeflow"]).contains("--scenario"));
    let e = parse_error(&["--scenario", "alibaba", "--policies", "derm,kpa"]);
    assert!(e.contains("--policies") && e.contains("kpa"), "{e}");
    let e = parse_error(&["--scenario", "alibaba", "--duration-s", "0"]);
    assert!(e.contains("--duration-s"), "{e}");
    let e = parse_error(&["--scenario", "alibaba", "--duration-s", "-5"]);
    assert!(e.contains("--duration-s"), "{e}");
    let e = parse_error(&["--scenario", "alibaba", "--pattern", "diurnal:5,1,60"]);
    assert!(e.contains("--pattern") && e.contains("min_rps"), "{e}");
    let e = parse_error(&["--scenario", "alibaba", "--mix-source", "logs"]);
    assert!(e.contains("--mix-source") && e.contains("counters or traces"), "{e}");

    // The library says the same without clap.
    assert!(Scenario::named("kubeflow").unwrap_err().to_string().contains("--scenario"));
    assert!(Name::parse("kpa").unwrap_err().to_string().contains("--policies"));
    let bad = Config { duration_s: 0.0, ..Config::default() };
    assert!(eval::evaluate(&bad, &|_| {}, None).unwrap_err().to_string().contains("--duration-s"));
    let bad = Config { interval_s: 0, ..Config::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("--interval-s"));
    for (predictor, says) in [("kalman", "kalman"), ("trend:0.5,2", "ALPHA,BETA,PHI"), ("trend:0.5,0.2,1.5", "phi")] {
        let bad = Config { predictor: predictor.into(), ..Config::default() };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("--predictor") && e.contains(says), "{predictor}: {e}");
    }

    // A rate CSV without an `rps` column names the column and the file.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("load.csv");
    std::fs::write(&path, "time_s,requests\n0,10\n60,20\n").unwrap_or_else(|e| panic!("{e}"));
    let e = Pattern::from_csv(&path).unwrap_err().to_string();
    assert!(e.contains("`rps`") && e.contains("load.csv"), "{e}");
    let e = parse_error(&["--scenario", "alibaba", "--pattern", &format!("csv:{}", path.display())]);
    assert!(e.contains("`rps`"), "{e}");
    assert!(
        Pattern::from_csv(Path::new("/nonexistent/load.csv"))
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/load.csv")
    );
}

#[test]
fn sim_long_run_floor_raises_services_and_can_be_turned_off() {
    let summary = |config: &Config| {
        let e = eval::evaluate(config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
        e.report.policies["derm"].summary.clone()
    };
    let on = summary(&small(vec![Name::Derm]));
    let off = summary(&Config { long_run_floor: false, ..small(vec![Name::Derm]) });
    assert!(on.stats.long_run_raised > 0, "{:?}", on.stats);
    assert_eq!(off.stats.long_run_raised, 0);
    assert!(on.mean_containers > off.mean_containers, "{} vs {}", on.mean_containers, off.mean_containers);
}

#[test]
fn sim_rare_threshold_reaches_the_derm_family_only() {
    let run = |t| deterministic_part(&Config { rare_threshold: t, ..small(vec![Name::Derm, Name::Uniform]) });
    let (every, paper) = (run(0.0), run(0.02));
    assert_ne!(every["series"]["derm"], paper["series"]["derm"], "--rare-threshold must reach derm");
    assert_eq!(every["series"]["uniform"], paper["series"]["uniform"], "uniform keeps the paper's threshold");
    let bad = eval::evaluate(&Config { rare_threshold: 1.0, ..small(vec![Name::Derm]) }, &|_| {}, None);
    assert!(bad.is_err_and(|e| e.to_string().contains("--rare-threshold")));
}

#[test]
fn sim_decisions_say_what_the_plan_predicts_for_all_requests() {
    let run = |t| {
        let config = Config { rare_threshold: t, ..small(vec![Name::Derm, Name::HpaCpu]) };
        eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"))
    };
    let every = run(0.0);
    let decisions = &every.decisions["derm"];
    assert_eq!(decisions.len(), (120 / 30) as usize, "{decisions:?}");
    // Until its first window is in, `derm` holds and says nothing of a plan.
    let planned: Vec<_> = decisions.iter().filter(|d| d.predicted_sla_probability.is_some()).collect();
    assert!(planned.len() >= 2, "{decisions:?}");
    for d in planned {
        let (p, all) = (d.predicted_sla_probability.unwrap_or(-1.0), d.all_requests_probability.unwrap_or(-2.0));
        assert!((p - all).abs() < 1e-9, "every graph is in the constraint: {d:?}");
        assert!(d.replicas > 0 && d.load_rps.is_some_and(|l| l > 0.0), "{d:?}");
    }
    assert!(every.decisions["hpa-cpu"].iter().all(|d| d.predicted_sla_probability.is_none()));
    // With the paper's threshold the constraint leaves graphs out, and the log shows it.
    let paper = run(0.02);
    assert!(
        paper.decisions["derm"].iter().any(|d| d.all_requests_probability != d.predicted_sla_probability),
        "{:?}",
        paper.decisions["derm"]
    );
}

#[test]
fn sim_series_share_within_the_sla_agrees_with_the_window_p95() {
    // A tight SLA (the rule gives 4870 ms), so that windows fall on both sides of it.
    let config = Config { sla_ms: Some(3000.0), ..small(vec![Name::Derm, Name::HpaCpu]) };
    let e = eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
    let (mut over, mut under) = (0, 0);
    for (policy, series) in &e.series {
        for w in series.iter().filter(|w| w.requests > 0) {
            assert!((0.0..=1.0).contains(&w.within_sla), "{policy}: {w:?}");
            // Nearest-rank P95 above the SLA means fewer than 95% of the window within it.
            assert_eq!(w.p95_ms > 3000.0, w.within_sla < 0.95, "{policy}: {w:?}");
            if w.within_sla < 0.95 { over += 1 } else { under += 1 }
        }
    }
    assert!(over > 0 && under > 0, "windows on both sides of the SLA: {over} over, {under} within");
}

#[test]
fn sim_a_decision_that_holds_reports_no_plan() {
    // Load stops at 60 s: the decision at 90 s sees no arrivals and holds.
    let pattern = Pattern::parse("steps:-1000=150,60=0").unwrap_or_else(|e| panic!("{e}"));
    let config = Config { pattern: Some(pattern), ..small(vec![Name::Derm]) };
    let e = eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
    let decisions = &e.decisions["derm"];
    let at = |t: f64| decisions.iter().find(|d| (d.now_s - t).abs() < 1e-9).unwrap_or_else(|| panic!("{decisions:?}"));
    assert!(at(60.0).predicted_sla_probability.is_some(), "a plan while the load runs: {decisions:?}");
    assert_eq!(at(90.0).arrivals_rps, 0.0);
    assert!(at(90.0).predicted_sla_probability.is_none(), "a hold: {decisions:?}");
}

#[test]
fn sim_loadmix_learns_from_the_profiling_phase_and_plans() {
    let run = |predictor: &str| {
        let config = Config { predictor: predictor.into(), ..small(vec![Name::Derm]) };
        eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"))
    };
    let (loadmix, trend) = (run("loadmix"), run("trend"));
    // Fitted on the profiling windows before the first decision, it plans as early as the
    // trend does (unfitted, it would hold until the first refit).
    let first = |e: &eval::Evaluation| {
        e.decisions["derm"].iter().find(|d| d.predicted_sla_probability.is_some()).map(|d| d.now_s)
    };
    assert!(first(&loadmix).is_some() && first(&loadmix) == first(&trend), "{:?}", loadmix.decisions["derm"]);
    assert_eq!(loadmix.report.policies["derm"].summary.stats.first_error, None);
    assert_ne!(loadmix.series["derm"], trend.series["derm"], "the predictor must reach the policy");
}

#[test]
fn sim_counters_give_derm_a_mix_closer_to_the_truth_than_the_traces() {
    let run = |mix_source| {
        let config = Config { mix_source, duration_s: 900.0, ..small(vec![Name::Derm]) };
        let e = eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.report.policies["derm"].summary.stats.unexplained_counters, 0);
        let errors: Vec<f64> = e.decisions["derm"].iter().filter_map(|d| d.mix_error).collect();
        assert!(errors.len() >= 25, "{errors:?}");
        errors.iter().sum::<f64>() / errors.len() as f64
    };
    let (counters, traces) = (run(MixSource::Counters), run(MixSource::Traces));
    eprintln!("mean TV of the planned mix from the truth: counters {counters:.4}, traces {traces:.4}");
    assert!(counters < 0.7 * traces, "counters {counters} against traces {traces}");
}
