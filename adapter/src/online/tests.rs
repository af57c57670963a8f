//! The online loop on the generator's acceptance scenario (its traces, and a mesh's exact
//! counts where a test needs them): learning and planning from traces, the long-run floor, the
//! spec's safety knobs, the load trend, holds on missing data, restored state, the catalog's
//! bounds, the open window, counted windows and a counters outage.

use derm_core::generate::Scenario;

use super::*;

fn spec(sla_ms: f64) -> DermAppSpec {
    let services: Vec<_> = ["frontend", "auth", "ticket", "route", "seat", "price", "order"]
        .iter()
        .map(|s| serde_json::json!({"name": s, "scaleTargetRef": {"kind": "Deployment", "name": s}, "minReplicas": 1, "maxReplicas": 50}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "sla": {"latencyMs": sla_ms, "percentile": 95.0},
        "entryService": "frontend",
        "traceSource": {"otlp": {}},
        "services": services,
        "intervalSeconds": 240
    }))
    .unwrap()
}

/// Feeds the acceptance scenario level by level (one 240 s window each) and returns the
/// ticks, one per level.
fn run(app: &mut OnlineApp, scenario: &Scenario) -> Vec<Tick> {
    let level = i64::from(scenario.level_s);
    let mut traces = scenario.traces(0).into_iter().peekable();
    (0..scenario.levels_rps.len() as i64)
        .map(|k| {
            while let Some(t) = traces.next_if(|t| t.spans[0].start_us < (k + 1) * level * 1_000_000) {
                app.add(t);
            }
            // One interval after level k closed.
            app.tick((k + 2) * level, scenario.level_s)
        })
        .collect()
}

/// The true call rates of the scenario's level `k` (what a mesh counts).
fn counted(scenario: &Scenario, k: usize) -> BTreeMap<String, f64> {
    let mut calls = BTreeMap::new();
    for (g, share) in scenario.graphs.iter().zip(scenario.mix(k)) {
        for (svc, n) in g.root.calls() {
            *calls.entry(svc.to_owned()).or_insert(0.0) += scenario.levels_rps[k] * share * f64::from(n);
        }
    }
    calls
}

/// With `spec.callCounts`: as [`run`], and before each tick the counts of the level that
/// just ended. Returns each plan's level and update.
fn run_counted(app: &mut OnlineApp, scenario: &Scenario) -> Vec<(usize, Update)> {
    let level = i64::from(scenario.level_s);
    let mut traces = scenario.traces(0).into_iter().peekable();
    app.add_counts(0, scenario.level_s, counted(scenario, 0));
    let mut plans = Vec::new();
    for k in 0..scenario.levels_rps.len() - 1 {
        while let Some(t) = traces.next_if(|t| t.spans[0].start_us < (k as i64 + 1) * level * 1_000_000) {
            app.add(t);
        }
        app.add_counts((k as i64 + 1) * level, scenario.level_s, counted(scenario, k + 1));
        if let Tick::Plan(u) = app.tick((k as i64 + 2) * level, scenario.level_s) {
            plans.push((k, u));
        }
    }
    plans
}

/// The TV distance of a predicted mix from the scenario's at level `k` (graphs told apart
/// by their number of calls).
fn tv_from_truth(app: &OnlineApp, scenario: &Scenario, mix: &[GraphShare], k: usize) -> f64 {
    let size = |root: &Node| root.calls().values().sum::<u32>();
    let truth: BTreeMap<u32, f64> =
        scenario.graphs.iter().zip(scenario.mix(k)).map(|(g, s)| (size(&g.root), s)).collect();
    let mut predicted: BTreeMap<u32, f64> = BTreeMap::new();
    for g in mix {
        *predicted.entry(size(&app.catalog[&g.graph])).or_insert(0.0) += g.share;
    }
    let keys: std::collections::BTreeSet<u32> = truth.keys().chain(predicted.keys()).copied().collect();
    0.5 * keys.iter().map(|k| (truth.get(k).unwrap_or(&0.0) - predicted.get(k).unwrap_or(&0.0)).abs()).sum::<f64>()
}

/// `spec` with call counts and the scenario's `distance` argument.
fn counting(mut spec: DermAppSpec) -> DermAppSpec {
    spec.call_counts = Some(
        serde_json::from_value(serde_json::json!({"prometheus": {"url": "http://p:9090", "query": "q"}})).unwrap(),
    );
    spec.argument_tags = vec![crate::crd::ArgumentTag { name: "distance".into(), buckets: vec![2.0, 4.0, 6.0] }];
    spec
}

#[test]
fn counted_windows_give_a_fresher_and_closer_mix_and_load() {
    let scenario = Scenario::acceptance(3);
    let mut app = OnlineApp::new(counting(spec(40.0)), scenario.sampling);
    let plans = run_counted(&mut app, &scenario);
    assert!(plans.len() >= 7, "{}", plans.len());
    let mut traced = OnlineApp::new(spec(40.0), scenario.sampling);
    let traced_plans: BTreeMap<usize, Update> = run(&mut traced, &scenario)
        .into_iter()
        .enumerate()
        .filter_map(|(k, t)| match t {
            Tick::Plan(u) => Some((k, u)),
            Tick::Hold(_) => None,
        })
        .collect();
    let (mut tv_counted, mut tv_traced, mut n) = (0.0, 0.0, 0);
    for (k, u) in &plans {
        let note = u.predictor.counts.as_deref().unwrap_or_default();
        assert_eq!(note, "mix from the call counters, 1 interval(s) ahead", "level {k}");
        // The load is the level that just ended, counted exactly.
        assert!((u.observed_load_rps - scenario.levels_rps[k + 1]).abs() < 1e-9, "level {k}");
        if let Some(t) = traced_plans.get(k) {
            // Both plan for level k + 2.
            tv_counted += tv_from_truth(&app, &scenario, &u.predicted_graph_mix, k + 2);
            tv_traced += tv_from_truth(&traced, &scenario, &t.predicted_graph_mix, k + 2);
            n += 1;
        }
    }
    // Closer than the traces' (0.022 against 0.039 here): what is left is the trend's lag
    // on the scenario's ramp (the mix moves 0.033 per level), largest in the first plans.
    let (tv_counted, tv_traced) = (tv_counted / f64::from(n), tv_traced / f64::from(n));
    assert!(n >= 6 && tv_counted < tv_traced, "counted {tv_counted} vs traced {tv_traced}");
    // Each counted window's mix is its level's, exactly (the counts are exact here).
    let plan_s = 10 * i64::from(scenario.level_s);
    let recent = app.counts.recent(&app.catalog, app.catalog_version, "frontend", &app.windows, plan_s, 240).unwrap();
    assert_eq!((recent.windows.len(), recent.horizon, recent.unexplained), (10, 1, 0));
    // Each takes its own traced window's argument mix; the newest, the newest traced one's.
    let traced = &app.windows;
    assert_eq!(traced.len(), 9);
    for (k, w) in recent.windows.iter().enumerate() {
        assert_eq!(w.arg_mix, traced[k.min(8)].arg_mix, "level {k}");
    }
    assert!(traced.windows(2).all(|p| !p[0].arg_mix.is_empty() && p[0].arg_mix != p[1].arg_mix));
    for (k, w) in recent.windows.iter().enumerate() {
        let mix: Vec<GraphShare> =
            w.graph_mix.iter().map(|(g, s)| GraphShare { graph: g.clone(), share: *s }).collect();
        assert!(tv_from_truth(&app, &scenario, &mix, k) < 1e-6, "level {k}: {mix:?}");
    }
}

#[test]
fn counts_the_graphs_cannot_explain_or_too_old_leave_the_mix_to_the_traces() {
    let scenario = Scenario::acceptance(3);
    let level = i64::from(scenario.level_s);
    // Calls of a service no traced graph has, as many as the entry's.
    let mut app = OnlineApp::new(counting(spec(40.0)), scenario.sampling);
    let mut plans = 0;
    let mut traces = scenario.traces(0).into_iter().peekable();
    for k in 0..scenario.levels_rps.len() as i64 - 1 {
        while let Some(t) = traces.next_if(|t| t.spans[0].start_us < (k + 1) * level * 1_000_000) {
            app.add(t);
        }
        let mut calls = counted(&scenario, k as usize + 1);
        calls.insert("cache".into(), calls["frontend"]);
        app.add_counts((k + 1) * level, scenario.level_s, calls);
        if let Tick::Plan(u) = app.tick((k + 2) * level, scenario.level_s) {
            let note = u.predictor.counts.unwrap_or_default();
            assert!(note.starts_with("mix from the traces: call counters not used: the graphs"), "{note}");
            plans += 1;
        }
    }
    assert!(plans >= 7, "{plans}");
    // Counts that stopped three intervals before the plan (Prometheus down): the traces.
    let mut app = OnlineApp::new(counting(spec(40.0)), scenario.sampling);
    let _ = run_counted(&mut app, &scenario);
    let last = scenario.levels_rps.len() as i64;
    let mut traces = scenario.traces(0).into_iter().filter(|t| t.spans[0].start_us >= (last - 1) * level * 1_000_000);
    for t in traces.by_ref() {
        app.add(t);
    }
    let Tick::Plan(u) = app.tick((last + 2) * level, scenario.level_s) else { panic!("no plan") };
    let note = u.predictor.counts.unwrap_or_default();
    assert!(note.contains("newest counted interval ended 480 s before the plan"), "{note}");
}

#[test]
fn a_counters_outage_never_lowers_a_count_and_their_return_lifts_the_floor() {
    // Load falling level by level, so the traces' plans after the counts stop are lower.
    let mut scenario = Scenario::acceptance(3);
    scenario.levels_rps.reverse();
    let level = i64::from(scenario.level_s);
    let (stop, last) = (5, scenario.levels_rps.len());
    let mut app = OnlineApp::new(counting(spec(40.0)), scenario.sampling);
    let mut traced = OnlineApp::new(spec(40.0), scenario.sampling);
    let mut traces = scenario.traces(0).into_iter().peekable();
    app.add_counts(0, scenario.level_s, counted(&scenario, 0));
    let (mut floor, mut kept, mut below) = (BTreeMap::new(), 0, 0);
    for k in 0..last - 1 {
        while let Some(t) = traces.next_if(|t| t.spans[0].start_us < (k as i64 + 1) * level * 1_000_000) {
            app.add(t.clone());
            traced.add(t);
        }
        // The counts stop after level `stop` and come back for the last level.
        if k < stop || k == last - 2 {
            app.add_counts((k as i64 + 1) * level, scenario.level_s, counted(&scenario, k + 1));
        }
        let now_s = (k as i64 + 2) * level;
        let (Tick::Plan(u), Tick::Plan(t)) = (app.tick(now_s, scenario.level_s), traced.tick(now_s, scenario.level_s))
        else {
            continue;
        };
        let note = u.predictor.counts.clone().unwrap_or_default();
        if note.starts_with("mix from the call counters") {
            if k == last - 2 {
                // Back: the floor is lifted.
                assert!(u.desired_replicas.iter().any(|(s, n)| *n < floor[s]), "{:?} vs {floor:?}", u.desired_replicas);
            }
            floor = u.desired_replicas.clone();
            continue;
        }
        assert!(note.contains("newest counted interval ended"), "level {k}: {note}");
        for (s, n) in &u.desired_replicas {
            assert!(*n >= floor[s] && *n >= t.desired_replicas[s], "level {k}, {s}: {n} vs {floor:?}");
        }
        below += t.desired_replicas.iter().filter(|(s, n)| **n < floor[*s]).count();
        kept += usize::from(note.contains("kept at the last counted plan's replicas"));
    }
    // Without the floor, the traces' plans would have lowered some services.
    assert!(below > 0 && kept > 0, "below {below}, kept {kept}");
    // The floor survives a restart.
    let mut restored = OnlineApp::new(counting(spec(40.0)), scenario.sampling);
    restored.restore(app.state());
    assert_eq!(restored.counted_plan, app.counted_plan);
}

#[test]
fn learns_and_plans_from_traces() {
    let scenario = Scenario::acceptance(3);
    let mut app = OnlineApp::new(spec(40.0), scenario.sampling);
    let ticks = run(&mut app, &scenario);
    let plans: Vec<(usize, &Update)> = ticks
        .iter()
        .enumerate()
        .filter_map(|(k, t)| match t {
            Tick::Plan(u) => Some((k, u)),
            Tick::Hold(_) => None,
        })
        .collect();
    assert!(plans.len() >= 7, "{ticks:?}");
    for (k, u) in &plans {
        let want = scenario.levels_rps[*k];
        assert!((u.observed_load_rps - want).abs() < 0.15 * want, "level {k}: {} vs {want}", u.observed_load_rps);
        assert!(u.predicted_sla_probability >= 0.95, "level {k}: {}", u.predicted_sla_probability);
        assert_eq!(u.desired_replicas.len(), 7);
        assert!(u.desired_replicas.values().all(|n| (1..=50).contains(n)));
        let mix: f64 = u.predicted_graph_mix.iter().map(|g| g.share).sum();
        assert!((mix - 1.0).abs() < 1e-6);
        let fa = u.call_affinity.iter().find(|c| c.from == "frontend" && c.to == "auth").unwrap();
        assert!((fa.calls_per_second - u.observed_load_rps).abs() < 0.2 * u.observed_load_rps);
    }
    // The trust region: the last plan keeps every container within 1.1x the highest
    // per-container load its profile saw, at the last window's call rate.
    let (last_plan, last_window) = (plans[plans.len() - 1].1, app.windows.last().unwrap());
    for (svc, n) in &last_plan.desired_replicas {
        let (w_max, calls) = (app.profiles().services[svc].w_max_rps, last_window.calls_rps[svc]);
        assert!(
            f64::from(*n) * w_max * TRUST_REGION >= calls * (1.0 + app.spec.load_headroom),
            "{svc}: {n} x {w_max} < {calls}"
        );
    }
    // More load, more containers.
    let total = |u: &Update| u.desired_replicas.values().sum::<u32>();
    let (first, last) = (plans[0].1, plans[plans.len() - 1].1);
    assert!(total(last) > total(first), "{} vs {}", total(last), total(first));
    assert_eq!(app.profiles().services.len(), 7);
}

#[test]
fn the_long_run_mix_floors_the_forecast_plan() {
    let scenario = Scenario::acceptance(4);
    let mut app = OnlineApp::new(spec(40.0), scenario.sampling);
    let _ = run(&mut app, &scenario);
    let mut ids: Vec<(usize, String)> = app
        .catalog
        .iter()
        .map(|(id, root)| {
            let mut calls = 0;
            root.walk(&mut |_| calls += 1);
            (calls, id.clone())
        })
        .collect();
    ids.sort();
    let (small, large) = (ids[0].1.clone(), ids[ids.len() - 1].1.clone());
    assert!(ids[0].0 < ids[ids.len() - 1].0, "{ids:?}");
    let forecast: BTreeMap<String, f64> = [(small, 1.0)].into();
    let mut plan = |long_run: LongRun| {
        app.long_run = long_run;
        match app.solve(&forecast, 60.0, 60.0, &BTreeMap::new(), PredictorReport::default()) {
            Tick::Plan(u) => u.desired_replicas,
            Tick::Hold(why) => panic!("{why}"),
        }
    };
    let alone = plan(LongRun { weights: forecast.clone(), requests: 1.0 });
    let floored = plan(LongRun { weights: [(large, 1.0)].into(), requests: 1.0 });
    assert!(alone.iter().all(|(s, n)| floored[s] >= *n), "{alone:?} vs {floored:?}");
    assert!(alone.iter().any(|(s, n)| floored[s] > *n), "the large graph's services: {alone:?} vs {floored:?}");
    // Persisted, and rebuilt from the windows of a state stored before it existed.
    let state = app.state();
    assert_eq!(state.long_run, app.long_run);
    let mut fresh = OnlineApp::new(spec(40.0), scenario.sampling);
    fresh.restore(State { long_run: LongRun::default(), ..state.clone() });
    assert_eq!(fresh.long_run, LongRun::over(&state.windows));
}

#[test]
fn the_spec_safety_knobs_reach_the_plan() {
    let scenario = Scenario::acceptance(4);
    // An SLA tight enough that the plan is the SLA's, not the trust region's floors.
    let mut app = OnlineApp::new(spec(30.0), scenario.sampling);
    let _ = run(&mut app, &scenario);
    let mix = app.long_run.mix().expect("a long-run mix after the run");
    let mut plan = |load_headroom: f64, tail_margin: f64| {
        app.spec.load_headroom = load_headroom;
        app.spec.tail_margin = tail_margin;
        // The scenario's top load.
        match app.solve(&mix, 220.0, 220.0, &BTreeMap::new(), PredictorReport::default()) {
            Tick::Plan(u) => (u.desired_replicas.values().sum::<u32>(), u.predicted_sla_probability),
            Tick::Hold(why) => panic!("{why}"),
        }
    };
    let (base, p_base) = plan(0.1, 0.4);
    let (margin, p_margin) = plan(0.1, 0.8);
    let (headroom, _) = plan(0.5, 0.4);
    // P95 with 40% of the tail removed is solved as 0.97; with 80%, as 0.99.
    assert!(p_base >= 0.97 - 1e-6 && p_margin >= 0.99 - 1e-6, "{p_base} {p_margin}");
    assert!(margin > base && headroom > base, "{base} {margin} {headroom}");
}

#[test]
fn graphs_gone_from_windows_and_rare_in_the_long_run_are_forgotten() {
    let mut app = OnlineApp::new(spec(40.0), 0.1);
    for id in ["now", "rare", "usual"] {
        app.catalog.insert(id.into(), Node::leaf("frontend"));
    }
    app.windows.push(Window {
        start_s: 0,
        duration_s: 30,
        load_rps: 10.0,
        requests: 10,
        graph_mix: [("now".to_owned(), 1.0)].into(),
        arg_mix: BTreeMap::new(),
        containers: BTreeMap::new(),
        calls_rps: BTreeMap::new(),
    });
    // Long-run shares: "rare" 5e-5, "usual" 1e-3, "now" the rest.
    let weights = [("now", 1e6 - 1050.0), ("rare", 50.0), ("usual", 1000.0)];
    app.long_run = LongRun { weights: weights.map(|(g, w)| (g.to_owned(), w)).into(), requests: 1e6 };
    app.prune();
    assert_eq!(app.catalog.keys().collect::<Vec<_>>(), ["now", "usual"]);
    assert_eq!(app.long_run.weights.keys().collect::<Vec<_>>(), ["now", "usual"]);
    // A graph a kept window names stays, however rare in the long run.
    app.long_run.weights.insert("now".into(), 0.0);
    app.prune();
    assert!(app.catalog.contains_key("now"));
}

#[test]
fn plans_for_a_rising_trend_over_consecutive_windows_only() {
    let w = |start_s: i64, load_rps: f64| Window {
        start_s,
        duration_s: 30,
        load_rps,
        requests: 1,
        graph_mix: BTreeMap::new(),
        arg_mix: BTreeMap::new(),
        containers: BTreeMap::new(),
        calls_rps: BTreeMap::new(),
    };
    // Rising by 10 per 30 s window: 40 + 1.5 windows of slope.
    let rising = [w(0, 10.0), w(30, 20.0), w(60, 30.0), w(90, 40.0)];
    assert!((planned_load(&rising) - 55.0).abs() < 1e-9);
    // A gap before the last two windows: only they form the trend (slope 10).
    let gap = [w(0, 100.0), w(30, 5.0), w(120, 30.0), w(150, 40.0)];
    assert!((planned_load(&gap) - 55.0).abs() < 1e-9);
    // A gap right before the newest window: no trend, the measured rate.
    let lone = [w(0, 10.0), w(30, 20.0), w(120, 40.0)];
    assert_eq!(planned_load(&lone), 40.0);
    // Falling: the measured rate, never less.
    let falling = [w(0, 40.0), w(30, 30.0), w(60, 20.0)];
    assert_eq!(planned_load(&falling), 20.0);
    assert_eq!(planned_load(&[]), 0.0);
}

#[test]
fn holds_without_data_or_when_infeasible() {
    let scenario = Scenario::acceptance(4);
    let mut app = OnlineApp::new(spec(40.0), scenario.sampling);
    assert!(matches!(app.tick(1_000, 240), Tick::Hold(r) if r.contains("no traces")));
    // An SLA below every graph's zero-load latency: the solver refuses, the loop holds.
    let mut tight = OnlineApp::new(spec(0.5), scenario.sampling);
    let ticks = run(&mut tight, &scenario);
    assert!(ticks.iter().all(|t| matches!(t, Tick::Hold(_))), "{ticks:?}");
    let r = tight.readiness();
    assert!(r.infeasible.as_ref().is_some_and(|e| e.contains("latency")), "{r:?}");
    assert_eq!((r.profiled, r.unprofiled.len()), (7, 0));
    // The trust region of every profiled service, as the floors use it.
    assert_eq!(r.trusted_rps.len(), 7);
    for (svc, rps) in &r.trusted_rps {
        assert_eq!(*rps, tight.profiles().services[svc].w_max_rps * TRUST_REGION, "{svc}");
    }
    let fresh = OnlineApp::new(spec(40.0), scenario.sampling).readiness();
    assert_eq!((fresh.profiled, fresh.unprofiled.len(), fresh.fallback.len(), fresh.infeasible), (0, 7, 0, None));
    assert!(fresh.trusted_rps.is_empty());
}

#[test]
fn restored_state_plans_from_one_new_window() {
    let scenario = Scenario::acceptance(6);
    let mut app = OnlineApp::new(spec(40.0), scenario.sampling);
    let _ = run(&mut app, &scenario);
    let state: State = serde_json::from_str(&serde_json::to_string(&app.state()).unwrap()).unwrap();
    assert_eq!(state.profiles.services.len(), 7);
    assert!(state.windows.len() <= RECENT && !state.windows.is_empty());
    // A fresh loop with one window of one load level: no profile could be fitted from it
    // alone, but the restored ones plan at once.
    let mut fresh = OnlineApp::new(spec(40.0), scenario.sampling);
    fresh.restore(state);
    let level = i64::from(scenario.level_s);
    for t in scenario.traces(0).into_iter().filter(|t| t.spans[0].start_us < level * 1_000_000) {
        fresh.add(t);
    }
    assert!(matches!(fresh.tick(2 * level, scenario.level_s), Tick::Plan(_)));
    assert!(fresh.profiles().services.values().all(|p| !p.fallback));
}

#[test]
fn traces_of_the_open_window_wait() {
    let scenario = Scenario::acceptance(5);
    let mut app = OnlineApp::new(spec(40.0), scenario.sampling);
    for t in scenario.traces(0).into_iter().take_while(|t| t.spans[0].start_us < 240_000_000) {
        app.add(t);
    }
    // At t = 300 s the window [0, 240) closed less than one interval ago.
    assert!(matches!(app.tick(300, 240), Tick::Hold(_)));
    assert!(app.pending.len() > 100);
    let _ = app.tick(480, 240);
    assert!(app.pending.is_empty());
}
