//! Call-tree building on whatever the Jaeger decoder makes of the input; checks the
//! invariants of every request built.
#![no_main]

use derm_core::trace::{Config, Skips, jaeger, tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config {
        arg_tags: vec!["distance".into()],
        flush_after_us: 0,
    };
    let mut skips = Skips::default();
    let mut traces = Vec::new();
    let _ = jaeger::decode(data, "fuzz", &config, &mut skips, &mut |t| traces.push(t));
    for t in traces {
        let spans = t.spans.len();
        if let Some(req) = tree::build(t, &mut skips) {
            let mut stack = vec![&req.root];
            let mut calls = 0;
            while let Some(call) = stack.pop() {
                calls += 1;
                assert!((0..=call.duration_us).contains(&call.exclusive_us));
                for stage in &call.stages {
                    assert!(!stage.is_empty());
                    stack.extend(stage.iter());
                }
            }
            assert!(calls <= spans);
        }
    }
});
