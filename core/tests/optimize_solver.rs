//! Optimizer acceptance: optimality against slow reference solvers, exact feasibility of
//! every plan, iterations per starting point, the paper's motivating example, bad input.

use std::collections::BTreeMap;

use derm_core::generate::instance::{self, Spec};
use derm_core::graph::Node;
use derm_core::graph::catalog::Entry;
use derm_core::optimize::eval::{self, Kind};
use derm_core::optimize::{self, Error, Input, Policy, Problem, Start, integer, kkt, reference};
use derm_core::profile::Profiles;

fn input<'a>(profiles: &'a Profiles, graphs: &'a [Entry], load: f64, sla: f64) -> Input<'a> {
    Input {
        profiles,
        graphs,
        load_rps: load,
        sla_ms: sla,
        percentile: 0.95,
        rare_threshold: 0.02,
        bounds: BTreeMap::new(),
        max_utilization: 0.9,
    }
}

/// `n` services `ts-00`, `ts-01`, ... with seeded random profiles.
fn ticket_services(n: usize) -> (Profiles, Vec<String>) {
    let mut profiles = Profiles::default();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(42);
    let names: Vec<String> = (0..n).map(|i| format!("ts-{i:02}")).collect();
    for n in &names {
        profiles.services.insert(n.clone(), instance::profile(&mut rng));
    }
    (profiles, names)
}

/// The problem of a generated instance at `load` (`Instance::input`'s settings).
fn generated(spec: &Spec, load: f64) -> Problem {
    let seed = spec.seed;
    Problem::new(&spec.generate().input(load)).unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

/// Derm's plan for `problem`, its rate box, and the plan's replicas in service order.
fn derm_plan(problem: &Problem) -> (optimize::Plan, kkt::Space, Vec<u32>) {
    let plan = optimize::solve(problem, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let space = kkt::Space::new(problem);
    let replicas = problem.services.iter().map(|s| plan.services[&s.name].replicas).collect();
    (plan, space, replicas)
}

#[test]
fn kkt_is_within_one_percent_of_the_reference_optimum() {
    for seed in 0..8u64 {
        let services = 3 + (seed as usize % 6); // 3..=8
        let spec = Spec { services, graphs: 1 + (seed as usize % 4), graph_size: (2, 6), parallel: 0.4, seed };
        let problem = generated(&spec, 300.0);
        let w = problem.weights();
        let kkt = kkt::solve(&problem, Kind::Weighted, &w, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        assert!(kkt.probability >= 0.95 - 1e-9, "seed {seed}: infeasible {}", kkt.probability);
        let refv = reference::continuous(&problem, Kind::Weighted, &w, 6, seed).unwrap_or_else(|| panic!("ref"));
        eprintln!("seed {seed}: kkt {:.4} reference {:.4} ({} iterations)", kkt.objective, refv, kkt.iterations);
        assert!(kkt.objective <= refv * 1.01, "seed {seed}: kkt {} vs reference {}", kkt.objective, refv);
    }
}

#[test]
fn integer_plan_is_within_one_container_of_exhaustive_search() {
    for seed in 0..6u64 {
        let spec = Spec {
            services: 3 + (seed as usize % 4),
            graphs: 1 + (seed as usize % 3),
            graph_size: (2, 5),
            parallel: 0.4,
            seed: 100 + seed,
        };
        let problem = generated(&spec, 120.0);
        let plan = optimize::solve(&problem, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        let (_, best) = reference::exhaustive(&problem, Kind::Weighted, &problem.weights(), 8)
            .unwrap_or_else(|| panic!("seed {seed}: exhaustive found nothing"));
        eprintln!("seed {seed}: plan {} exhaustive {best}", plan.total_replicas);
        assert!(plan.total_replicas <= best + 1, "seed {seed}: {} vs {best}", plan.total_replicas);
        assert!(plan.predicted_sla_probability >= 0.95);
    }
}

#[test]
fn every_plan_meets_its_constraint_exactly() {
    for seed in 0..6u64 {
        let problem = generated(&Spec { services: 30, graphs: 5, graph_size: (5, 20), parallel: 0.3, seed }, 500.0);
        for policy in [Policy::Derm, Policy::Uniform] {
            let plan = optimize::solve(&problem, policy, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
            let freq: Vec<_> = plan.graphs.values().filter(|g| g.frequent).collect();
            match policy {
                Policy::Derm => assert!(plan.predicted_sla_probability >= 0.95, "{plan:?}"),
                Policy::Uniform => {
                    assert!(freq.iter().all(|g| g.sla_probability >= 0.95), "{plan:?}")
                }
            }
        }
    }
}

#[test]
fn rare_graphs_are_reported_but_never_evaluated_in_the_constraint() {
    // Zipf shares over 40 graphs: ranks 12-40 are below the 2% threshold.
    let problem = generated(&Spec { services: 60, graphs: 40, graph_size: (3, 8), parallel: 0.3, seed: 7 }, 500.0);
    let weights = problem.weights();
    let rare = weights.iter().filter(|w| **w <= 0.0).count();
    assert!(rare > 20, "{rare} rare graphs");
    let (plan, space, replicas) = derm_plan(&problem);
    let params = problem.params(&integer::rates(&problem, &space, &replicas));
    // The constraint's parts: the frequent graphs only, at the plan's value.
    let (value, parts) = eval::value_parts(&problem, Kind::Weighted, &weights, &params);
    assert!((value - plan.predicted_sla_probability).abs() < 1e-12, "{value} vs {}", plan.predicted_sla_probability);
    let all = eval::per_graph(&problem, &params);
    for ((g, w), (part, f)) in problem.graphs.iter().zip(&weights).zip(parts.iter().zip(&all)) {
        assert_eq!(part.is_some(), *w > 0.0, "graph {}", g.id);
        // The plan reports every graph, rare ones too, as the exact evaluator gives it.
        let reported = &plan.graphs[&g.id];
        assert_eq!(reported.frequent, *w > 0.0, "graph {}", g.id);
        assert_eq!(reported.sla_probability, *f, "graph {}", g.id);
        assert!(part.is_none_or(|p| p == *f), "graph {}", g.id);
    }
}

#[test]
fn at_threshold_zero_every_request_counts() {
    // A rare long graph on the services of a frequent short one: with the paper's 2%
    // threshold the solver sizes the shared services for the short graph alone, and the share
    // of *all* requests within the SLA falls short of p; with no threshold the weighted
    // constraint is over every request.
    let (profiles, names) = ticket_services(5);
    let short = Node::chain(names.iter().cloned());
    let long = Node::chain(names.iter().cycle().take(15).cloned());
    let graphs = vec![
        Entry { id: "short".into(), share: 0.981, count: 0, root: short },
        Entry { id: "long".into(), share: 0.019, count: 0, root: long.clone() },
    ];
    let sla = 1.5 * instance::critical_path_ms(&long, &profiles);
    let mut inp = input(&profiles, &graphs, 20_000.0, sla);
    let all_requests = optimize::Plan::all_requests_probability;
    let paper = derm_plan(&Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"))).0;
    inp.rare_threshold = 0.0;
    let every = derm_plan(&Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"))).0;
    eprintln!(
        "2%: {} replicas, all requests {:.4}, long {:.3}; 0: {} replicas, all requests {:.4}, long {:.3}",
        paper.total_replicas,
        all_requests(&paper),
        paper.graphs["long"].sla_probability,
        every.total_replicas,
        all_requests(&every),
        every.graphs["long"].sla_probability
    );
    assert!(!paper.graphs["long"].frequent && every.graphs["long"].frequent);
    assert!(all_requests(&paper) < inp.percentile, "{}", all_requests(&paper));
    assert!((every.predicted_sla_probability - all_requests(&every)).abs() < 1e-9);
    assert!(all_requests(&every) >= inp.percentile - 1e-9, "{}", all_requests(&every));
}

/// With every graph counted, a rare graph near its SLA flips between the repair's trials and
/// the probit line through them overshoots: the first round's four trials all failed and the
/// repair stopped at 0.9905 against 0.95 (402 replicas more) before it learnt to halve.
#[test]
fn repair_gets_back_to_the_target_when_every_trial_overshoots() {
    let spec = Spec { services: 1_500, graphs: 40, graph_size: (20, 300), parallel: 0.3, seed: 6 };
    let instance = spec.generate();
    let mut inp = instance.input(10_000.0);
    inp.rare_threshold = 0.0;
    let problem = Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"));
    let (plan, space, replicas) = derm_plan(&problem);
    let exact = integer::verify(&problem, Kind::Weighted, &problem.weights(), &space, &replicas);
    assert!(exact >= inp.percentile, "{exact}");
    assert!(exact < inp.percentile + 0.005, "stopped at {exact}, {} replicas", plan.total_replicas);
}

#[test]
fn moving_a_few_services_reevaluates_only_their_graphs_bit_for_bit() {
    let problem =
        generated(&Spec { services: 200, graphs: 12, graph_size: (10, 40), parallel: 0.3, seed: 11 }, 2_000.0);
    let weights = problem.weights();
    let (_, space, replicas) = derm_plan(&problem);
    let base = problem.params(&integer::rates(&problem, &space, &replicas));
    let (_, known) = eval::value_parts(&problem, Kind::Weighted, &weights, &base);
    // Services of one graph only, then services spread over several, then none.
    let calls = |g: usize| problem.graphs[g].compiled.services().to_vec();
    let movable = |i: &usize| space.active[*i] && replicas[*i] > 1;
    let one: Vec<usize> = calls(0).into_iter().filter(movable).take(3).collect();
    let many: Vec<usize> = (0..problem.graphs.len()).filter_map(|g| calls(g).into_iter().find(movable)).collect();
    assert!(!one.is_empty() && many.len() > 3, "{one:?} {many:?}");
    for moved in [one, many, Vec::new()] {
        let mut less = replicas.clone();
        moved.iter().for_each(|&i| less[i] -= 1);
        let params = problem.params(&integer::rates(&problem, &space, &less));
        let full = eval::value_parts(&problem, Kind::Weighted, &weights, &params);
        let part = eval::value_parts_moved(&problem, Kind::Weighted, &weights, &params, &known, &moved);
        assert_eq!(part.0.to_bits(), full.0.to_bits(), "moved {moved:?}");
        assert_eq!(part.1, full.1, "moved {moved:?}");
        // Removing replicas lowers every graph that calls a moved service, and only those.
        for (g, (k, f)) in known.iter().zip(&full.1).enumerate() {
            let touched = calls(g).iter().any(|i| moved.contains(i));
            if let (Some(k), Some(f)) = (k, f) {
                assert_eq!(f < k, touched, "graph {g}: {k} -> {f}, moved {moved:?}");
            }
        }
    }
}

#[test]
fn repeated_solves_on_two_threads_always_return() {
    const SOLVES: usize = 5_000;
    // A worker once entered the awake loop of `optimize::awake` while waiting inside a part of
    // an evaluation it had stolen: the loop waited for the solve, the solve for that part.
    // The benchmark hung once in about a dozen runs. The race window is narrow: this test
    // did not catch it in 5,000 solves before the fix, so it guards, it does not prove.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let problem =
            generated(&Spec { services: 50, graphs: 5, graph_size: (10, 30), parallel: 0.3, seed: 1 }, 1_000.0);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap_or_else(|e| panic!("{e}"));
        for i in 0..SOLVES {
            let plan = pool.install(|| optimize::solve(&problem, Policy::Derm, Start::Paired));
            if tx.send((i, plan.map(|p| p.total_replicas))).is_err() {
                return;
            }
        }
    });
    let mut first = None;
    for i in 0..SOLVES {
        let (j, replicas) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("solve {i} did not return within 60 s"));
        let replicas = replicas.unwrap_or_else(|e| panic!("solve {j}: {e}"));
        // Deterministic across repeats.
        assert_eq!(*first.get_or_insert(replicas), replicas, "solve {j}");
    }
}

#[test]
fn every_start_converges_to_the_same_optimum() {
    let problem = generated(&Spec { services: 50, graphs: 5, graph_size: (10, 30), parallel: 0.3, seed: 5 }, 1000.0);
    let w = problem.weights();
    let mut objectives = Vec::new();
    for start in [Start::Paired, Start::Erms, Start::Flat] {
        let sol = kkt::solve(&problem, Kind::Weighted, &w, start).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("start {start:?}: {} iterations, objective {:.4}", sol.iterations, sol.objective);
        assert!(sol.iterations < kkt::MAX_ITERATIONS, "{start:?} did not converge");
        objectives.push(sol.objective);
    }
    let min = objectives.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(objectives.iter().all(|o| (o - min) / min < 1e-3), "{objectives:?}");
}

#[test]
fn coarse_to_fine_lands_on_the_fine_optimum() {
    // The bench's 50-service and 400-service instances (lattices of 256 and 512 cells).
    for (spec, load) in [
        (Spec { services: 50, graphs: 5, graph_size: (10, 30), parallel: 0.3, seed: 1 }, 1_000.0),
        (Spec { services: 400, graphs: 1, graph_size: (400, 400), parallel: 0.3, seed: 2 }, 1_000.0),
    ] {
        let problem = generated(&spec, load);
        assert!(problem.coarse(kkt::COARSE_FACTOR, kkt::COARSE_MIN_CELLS).is_some());
        let w = problem.weights();
        let both = kkt::solve(&problem, Kind::Weighted, &w, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        let fine = kkt::solve_fine(&problem, Kind::Weighted, &w, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{} services: coarse to fine {:.4} ({} iterations, {} coarse evaluations), fine only {:.4} ({} iterations)",
            spec.services, both.objective, both.iterations, both.evaluations.coarse, fine.objective, fine.iterations
        );
        assert!(both.evaluations.coarse > 0);
        // Feasible on the fine lattice, and within 0.1% of the fine-only optimum.
        assert!(both.probability >= problem.percentile, "{}", both.probability);
        assert!((both.objective - fine.objective) / fine.objective < 1e-3, "{} vs {}", both.objective, fine.objective);
    }
}

#[test]
fn a_step_never_leaves_a_feasible_start_for_a_worse_answer() {
    // A random app of the 2,500-service benchmark's shape (`examples/solve_sweep`, seed 11):
    // the coarse pass's answer is feasible on the fine lattice, but one fine step from it
    // landed on 102,677 continuous containers against the fine-only descent's 23,321, and
    // the repair then took about 4,900 evaluations (4.5 s) to bring 76,657 replicas down.
    let (_, spec, load) = instance::benchmarks()[2].clone();
    let problem = generated(&Spec { seed: 11, ..spec }, load);
    let w = problem.weights();
    let both = kkt::solve(&problem, Kind::Weighted, &w, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let fine = kkt::solve_fine(&problem, Kind::Weighted, &w, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let space = kkt::Space::new(&problem);
    let int = integer::plan(&problem, Kind::Weighted, &w, &space, &both.rates, Some(&both.gradient));
    let replicas: u32 = int.replicas.iter().sum();
    eprintln!(
        "coarse to fine {:.1} (P {:.5}), fine only {:.1}; {replicas} replicas in {} repair evaluations",
        both.objective, both.probability, fine.objective, int.evaluations
    );
    assert!(both.probability >= problem.percentile, "{}", both.probability);
    assert!(both.objective <= 1.05 * fine.objective, "{} vs {}", both.objective, fine.objective);
    assert!(int.evaluations <= 100, "{} repair evaluations", int.evaluations);
    assert!(f64::from(replicas) <= 1.25 * both.objective, "{replicas} replicas");
}

/// The paper's motivating example: a TrainTicket ticket query whose simple graph (9 in 10
/// requests, distance 1) touches 5 services and whose complex graph (distance 6) touches 30,
/// with fan-outs. Derm lets the simple graph meet the SLA with a higher probability than the
/// complex one, and saves containers against every graph meeting p on its own (paper: 97% vs
/// 77%, 20% fewer containers). SLA: twice the complex graph's zero-load critical path.
#[test]
fn motivating_example_trades_complex_for_simple() {
    let (profiles, names) = ticket_services(30);
    let simple = Node::chain(names[..5].iter().cloned());
    // Complex: the simple chain's services, then five stages, each a fan-out of five calls.
    let mut complex = Node::leaf(names[0].clone());
    complex = complex.then(Node::chain(names[1..5].iter().cloned()));
    for stage in names[5..].chunks(5) {
        complex = complex.with_parallel(stage.iter().map(|n| Node::leaf(n.clone())));
    }
    let graphs = vec![
        Entry { id: "simple".into(), share: 0.9, count: 0, root: simple },
        Entry { id: "complex".into(), share: 0.1, count: 0, root: complex.clone() },
    ];
    let sla = 2.0 * instance::critical_path_ms(&complex, &profiles);
    let inp = input(&profiles, &graphs, 1_000.0, sla);
    let problem = Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"));
    let derm = optimize::solve(&problem, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let uniform = optimize::solve(&problem, Policy::Uniform, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let (ps, pc) = (derm.graphs["simple"].sla_probability, derm.graphs["complex"].sla_probability);
    let saving = 1.0 - derm.total_replicas as f64 / uniform.total_replicas as f64;
    eprintln!(
        "derm: p_simple {ps:.4} p_complex {pc:.4}, {} replicas (continuous {:.2}); uniform {} replicas (continuous {:.2}); saving {:.1}%",
        derm.total_replicas,
        derm.continuous_containers,
        uniform.total_replicas,
        uniform.continuous_containers,
        100.0 * saving
    );
    assert!(ps > pc, "simple {ps} complex {pc}");
    assert!(saving >= 0.15, "saving {saving}");
}

/// When bounds keep a graph from its target, the error names that graph (the uniform policy's
/// per-graph solve, with the failing graph listed second).
#[test]
fn unreachable_names_the_weakest_graph() {
    let (profiles, names) = ticket_services(10);
    let fan_out = Node::leaf(names[0].clone()).with_parallel(names[5..].iter().map(|n| Node::leaf(n.clone())));
    let graphs = vec![
        Entry { id: "simple".into(), share: 0.9, count: 0, root: Node::chain(names[..5].iter().cloned()) },
        Entry { id: "fan-out".into(), share: 0.1, count: 0, root: fan_out.clone() },
    ];
    let sla = 2.0 * graphs.iter().map(|g| instance::critical_path_ms(&g.root, &profiles)).fold(0.0, f64::max);
    let mut inp = input(&profiles, &graphs, 10_000.0, sla);
    // The fan-out's own services at 97% utilisation at least: stable, but far from the SLA.
    for n in &names[5..] {
        let cap = profiles.services[n].capacity_rps();
        let max = ((1_000.0 / (0.97 * cap)).floor() as u32).max(1);
        inp.bounds.insert(n.clone(), optimize::Bounds { min: 1, max });
    }
    let problem = Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"));
    match optimize::solve(&problem, Policy::Uniform, Start::Paired) {
        Err(Error::Unreachable { worst_graph, best, .. }) => {
            assert_eq!(worst_graph, "fan-out", "best {best}");
            assert!(best < 0.95, "{best}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn load_only_change_scales_replicas_linearly() {
    // Every graph frequent: services kept at a safe minimum (rare-only ones) have rounded,
    // load-dependent rates that would shift the optimum slightly.
    let inst = Spec { services: 20, graphs: 3, graph_size: (5, 12), parallel: 0.3, seed: 9 }.generate();
    let inp = Input { rare_threshold: 0.0, ..inst.input(5_000.0) };
    let problem = Problem::new(&inp).unwrap_or_else(|e| panic!("{e}"));
    let plan = optimize::solve(&problem, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    let scaled = optimize::rescale(&plan, 10_000.0, &BTreeMap::new());
    // The re-solved plan at double load has the same per-container targets...
    let inp2 = Input { rare_threshold: 0.0, ..inst.input(10_000.0) };
    let again = optimize::solve(&Problem::new(&inp2).unwrap_or_else(|e| panic!("{e}")), Policy::Derm, Start::Paired)
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, s) in &plan.services {
        let t2 = again.services[name].target_load_rps;
        assert!((s.target_load_rps - t2).abs() <= 1e-6 * t2.max(1.0), "{name}: {} vs {t2}", s.target_load_rps);
    }
    // ...and rescaling lands within rounding of re-solving (the repair may trim a few).
    let diff = scaled.total_replicas as i64 - again.total_replicas as i64;
    assert!(
        diff.unsigned_abs() <= scaled.services.len() as u64,
        "{} vs {}",
        scaled.total_replicas,
        again.total_replicas
    );
    assert!(scaled.total_replicas >= plan.total_replicas);
}

#[test]
fn bad_input_names_the_field() {
    let inst = Spec { services: 4, graphs: 2, graph_size: (2, 4), parallel: 0.3, seed: 1 }.generate();
    let base = inst.input(100.0);
    let err = |inp: Input<'_>| Problem::new(&inp).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(Input { load_rps: 0.0, ..base.clone() }).contains("load_rps"));
    assert!(err(Input { load_rps: f64::NAN, ..base.clone() }).contains("load_rps"));
    assert!(err(Input { percentile: 1.0, ..base.clone() }).contains("percentile"));
    assert!(err(Input { sla_ms: -1.0, ..base.clone() }).contains("sla_ms"));
    let mut zero = inst.graphs.clone();
    zero.iter_mut().for_each(|g| g.share = 0.0);
    assert!(err(Input { graphs: &zero, ..base.clone() }).contains("share"));
    let mut missing = inst.profiles.clone();
    let first = inst.graphs[0].root.service.clone();
    missing.services.remove(&first);
    assert!(err(Input { profiles: &missing, ..base.clone() }).contains(&first));
    let mut nan = inst.profiles.clone();
    nan.services.get_mut(&first).unwrap_or_else(|| panic!("svc")).b = f64::NAN;
    assert!(err(Input { profiles: &nan, ..base.clone() }).contains(&format!("profiles.{first}.b")));
    let bounds = BTreeMap::from([("nope".to_string(), optimize::Bounds { min: 1, max: 2 })]);
    assert!(err(Input { bounds, ..base.clone() }).contains("bounds.nope"));
    // Shares not summing to one are normalised with a warning.
    let mut half = inst.graphs.clone();
    half.iter_mut().for_each(|g| g.share *= 0.5);
    let p = Problem::new(&Input { graphs: &half, ..base.clone() }).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.iter().any(|w| w.contains("normalised")));
    // An SLA below a frequent graph's minimum latency names the graph.
    let tight = Problem::new(&Input { sla_ms: 0.01, ..base.clone() }).unwrap_or_else(|e| panic!("{e}"));
    match optimize::solve(&tight, Policy::Derm, Start::Paired) {
        Err(Error::Infeasible { graph, min_latency_ms, .. }) => {
            assert!(inst.graphs.iter().any(|g| g.id == graph));
            assert!(min_latency_ms > 0.01);
        }
        other => panic!("expected Infeasible, got {other:?}"),
    }
}

#[test]
fn rescale_never_explodes_on_a_target_at_the_rate_ceiling() {
    let problem = generated(&Spec { services: 10, graphs: 2, graph_size: (4, 8), parallel: 0.3, seed: 4 }, 300.0);
    let mut plan = optimize::solve(&problem, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
    // A continuous optimum at the ceiling b * (1 - 1e-9) gives w* of about zero.
    let name = plan.services.keys().next().cloned().unwrap_or_default();
    plan.services.get_mut(&name).unwrap_or_else(|| panic!("svc")).target_load_rps = 1e-9;
    let scaled = optimize::rescale(&plan, 303.0, &BTreeMap::new());
    for (svc, s) in &scaled.services {
        let before = plan.services[svc].replicas;
        assert!(s.replicas <= 2 * before, "{svc}: {before} -> {}", s.replicas);
    }
}
