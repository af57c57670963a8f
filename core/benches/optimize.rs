//! Optimizer benchmarks on generated instances (seeded): 50 services / 5 graphs, one
//! 400-service graph, and an Alibaba-scale app of 2,500 services and 40 graph types.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use derm_core::generate::instance::{self, Instance, Spec};
use derm_core::optimize::eval::{self, Kind};
use derm_core::optimize::{self, Policy, Problem, Start, awake, integer, kkt};

fn problem(inst: &Instance, load: f64) -> Problem {
    Problem::new(&inst.input(load)).unwrap_or_else(|e| panic!("{e}"))
}

fn cases() -> [(&'static str, Spec, f64); 3] {
    instance::benchmarks()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("solve");
    group.sample_size(10);
    for (name, spec, load) in cases() {
        let inst = spec.generate();
        let p = problem(&inst, load);
        let plan = optimize::solve(&p, Policy::Derm, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        // The cost model: exact evaluations by phase (load-independent, unlike the time).
        let weights = p.weights();
        let t0 = std::time::Instant::now();
        let sol = kkt::solve(&p, Kind::Weighted, &weights, Start::Paired).unwrap_or_else(|e| panic!("{e}"));
        let t1 = std::time::Instant::now();
        let int = integer::plan(&p, Kind::Weighted, &weights, &kkt::Space::new(&p), &sol.rates, Some(&sol.gradient));
        let t2 = std::time::Instant::now();
        eprintln!(
            "{name}: {} replicas, {} iterations, objective {:.4}; evaluations: {:?}, repair {}; one run: continuous {:.2} ms, integer {:.2} ms",
            plan.total_replicas,
            plan.iterations,
            sol.objective,
            sol.evaluations,
            int.evaluations,
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3
        );
        group.bench_function(name, |b| b.iter(|| optimize::solve(black_box(&p), Policy::Derm, Start::Paired)));
    }
    group.finish();
}

/// One constraint evaluation (value, and value with gradient) on the default lattices and on
/// the coarse pass's: the unit of the solver's cost model.
fn evaluations(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate");
    group.sample_size(20);
    for (name, spec, load) in cases() {
        let inst = spec.generate();
        let fine = problem(&inst, load);
        let weights = fine.weights();
        let space = kkt::Space::new(&fine);
        let params = fine.params(&space.full(&space.hi));
        let coarse = fine.coarse(kkt::COARSE_FACTOR, kkt::COARSE_MIN_CELLS);
        for (lattice, p) in [("fine", Some(&fine)), ("coarse", coarse.as_ref())] {
            let Some(p) = p else { continue };
            group.bench_function(format!("{name}/{lattice}/value"), |b| {
                b.iter(|| eval::value(black_box(p), Kind::Weighted, &weights, &params))
            });
            let mut grad = vec![0.0; params.len()];
            group.bench_function(format!("{name}/{lattice}/gradient"), |b| {
                b.iter(|| eval::value_grad(black_box(p), Kind::Weighted, &weights, &params, &mut grad))
            });
            // As inside a solve: on a pool worker with the others awake, so a graph holding
            // most of the work forks its subtrees (`optimize::awake`).
            group.bench_function(format!("{name}/{lattice}/value-in-solve"), |b| {
                b.iter_custom(|iters| {
                    awake::run(|| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(eval::value(black_box(p), Kind::Weighted, &weights, &params));
                        }
                        t.elapsed()
                    })
                })
            });
            group.bench_function(format!("{name}/{lattice}/gradient-in-solve"), |b| {
                b.iter_custom(|iters| {
                    awake::run(|| {
                        let mut grad = vec![0.0; params.len()];
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(eval::value_grad(black_box(p), Kind::Weighted, &weights, &params, &mut grad));
                        }
                        t.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, evaluations);
criterion_main!(benches);
