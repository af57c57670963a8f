//! Traces in, call trees out.
//!
//! Decoders ([`jaeger`], [`otlp`], [`alibaba`]) stream [`Trace`]s (the spans of one request)
//! from their format; [`tree`] turns a trace into a [`Request`]: a call tree with exclusive
//! times and sequential stages of parallel calls. Malformed records are never fatal: each is
//! skipped and counted in [`Skips`] by [`Reason`].
//!
//! Module map:
//! - [`input`]: [`read_path`] opens a file (gzip or not), detects its format and dispatches.
//! - [`jaeger`]: Jaeger v1 query-API JSON, streamed trace by trace; a writer for tests/simulator.
//! - [`otlp`]: OTLP JSON (plain, Jaeger api_v3 `result`, JSON lines) and protobuf; writers.
//! - [`alibaba`]: Alibaba cluster-trace-microservices-v2021 `MSCallGraph` CSV.
//! - [`assemble`]: groups spans that arrive spread over a stream into traces (OTLP, Alibaba).
//! - [`tree`]: one [`Trace`] -> one [`Request`] (call tree, exclusive times, stages).

pub mod alibaba;
pub mod assemble;
mod ids;
pub mod input;
pub mod jaeger;
mod json;
pub mod otlp;
pub mod tree;

pub use assemble::Assembler;
pub use input::read_path;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// How a span refers to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// Synchronous child: the parent waits for it.
    ChildOf,
    /// Asynchronous follower: the parent may finish first.
    FollowsFrom,
}

/// A span's link to its parent span, by id within the same trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub id: u64,
    pub kind: RefKind,
}

/// One decoded span. Only the tags the decoder was asked to keep are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Span id, unique within its trace (Jaeger/OTLP 64-bit ids; Alibaba rpcids are numbered).
    pub id: u64,
    pub parent: Option<Parent>,
    /// Service (Jaeger process serviceName, OTLP `service.name`, Alibaba `dm`).
    pub service: String,
    /// Start, microseconds since the Unix epoch (or since the trace set's origin for Alibaba).
    pub start_us: i64,
    pub duration_us: i64,
    /// The container that served the span (hostname, `k8s.pod.name`, ...), when known.
    pub container: Option<String>,
    /// Kept tags: the configured argument tags and `sampler.type` / `sampler.param`.
    pub tags: Vec<(String, String)>,
}

/// The spans of one request, in any order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// Jaeger and OTLP: lowercase hex, 16 digits when the id fits 64 bits, else 32 (the same
    /// trace gets the same id from either). Alibaba: the dataset's `traceid`.
    pub id: String,
    pub spans: Vec<Span>,
}

/// One service invocation in a call tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub service: String,
    pub start_us: i64,
    pub duration_us: i64,
    /// Duration minus the union of the children's intervals (clipped to this call).
    pub exclusive_us: i64,
    pub container: Option<String>,
    /// Children in sequential stages; the calls of one stage overlap in time (parallel).
    pub stages: Vec<Vec<Call>>,
}

/// One end-to-end request as a call tree rooted at the entry service.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub trace_id: String,
    pub root: Call,
    /// Sampling probability read from the root's `sampler.type`/`sampler.param`, if any.
    pub sampling: Option<f64>,
    /// Kept root tags (argument tags).
    pub tags: Vec<(String, String)>,
}

/// Why a record was skipped. Bounded set: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A record that is not valid in its format (bad JSON element, wrong types, bad CSV row).
    Malformed,
    /// The input ended in the middle of a record.
    Truncated,
    /// A span with a negative duration or a timestamp out of range.
    BadTime,
    /// A trace with no span lacking a parent (no root).
    NoRoot,
    /// A trace with several roots.
    MultipleRoots,
    /// A span whose parent is not in the trace.
    Orphan,
    /// Spans unreachable from the root through parent links (a cycle).
    Cycle,
    /// A second span with an id already seen in the trace (dropped; the first wins).
    DuplicateSpan,
    /// A child reaching outside its parent's interval (kept, clipped for exclusive time).
    ClockSkew,
    /// A span without a usable service name.
    NoService,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Malformed,
        Reason::Truncated,
        Reason::BadTime,
        Reason::NoRoot,
        Reason::MultipleRoots,
        Reason::Orphan,
        Reason::Cycle,
        Reason::DuplicateSpan,
        Reason::ClockSkew,
        Reason::NoService,
    ];

    /// Stable snake_case name (CLI output, JSON, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Truncated => "truncated",
            Reason::BadTime => "bad_time",
            Reason::NoRoot => "no_root",
            Reason::MultipleRoots => "multiple_roots",
            Reason::Orphan => "orphan",
            Reason::Cycle => "cycle",
            Reason::DuplicateSpan => "duplicate_span",
            Reason::ClockSkew => "clock_skew",
            Reason::NoService => "no_service",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Skipped (or repaired) records by reason, with the first example of each for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Skips {
    counts: BTreeMap<Reason, u64>,
    examples: BTreeMap<Reason, String>,
}

impl Skips {
    /// Count one record for `reason`; `example` says where (file:line, trace id) and why.
    pub fn add(&mut self, reason: Reason, example: impl FnOnce() -> String) {
        let n = self.counts.entry(reason).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.examples.insert(reason, example());
        }
    }

    pub fn count(&self, reason: Reason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// (reason, count, first example) for every reason seen.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64, &str)> {
        self.counts.iter().map(|(r, n)| {
            let ex = self.examples.get(r).map(String::as_str).unwrap_or("");
            (*r, *n, ex)
        })
    }

    pub fn merge(&mut self, other: &Skips) {
        for (r, n, ex) in other.iter() {
            *self.counts.entry(r).or_insert(0) += n;
            self.examples.entry(r).or_insert_with(|| ex.to_owned());
        }
    }
}

/// What decoders keep besides structure.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Root-span tags that carry request arguments (e.g. `distance`).
    pub arg_tags: Vec<String>,
    /// Alibaba/OTLP streams: a trace is complete once the stream's clock has moved this many
    /// microseconds past its last span (inputs sorted by time keep memory bounded).
    pub flush_after_us: i64,
}

impl Config {
    pub const SAMPLER_TYPE: &'static str = "sampler.type";
    pub const SAMPLER_PARAM: &'static str = "sampler.param";

    /// True if a tag with this key is kept on spans.
    pub fn keeps(&self, key: &str) -> bool {
        key == Self::SAMPLER_TYPE || key == Self::SAMPLER_PARAM || self.arg_tags.iter().any(|t| t == key)
    }
}

/// Largest magnitude of a time or duration (microseconds) accepted from any input, about
/// 73,000 years: sums and differences of two accepted values cannot overflow `i64`.
pub(crate) const MAX_TIME_US: i64 = 1 << 61;

/// True if a span's start and duration are usable: duration not negative, both in range.
pub(crate) fn times_ok(start_us: i64, duration_us: i64) -> bool {
    (-MAX_TIME_US..=MAX_TIME_US).contains(&start_us) && (0..=MAX_TIME_US).contains(&duration_us)
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jaeger,
    Otlp,
    Alibaba,
}

impl Format {
    /// Lowercase name, as `--format` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jaeger => "jaeger",
            Format::Otlp => "otlp",
            Format::Alibaba => "alibaba",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fatal decoding errors (the input cannot be read at all). Per-record problems are [`Skips`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's top level is not the expected format.
    #[error("{path}:{line}:{column}: not {format} input: {detail}")]
    Format { path: PathBuf, format: &'static str, line: usize, column: usize, detail: String },
    /// The format could not be guessed from the content.
    #[error("{path}: cannot detect the trace format (use --format jaeger|otlp|alibaba)")]
    UnknownFormat { path: PathBuf },
}

impl Error {
    pub(crate) fn io(origin: &str, source: std::io::Error) -> Self {
        Error::Io { path: PathBuf::from(origin), source }
    }

    pub(crate) fn format(
        origin: &str,
        format: &'static str,
        line: usize,
        column: usize,
        detail: impl Into<String>,
    ) -> Self {
        Error::Format { path: PathBuf::from(origin), format, line, column, detail: detail.into() }
    }
}
