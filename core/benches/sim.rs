//! Simulator throughput: `trainticket` at a constant 200 requests/s for 60 simulated seconds
//! under fixed replicas (50% utilisation), seeded; throughput in requests.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use derm_core::sim::engine::{Config, Engine};
use derm_core::sim::{Pattern, Scenario};

fn bench(c: &mut Criterion) {
    let scenario = Scenario::named("trainticket").unwrap_or_else(|e| panic!("{e}"));
    let pattern = Pattern::Constant { rps: 200.0 };
    let app = &scenario.app;
    let replicas = app.replicas_for(&app.demand(&app.mix(0.0, 200.0), 200.0), 0.5);
    let config = Config {
        sampling: 0.1,
        startup_s: 10.0,
        seed: 7,
        origin_s: 0,
        start_s: 0.0,
        stop_s: 60.0,
        record_from_s: 0.0,
        window_s: 30.0,
    };
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    group.throughput(Throughput::Elements(12_000));
    group.bench_function("trainticket_200rps_60s", |b| {
        b.iter(|| {
            let mut e = Engine::new(app, &pattern, config.clone(), &replicas);
            e.run_until(60.0);
            e.drain(120.0);
            black_box(e.take_traces().len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
