//! `latency` benchmarks on seeded inputs (realistic parameters: l0 0.1-5 ms, means 1-20 ms,
//! t at the 95th percentile): a 50-service chain (exact uniformization) and a 400-service
//! series-parallel graph (lattice), each as CDF alone and CDF + full gradient, with a reused
//! workspace (the optimizer's hot path).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use derm_core::latency::{Compiled, Params, Workspace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[path = "../tests/latency_support.rs"]
mod support;

fn case(name: &str, c: &Compiled, params: &[Params], crit: &mut Criterion) {
    let t = support::quantile(c, params, 0.95);
    let mut group = crit.benchmark_group(format!("latency/{name}"));
    group.throughput(Throughput::Elements(1));
    let mut ws = Workspace::new();
    let mut grad = vec![0.0; params.len()];
    group.bench_function("cdf", |b| b.iter(|| c.cdf_with(&mut ws, black_box(params), black_box(t))));
    group.bench_function("cdf_grad", |b| {
        b.iter(|| c.cdf_grad_with(&mut ws, black_box(params), black_box(t), black_box(&mut grad)))
    });
    group.finish();
}

fn bench(crit: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(50);
    let params = support::realistic_params(&mut rng, 50);
    let chain = support::compile(&support::chain(&(0..50).collect::<Vec<_>>()));
    case("chain50", &chain, &params, crit);

    let mut rng = ChaCha8Rng::seed_from_u64(400);
    let params = support::realistic_params(&mut rng, 400);
    let g = support::sp_benchmark_graph(&mut rng);
    let sp = support::compile(&g);
    case("sp400", &sp, &params, crit);
}

criterion_group!(benches, bench);
criterion_main!(benches);
