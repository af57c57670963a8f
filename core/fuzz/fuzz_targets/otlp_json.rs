//! OTLP JSON decoder (one body, and a reader with auto-detection): never a panic.
#![no_main]

use derm_core::trace::{Assembler, Config, Skips, otlp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = Config {
        arg_tags: vec!["distance".into()],
        flush_after_us: 1_000,
    };
    let mut skips = Skips::default();
    let mut assembler = Assembler::new(config.flush_after_us);
    let _ = otlp::decode_json(
        data,
        "fuzz",
        &config,
        &mut assembler,
        &mut skips,
        &mut |_| {},
    );
    assembler.finish(&mut |_, _| {});
    let _ = otlp::read(data, "fuzz", &config, &mut skips, &mut |_| {});
});
