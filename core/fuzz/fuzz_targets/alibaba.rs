//! Alibaba MSCallGraph CSV decoder, then call trees: never a panic.
#![no_main]

use derm_core::trace::{Config, Skips, alibaba, tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config {
        arg_tags: vec!["interface".into()],
        flush_after_us: 1_000,
    };
    let mut skips = Skips::default();
    let mut traces = Vec::new();
    let _ = alibaba::read(data, "fuzz", &config, &mut skips, &mut |t| traces.push(t));
    for t in traces {
        let _ = tree::build(t, &mut skips);
    }
});
