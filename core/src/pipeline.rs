//! The trace pipeline: files -> spans -> call trees -> windows, with skip accounting.
//! Shared by `derm profile`, tests and the adapter's file/OTLP sources.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::graph::window::{self, Builder, Window, Windows};
use crate::profile::{self, Profiles};
use crate::trace::{self, Skips, Trace};

/// `windows.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WindowsFile {
    pub windows: Vec<Window>,
}

/// What one ingest run produced.
#[derive(Debug)]
pub struct Output {
    pub windows: Windows,
    pub skips: Skips,
    pub traces: u64,
    pub spans: u64,
    pub requests: u64,
}

/// Streams traces into windows.
#[derive(Debug)]
pub struct Ingest {
    builder: Builder,
    decode: trace::Config,
    skips: Skips,
    traces: u64,
    spans: u64,
    requests: u64,
}

impl Ingest {
    pub fn new(config: window::Config) -> Self {
        let decode = trace::Config { arg_tags: config.args.iter().map(|a| a.tag.clone()).collect(), flush_after_us: 0 };
        Ingest { builder: Builder::new(config), decode, skips: Skips::default(), traces: 0, spans: 0, requests: 0 }
    }

    /// Decoder options matching this ingest (which tags to keep).
    pub fn decode_config(&self) -> &trace::Config {
        &self.decode
    }

    /// Add one decoded trace.
    pub fn add(&mut self, t: Trace) {
        self.traces += 1;
        self.spans += t.spans.len() as u64;
        if let Some(req) = trace::tree::build(t, &mut self.skips) {
            self.requests += 1;
            self.builder.add(&req);
        }
    }

    /// Read a whole file; `progress` gets the running trace count.
    pub fn read_path(
        &mut self,
        path: &Path,
        format: Option<trace::Format>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), trace::Error> {
        let decode = self.decode.clone();
        let mut skips = Skips::default();
        let result = trace::input::read_path(path, format, &decode, &mut skips, &mut |t| {
            self.add(t);
            progress(self.traces);
        });
        self.skips.merge(&skips);
        result
    }

    pub fn finish(self) -> Output {
        Output {
            windows: self.builder.finish(),
            skips: self.skips,
            traces: self.traces,
            spans: self.spans,
            requests: self.requests,
        }
    }
}

/// Human summary: inputs, skips by reason, graphs, and a table of profiles.
pub fn summary(out: &Output, profiles: &Profiles, errors: &[profile::Error]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} traces, {} spans -> {} requests in {} windows, {} graphs",
        out.traces,
        out.spans,
        out.requests,
        out.windows.windows.len(),
        out.windows.graphs.graphs.len()
    );
    for (reason, n, example) in out.skips.iter() {
        let _ = writeln!(s, "  skipped/repaired {reason}: {n} (first: {example})");
    }
    let _ = writeln!(
        s,
        "{:<20} {:>8} {:>6} {:>9} {:>11} {:>9} {:>6}  flags",
        "service", "samples", "levels", "l0_ms", "a", "b", "r2"
    );
    for (name, p) in &profiles.services {
        let flags: Vec<String> = p.flags.iter().map(|f| format!("{f:?}")).collect();
        let _ = writeln!(
            s,
            "{:<20} {:>8} {:>6} {:>9.3} {:>11.3e} {:>9.4} {:>6.3}  {}",
            name,
            p.samples,
            p.levels,
            p.l0_ms,
            p.a,
            p.b,
            p.r2,
            flags.join(",")
        );
    }
    for e in errors {
        let _ = writeln!(s, "  not profiled: {e}");
    }
    s
}
