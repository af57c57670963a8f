//! Decoding throughput: Jaeger JSON -> traces -> call trees, in spans per second.
//!
//! `cargo bench -p derm-core --bench decode`. The input is a query-API document of 20,000
//! spans (1,000 traces of 20 spans over 30 services) made by `trace::jaeger::write` from
//! seeded synthetic traces; `read` holds inputs under 64 MiB in memory, as here.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use derm_core::trace::{self, Config, Parent, RefKind, Skips, Span, Trace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

const TRACES: usize = 1_000;
const SPANS_PER_TRACE: usize = 20;
const SERVICES: usize = 30;

/// Random call trees: each span calls into a random earlier span's interval.
fn synthetic(rng: &mut ChaCha8Rng) -> Vec<Trace> {
    let services: Vec<String> = (0..SERVICES).map(|i| format!("service-{i}")).collect();
    (0..TRACES)
        .map(|t| {
            let start = 1_700_000_000_000_000 + 1_000 * t as i64;
            let mut spans = vec![Span {
                id: rng.random(),
                parent: None,
                service: "frontend".into(),
                start_us: start,
                duration_us: 100_000,
                container: Some("frontend-5d8f7".into()),
                tags: vec![
                    ("distance".into(), rng.random_range(1..7).to_string()),
                    ("sampler.type".into(), "probabilistic".into()),
                    ("sampler.param".into(), "0.01".into()),
                ],
            }];
            while spans.len() < SPANS_PER_TRACE {
                let p = &spans[rng.random_range(0..spans.len())];
                let offset = rng.random_range(0..=p.duration_us / 2);
                let duration = rng.random_range(0..=(p.duration_us - offset) / 2);
                let service = &services[rng.random_range(0..SERVICES)];
                let span = Span {
                    id: rng.random(),
                    parent: Some(Parent { id: p.id, kind: RefKind::ChildOf }),
                    service: service.clone(),
                    start_us: p.start_us + offset,
                    duration_us: duration,
                    container: Some(format!("{service}-{}", rng.random_range(0..3))),
                    tags: Vec::new(),
                };
                spans.push(span);
            }
            Trace { id: format!("{:032x}", rng.random::<u128>()), spans }
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let traces = synthetic(&mut rng);
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let mut doc = Vec::new();
    trace::jaeger::write(&mut doc, &traces).expect("write to memory");
    let config = Config { arg_tags: vec!["distance".into()], flush_after_us: 0 };

    let mut group = c.benchmark_group("jaeger");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function(BenchmarkId::new("read", spans), |b| {
        b.iter(|| {
            let mut skips = Skips::default();
            let mut n = 0usize;
            trace::jaeger::read(black_box(&doc[..]), "bench", &config, &mut skips, &mut |t| n += t.spans.len())
                .expect("decodes");
            assert_eq!(n, spans);
        })
    });
    group.bench_function(BenchmarkId::new("read+tree", spans), |b| {
        b.iter(|| {
            let mut skips = Skips::default();
            let mut requests = 0usize;
            trace::jaeger::read(black_box(&doc[..]), "bench", &config, &mut skips, &mut |t| {
                let mut tree_skips = Skips::default();
                requests += usize::from(trace::tree::build(t, &mut tree_skips).is_some());
            })
            .expect("decodes");
            assert_eq!(requests, TRACES);
        })
    });
    // The whole ingest path of `derm profile` and the adapter: decode, call trees, and
    // window statistics (graph catalog, mixes, containers, latency reservoirs).
    group.bench_function(BenchmarkId::new("read+tree+windows", spans), |b| {
        b.iter(|| {
            let mut ingest = derm_core::pipeline::Ingest::new(derm_core::graph::window::Config::default());
            let decode = ingest.decode_config().clone();
            let mut skips = Skips::default();
            trace::jaeger::read(black_box(&doc[..]), "bench", &decode, &mut skips, &mut |t| ingest.add(t))
                .expect("decodes");
            let out = ingest.finish();
            assert_eq!(out.requests as usize, TRACES);
        })
    });
    group.bench_function(BenchmarkId::new("tree", spans), |b| {
        b.iter_batched(
            || traces.clone(),
            |traces| {
                let mut skips = Skips::default();
                let built = traces.into_iter().filter_map(|t| trace::tree::build(t, &mut skips)).count();
                assert_eq!(built, TRACES);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
