//! `derm predict --evaluate --sweep-window`: one evaluation per history length, through the
//! real binary on simulated windows.

use std::process::Command;

fn derm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_derm")).args(args).output().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sweeps_history_lengths_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().to_str().unwrap_or_default();
    let sim = derm(&["simulate", "--scenario", "trainticket", "--windows-only", "400", "--out-dir", out]);
    assert!(sim.status.success(), "{}", String::from_utf8_lossy(&sim.stderr));
    let windows = format!("{out}/windows.json");
    let run = derm(&[
        "predict",
        "--evaluate",
        "--windows",
        &windows,
        "--models",
        "ma,last",
        "--sweep-window",
        "1..3",
        "--json",
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["windows"], serde_json::json!([1, 2, 3]));
    let acc = |m: &str, l: &str| json["models"][m][l]["accuracy"].as_f64().unwrap_or(f64::NAN);
    // Last value reads no history length: the same score at every l. A moving average over
    // one window is the last value; over more windows it differs.
    assert!(acc("last", "1") > 0.5 && acc("last", "1") == acc("last", "3"), "{json}");
    assert_eq!(acc("ma", "1"), acc("last", "1"));
    assert!(acc("ma", "2") != acc("ma", "1") && acc("ma", "3") != acc("ma", "2"), "{json}");

    let bad = derm(&["predict", "--evaluate", "--windows", &windows, "--sweep-window", "0..2"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("--sweep-window") && err.contains("\"0..2\""), "{err}");
}
