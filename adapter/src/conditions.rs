//! The DermApp's status conditions besides Ready (which the status patch sets per tick):
//! PredictorReady, ProfilesReady, Feasible, Fresh and the HPA audit's HPAsExact.
//!
//! A merge patch replaces the whole conditions list, so the controller keeps each app's last
//! conditions ([`Kept`]) and writes them with every patch; a condition's lastTransitionTime
//! moves only when its status or reason changes, as Kubernetes conventions ask.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::online::{CONFIRM, PredictorReport, Readiness, Tick};

/// A condition object (`status` True or False).
pub fn condition(kind: &str, ok: bool, reason: &str, message: &str, now: &Time) -> Value {
    serde_json::json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    })
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// PredictorReady: which predictor gave the planned mix (`Model`: the trained model;
/// `Baseline`: Holt's trend, with why the model was not used; `Trend`: no model configured),
/// and, with `spec.callCounts`, whether the windows were counted or traced.
pub fn predictor(p: &PredictorReport) -> Value {
    let tv = p.recent_tv.map_or_else(|| "not scored yet".to_owned(), |tv| format!("recent TV distance {tv:.3}"));
    let (reason, mut message) = match &p.note {
        Some(note) => ("Baseline", format!("{}: {tv}; model not used: {note}", p.name)),
        None if p.name == "trend" => ("Trend", format!("trend: {tv}")),
        None => ("Model", format!("{}: {tv}", p.name)),
    };
    if let Some(counts) = &p.counts {
        message += &format!("; {counts}");
    }
    condition("PredictorReady", true, reason, &message, &now())
}

/// ProfilesReady: every configured service has a latency profile (fitted, or the
/// conservative fallback line, which the message names; refits held back are named too).
pub fn profiles(r: &Readiness) -> Value {
    let total = r.profiled + r.unprofiled.len();
    if r.unprofiled.is_empty() {
        let mut message = format!("{total} of {total} services profiled");
        if !r.fallback.is_empty() {
            message += &format!("; conservative fallback line for: {}", r.fallback.join(", "));
        }
        if !r.held.is_empty() {
            let held: Vec<String> = r.held.iter().map(|(s, n)| format!("{s} ({n} of {CONFIRM})")).collect();
            message += &format!("; refit far from the profile in use, held until confirmed: {}", held.join(", "));
        }
        return condition("ProfilesReady", true, "Fitted", &message, &now());
    }
    let message = format!(
        "{} of {total} services profiled; not yet (too few load levels seen): {}",
        r.profiled,
        r.unprofiled.join(", ")
    );
    condition("ProfilesReady", false, "Learning", &message, &now())
}

/// Feasible, once a solve ran: whether it found a plan (`None` before any solve).
pub fn feasible(tick: &Tick, r: &Readiness) -> Option<Value> {
    match (&r.infeasible, tick) {
        (Some(why), _) => Some(condition("Feasible", false, "Infeasible", why, &now())),
        (None, Tick::Plan(_)) => Some(condition("Feasible", true, "Solved", "the SLA constraint holds", &now())),
        (None, Tick::Hold(_)) => None,
    }
}

/// Fresh: the published values are within `hold_s` of their solve (`last_solve_s`, Unix).
pub fn fresh(tick: &Tick, last_solve_s: Option<i64>, now_s: i64, hold_s: u32) -> Value {
    match (tick, last_solve_s) {
        (Tick::Plan(_), _) => condition("Fresh", true, "Solved", "solved this interval", &now()),
        (Tick::Hold(_), None) => condition("Fresh", false, "NoValues", "nothing published yet", &now()),
        (Tick::Hold(_), Some(t)) => {
            let age = now_s.saturating_sub(t);
            let message = format!("last solve {age} s ago; values stay fresh for {hold_s} s");
            let ok = age <= i64::from(hold_s);
            condition("Fresh", ok, if ok { "Holding" } else { "Stale" }, &message, &now())
        }
    }
}

/// Each app's conditions by type.
#[derive(Debug, Default)]
pub struct Kept(BTreeMap<(String, String), BTreeMap<String, Value>>);

impl Kept {
    /// Records `c` for `key`, keeping the previous lastTransitionTime if nothing changed.
    pub fn set(&mut self, key: &(String, String), c: Value) {
        let kind = c["type"].as_str().unwrap_or_default().to_owned();
        let by_type = self.0.entry(key.clone()).or_default();
        let c = keep_transition_time(by_type.get(&kind), c);
        by_type.insert(kind, c);
    }

    /// The app's conditions, in type order.
    pub fn list(&self, key: &(String, String)) -> Vec<&Value> {
        self.0.get(key).map(|m| m.values().collect()).unwrap_or_default()
    }
}

/// `new` with `old`'s lastTransitionTime when status and reason are unchanged, else now.
fn keep_transition_time(old: Option<&Value>, mut new: Value) -> Value {
    let same = old.is_some_and(|o| o["status"] == new["status"] && o["reason"] == new["reason"]);
    new["lastTransitionTime"] = match old {
        Some(o) if same => o["lastTransitionTime"].clone(),
        _ => serde_json::to_value(now()).unwrap_or_default(),
    };
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(note: Option<&str>) -> PredictorReport {
        PredictorReport { name: "lstm".into(), recent_tv: Some(0.0421), note: note.map(str::to_owned), counts: None }
    }

    fn readiness(unprofiled: &[&str], infeasible: Option<&str>) -> Readiness {
        Readiness {
            unprofiled: unprofiled.iter().map(|s| (*s).to_owned()).collect(),
            fallback: vec!["frontend".to_owned()],
            held: Vec::new(),
            profiled: 5,
            infeasible: infeasible.map(str::to_owned),
            trusted_rps: Vec::new(),
        }
    }

    #[test]
    fn predictor_profiles_and_feasible() {
        let c = predictor(&report(None));
        assert_eq!(
            (c["reason"].as_str(), c["message"].as_str()),
            (Some("Model"), Some("lstm: recent TV distance 0.042"))
        );
        assert_eq!(predictor(&report(Some("worse")))["reason"], "Baseline");
        let trend = PredictorReport { name: "trend".into(), recent_tv: None, note: None, counts: None };
        assert_eq!(
            (predictor(&trend)["reason"].as_str(), predictor(&trend)["message"].as_str()),
            (Some("Trend"), Some("trend: not scored yet"))
        );
        let counted = PredictorReport { counts: Some("mix from the call counters".into()), ..trend };
        assert_eq!(predictor(&counted)["message"], "trend: not scored yet; mix from the call counters");

        let fitted = profiles(&readiness(&[], None));
        assert_eq!((fitted["status"].as_str(), fitted["reason"].as_str()), (Some("True"), Some("Fitted")));
        assert_eq!(fitted["message"], "5 of 5 services profiled; conservative fallback line for: frontend");
        let held = profiles(&Readiness { held: vec![("seat".to_owned(), 1)], ..readiness(&[], None) });
        assert!(held["message"].as_str().is_some_and(|m| m.ends_with("held until confirmed: seat (1 of 3)")), "{held}");
        let learning = profiles(&readiness(&["seat", "price"], None));
        assert_eq!((learning["status"].as_str(), learning["reason"].as_str()), (Some("False"), Some("Learning")));
        assert!(learning["message"].as_str().is_some_and(|m| m.starts_with("5 of 7") && m.ends_with("seat, price")));

        let hold = Tick::Hold("x".into());
        assert!(feasible(&hold, &readiness(&[], None)).is_none());
        let no = feasible(&hold, &readiness(&[], Some("SLA 5 ms below graph g's minimum 7 ms"))).expect("ran");
        assert_eq!((no["status"].as_str(), no["reason"].as_str()), (Some("False"), Some("Infeasible")));
    }

    #[test]
    fn fresh_follows_the_hold_time() {
        let hold = Tick::Hold("quiet".into());
        assert_eq!(fresh(&hold, None, 100, 60)["reason"], "NoValues");
        assert_eq!(fresh(&hold, Some(50), 100, 60)["reason"], "Holding");
        let stale = fresh(&hold, Some(30), 100, 60);
        assert_eq!((stale["status"].as_str(), stale["reason"].as_str()), (Some("False"), Some("Stale")));
        assert_eq!(stale["message"], "last solve 70 s ago; values stay fresh for 60 s");
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let key = ("ns".to_owned(), "app".to_owned());
        let mut kept = Kept::default();
        kept.set(&key, predictor(&report(None)));
        let mut first = kept.list(&key)[0].clone();
        first["lastTransitionTime"] = "2020-01-01T00:00:00Z".into();
        kept.0.get_mut(&key).map(|m| m.insert("PredictorReady".into(), first));
        kept.set(&key, predictor(&report(None)));
        assert_eq!(kept.list(&key)[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        kept.set(&key, predictor(&report(Some("worse than trend"))));
        assert_ne!(kept.list(&key)[0]["lastTransitionTime"], "2020-01-01T00:00:00Z");
        kept.set(&key, profiles(&readiness(&[], None)));
        let types: Vec<&str> = kept.list(&key).iter().filter_map(|c| c["type"].as_str()).collect();
        assert_eq!(types, ["PredictorReady", "ProfilesReady"]);
    }
}
