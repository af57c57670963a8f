//! Jaeger JSON decoder, streamed and in memory: any bytes, never a panic.
#![no_main]

use derm_core::trace::{Config, Skips, jaeger};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config {
        arg_tags: vec!["distance".into()],
        flush_after_us: 0,
    };
    let mut skips = Skips::default();
    let _ = jaeger::read(data, "fuzz", &config, &mut skips, &mut |_| {});
    let _ = jaeger::decode(data, "fuzz", &config, &mut skips, &mut |_| {});
});
