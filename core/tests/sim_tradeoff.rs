//! `derm tradeoff` on small runs: its points are `derm simulate`'s runs at the same knob
//! values, both knobs reach the policies, and the command writes its files.

use derm_core::sim::eval::{self, Config};
use derm_core::sim::policy::Name;
use derm_core::sim::tradeoff;

fn small() -> Config {
    Config {
        scenario: "trainticket".into(),
        duration_s: 120.0,
        warmup_s: 30,
        profile_levels: 4,
        profile_level_s: 20,
        refit_every: 2,
        ..Config::default()
    }
}

fn simulated(config: Config, name: Name) -> (f64, f64) {
    let e = eval::evaluate(&Config { policies: vec![name], ..config }, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
    let p = &e.report.policies[name.as_str()].summary;
    (p.mean_containers, p.window_violation_rate)
}

#[test]
fn tradeoff_points_are_simulate_runs_at_the_same_knob() {
    let config = tradeoff::Config {
        base: small(),
        seeds: vec![1],
        policies: vec![Name::Derm, Name::HpaCpu],
        load_headrooms: vec![0.1, 0.8],
        tail_margins: vec![eval::Config::default().tail_margin],
        hpa_targets: vec![0.5, 0.7],
        goal: 1.0,
    };
    let report = tradeoff::run(&config, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.points.len(), 4);
    let at = |policy: &str, value: f64| {
        let p = report.points.iter().find(|p| p.policy == policy && p.value == value).expect("point");
        (p.mean_containers, p.window_violation_rate)
    };
    assert_eq!(at("derm", 0.1), simulated(small(), Name::Derm), "the default headroom is derm simulate's run");
    assert_eq!(at("derm", 0.8), simulated(Config { load_headroom: 0.8, ..small() }, Name::Derm));
    assert_eq!(at("hpa-cpu", 0.7), simulated(Config { hpa_target: 0.7, ..small() }, Name::HpaCpu));
    assert!(at("derm", 0.8).0 > at("derm", 0.1).0, "more headroom, more containers: {report:?}");
    assert!(at("hpa-cpu", 0.7).0 < at("hpa-cpu", 0.5).0, "a higher CPU target, fewer containers: {report:?}");
    // With every point within the goal, the best is the cheapest.
    let best = report.best["hpa-cpu"].as_ref().expect("within a goal of 100%");
    assert_eq!((best.value, best.vs_hpa), (0.7, Some(1.0)));
}

#[test]
fn tail_margins_are_a_second_knob_of_the_profile_based_policies() {
    let config = tradeoff::Config {
        base: small(),
        seeds: vec![1],
        policies: vec![Name::Derm, Name::HpaCpu],
        load_headrooms: vec![0.1],
        tail_margins: vec![0.0, 0.8],
        hpa_targets: vec![0.5],
        goal: 1.0,
    };
    let report = tradeoff::run(&config, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.points.len(), 3, "two margins for derm, none for hpa-cpu: {report:?}");
    let at = |margin: f64| {
        let p = report.points.iter().find(|p| p.policy == "derm" && p.tail_margin == Some(margin)).expect("point");
        (p.mean_containers, p.window_violation_rate)
    };
    assert_eq!(at(0.8), simulated(Config { tail_margin: 0.8, ..small() }, Name::Derm));
    assert!(at(0.8).0 > at(0.0).0, "a higher target, more containers: {report:?}");
    assert!(report.points.iter().any(|p| p.policy == "hpa-cpu" && p.tail_margin.is_none()));
    // The best point is the cheapest over both knobs.
    let best = report.best["derm"].as_ref().expect("within a goal of 100%");
    assert_eq!(best.tail_margin, Some(0.0));
}

#[test]
fn tradeoff_command_writes_its_files_and_names_bad_flags() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let derm = |policies: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_derm"))
            .args(["tradeoff", "--scenario", "trainticket", "--duration-s", "60", "--warmup-s", "30"])
            .args(["--profile-levels", "3", "--profile-level-s", "20", "--seeds", "3", "--policies", policies])
            .args(["--load-headrooms", "0.2", "--tail-margins", "0.2,0.6", "--hpa-targets", "0.5", "--out-dir"])
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let ok = derm("derm-static,hpa-cpu");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    for f in ["tradeoff.json", "tradeoff.md", "tradeoff.svg", "tradeoff.png"] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 100, "{f}: {len} bytes");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tradeoff.json")).unwrap_or_default()).unwrap_or_default();
    assert_eq!(json["points"].as_array().map(Vec::len), Some(3), "derm-static at two margins");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Fewest containers with at most 5.0%"));

    let bad_margin = std::process::Command::new(env!("CARGO_BIN_EXE_derm"))
        .args(["tradeoff", "--scenario", "trainticket", "--tail-margins", "0.4,1", "--out-dir"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&bad_margin.stderr);
    assert!(!bad_margin.status.success() && err.contains("--tail-margins"), "{err}");
    for (policies, words) in [("static-peak", ["--policies", "static-peak"]), ("derm,nope", ["--policies", "nope"])] {
        let bad = derm(policies);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && words.iter().all(|w| err.contains(w)), "{policies}: {err}");
    }
}
