//! LSTM tests (feature `lstm`; libtorch from hack/install-libtorch.sh).

use std::collections::BTreeMap;

use super::*;
use crate::predict::metrics::tv;
use crate::predict::{Last, evaluate};

/// A mix that follows the load with a lag: high load (every 4th window) is followed by a
/// window dominated by graph `b`; otherwise `a` dominates. Last value is wrong at every switch.
fn series(n: i64) -> Vec<Window> {
    (0..n)
        .map(|t| {
            let high = t % 4 == 0;
            let after_high = t % 4 == 1;
            let b = if after_high { 0.9 } else { 0.1 };
            Window {
                start_s: 30 * t,
                duration_s: 30,
                load_rps: if high { 200.0 } else { 50.0 },
                requests: 100,
                graph_mix: BTreeMap::from([("a".to_owned(), 1.0 - b), ("b".to_owned(), b)]),
                arg_mix: BTreeMap::from([("d=1".to_owned(), 1.0)]),
                containers: BTreeMap::new(),
                calls_rps: BTreeMap::new(),
            }
        })
        .collect()
}

fn config() -> Config {
    Config { window: 3, epochs: 60, batch: 32, learning_rate: 5e-3, patience: 60, cuda: false, ..Config::default() }
}

fn trained(attention: bool) -> Lstm {
    let mut m = Lstm::new(Config { attention, ..config() }).unwrap_or_else(|e| panic!("{e}"));
    m.fit(&series(240)).unwrap_or_else(|e| panic!("{e}"));
    m
}

#[test]
fn learns_what_last_value_cannot() {
    let data = series(320);
    let lstm = evaluate::evaluate(&mut || Ok(Box::new(trained(true))), std::slice::from_ref(&data), 0.75, 0.1, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let last = evaluate::evaluate(&mut || Ok(Box::new(Last)), std::slice::from_ref(&data), 0.75, 0.1, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lstm.all.accuracy > 0.97, "{lstm:?}");
    assert!(lstm.changed.accuracy > last.changed.accuracy + 0.3, "lstm {lstm:?} last {last:?}");
    assert!(trained(true).meta().is_some_and(|m| m.validation_accuracy > 0.97));
}

#[test]
fn save_load_round_trip_and_bad_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("model.ot");
    let m = trained(false);
    m.save(&path).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Lstm::load(&path, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.name(), "lstm-noattn");
    let recent = series(8);
    let (a, b) = (m.predict(&recent), loaded.predict(&recent));
    let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
    assert!(tv(&a, &b) < 1e-6, "{a:?} {b:?}");

    // A sidecar describing another network: the weights do not fit.
    let sidecar = Lstm::sidecar(&path);
    let mut meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    meta.graphs.push("c".into());
    std::fs::write(&sidecar, serde_json::to_string(&meta).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let err = Lstm::load(&path, false).unwrap_err().to_string();
    assert!(err.contains("model.ot"), "{err}");
    std::fs::write(&sidecar, "{").unwrap_or_else(|e| panic!("{e}"));
    assert!(Lstm::load(&path, false).unwrap_err().to_string().contains("invalid metadata"));
    std::fs::remove_file(&sidecar).unwrap_or_else(|e| panic!("{e}"));
    assert!(Lstm::load(&path, false).unwrap_err().to_string().contains("sidecar"));
}

#[test]
fn unseen_graphs_go_to_other_and_foreign_catalogs_are_refused() {
    let m = trained(true);
    let meta = m.meta().cloned().unwrap_or_else(|| panic!("fitted"));
    let mut recent = series(6);
    let foreign: Vec<Window> = recent
        .iter()
        .cloned()
        .map(|mut w| {
            w.graph_mix = BTreeMap::from([("zz".to_owned(), 1.0)]);
            w
        })
        .collect();
    assert!(meta.check_catalog(&foreign).unwrap_err().to_string().contains("does not match"));
    recent[5].graph_mix = BTreeMap::from([("a".to_owned(), 0.5), ("new".to_owned(), 0.5)]);
    let share = meta.check_catalog(&recent).unwrap_or_else(|e| panic!("{e}"));
    assert!((share - 0.5 / 6.0).abs() < 1e-9, "{share}");
    let mut x = Vec::new();
    meta.encode(&recent[5], &mut x);
    // arg slots: d=1, other; graph slots: a, b, other; load.
    assert_eq!(x.len(), 6);
    assert!((x[2] - 0.5).abs() < 1e-6 && x[3] == 0.0 && (x[4] - 0.5).abs() < 1e-6, "{x:?}");
    let p = m.predict(&recent).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.keys().all(|k| k == "a" || k == "b" || k == OTHER), "{p:?}");
    assert!((p.values().sum::<f64>() - 1.0).abs() < 1e-6);
}

#[test]
fn bad_input_is_an_error() {
    let m = trained(true);
    let short = series(2);
    assert!(m.predict(&short).unwrap_err().to_string().contains("too short"));
    assert!(m.predict(&[]).unwrap_err().to_string().contains("empty history"));
    let mut nan = series(6);
    nan[3].load_rps = f64::NAN;
    let err = m.predict(&nan).unwrap_err().to_string();
    assert!(err.contains("load_rps") && err.contains("90 s"), "{err}");
    let mut fresh = Lstm::new(config()).unwrap_or_else(|e| panic!("{e}"));
    assert!(fresh.predict(&series(6)).unwrap_err().to_string().contains("not fitted"));
    assert!(fresh.fit(&series(4)).unwrap_err().to_string().contains("too short"));
    assert!(Lstm::new(Config { window: 0, ..config() }).unwrap_err().to_string().contains("window"));
}

#[test]
fn a_sidecar_without_the_anchor_field_is_the_network_without_anchor() {
    // Models written before the anchor existed: their sidecar has no `anchor`, their weights
    // no blend; they load as the plain network and predict as before.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("model.ot");
    let mut m = Lstm::new(Config { anchor: false, ..config() }).unwrap_or_else(|e| panic!("{e}"));
    m.fit(&series(120)).unwrap_or_else(|e| panic!("{e}"));
    m.save(&path).unwrap_or_else(|e| panic!("{e}"));
    let sidecar = Lstm::sidecar(&path);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json.as_object_mut().and_then(|o| o.remove("anchor")), Some(serde_json::Value::Bool(false)));
    std::fs::write(&sidecar, json.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Lstm::load(&path, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.meta().is_some_and(|m| !m.anchor));
    let recent = series(8);
    let (a, b) = (m.predict(&recent), loaded.predict(&recent));
    let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
    assert!(tv(&a, &b) < 1e-6, "{a:?} {b:?}");
    // A sidecar claiming an anchor the weights do not have is refused (the blend is missing).
    json["anchor"] = serde_json::Value::Bool(true);
    std::fs::write(&sidecar, json.to_string()).unwrap_or_else(|e| panic!("{e}"));
    assert!(Lstm::load(&path, false).unwrap_err().to_string().contains("model.ot"));
}

#[test]
fn a_horizon_two_model_predicts_the_window_after_next() {
    let data = series(240);
    let mut m = Lstm::new(Config { horizon: 2, ..config() }).unwrap_or_else(|e| panic!("{e}"));
    m.fit(&data[..200]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.meta().map(|m| m.horizon), Some(2));
    let (mut next, mut after) = (0.0, 0.0);
    let scored = 200..236;
    for t in scored.clone() {
        let p = m.predict(&data[t - 3..t]).unwrap_or_else(|e| panic!("{e}"));
        next += tv(&p, &data[t].graph_mix);
        after += tv(&p, &data[t + 1].graph_mix);
    }
    let n = scored.len() as f64;
    // The pattern has period 4, so the next window and the one after differ at every switch.
    assert!(after / n < 0.03, "TV to the window after next {}", after / n);
    assert!(next / n > 0.2, "TV to the next window {}", next / n);
    let too_short = Lstm::new(Config { horizon: 2, ..config() }).unwrap_or_else(|e| panic!("{e}")).fit(&data[..5]);
    assert!(too_short.unwrap_err().to_string().contains("too short"));
    assert!(Lstm::new(Config { horizon: 0, ..config() }).unwrap_err().to_string().contains("horizon"));
}
