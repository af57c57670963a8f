//! Jaeger v1 query-API JSON (`GET /api/traces`, the UI's "download JSON"), streamed.
//!
//! Accepted shapes: `{"data": [trace, ...], "total": .., ...}`, a bare trace object
//! `{"traceID", "spans", "processes"}`, a top-level list of traces, and several such documents
//! one after another (e.g. appended poll responses). Memory stays bounded on multi-GB files:
//! the elements of `data` are read one at a time, each captured as raw JSON text and then
//! parsed into borrowed structs, so a malformed trace is skipped ([`Reason::Malformed`]) and
//! the rest goes on.
//!
//! Per span:
//! - ids are hex, 1 to 32 digits (Jaeger drops leading zeros; 128-bit ids have 32). The trace
//!   id is kept in canonical form (lowercase; 16 digits when it fits 64 bits, else 32); span
//!   ids are their low 64 bits. A missing or non-hex id skips the trace as malformed.
//! - parent: the first `CHILD_OF` reference, else the first `FOLLOWS_FROM` one (a missing
//!   `refType` is `CHILD_OF`, proto3 JSON omits the default); references into another trace
//!   are ignored; the legacy `parentSpanID` field is used when no reference gives a parent;
//!   parent id 0 means none.
//! - service: the span's process (`processID` into the trace's `processes` map, or an embedded
//!   `process`) `serviceName`; no process or an empty name skips the trace ([`Reason::NoService`]).
//!   Container: process tag `hostname`, else `ip`.
//! - `startTime` and `duration` in microseconds, numbers or strings; a negative duration or a
//!   value out of range skips the whole trace ([`Reason::BadTime`]).
//! - tags of any JSON type (int64 often as strings) kept as strings, only those
//!   [`Config::keeps`]; for a root span `sampler.*` tags missing on the span are taken from
//!   its process tags.
//!
//! Whole-input problems: nothing that parses as JSON at the top is an [`Error::Format`] naming
//! line and column; input that ends early (EOF inside the list) delivers the traces read so far
//! and counts one [`Reason::Truncated`]; invalid JSON after traces began counts one
//! [`Reason::Malformed`] for the rest of the input (JSON cannot be re-synchronised).

use super::json::{self, Broken, Int, Text, nullable, raw_to_string};
use super::{Config, Error, Parent, Reason, RefKind, Skips, Span, Trace, ids, times_ok};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::ops::Deref;

const FORMAT: &str = "Jaeger JSON";

/// Decode Jaeger JSON from `reader`, calling `sink` for each trace. `origin` names the input
/// in messages (a file name).
pub fn read(
    reader: impl Read,
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    read_with_limit(reader, json::IN_MEMORY_LIMIT, origin, config, skips, sink)
}

/// [`read`], holding inputs of up to `limit` bytes in memory and streaming larger ones.
fn read_with_limit(
    reader: impl Read,
    limit: usize,
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    match json::Input::read(reader, limit).map_err(|e| Error::io(origin, e))? {
        json::Input::Whole { bytes, cut } => {
            let truncated = skips.count(Reason::Truncated);
            decode(&bytes, origin, config, skips, sink)?;
            if cut && skips.count(Reason::Truncated) == truncated {
                skips.add(Reason::Truncated, || format!("{origin}: input ends early (cut compressed stream)"));
            }
            Ok(())
        }
        json::Input::Large(reader) => {
            let mut reader = BufReader::with_capacity(1 << 16, reader);
            let mut decoder = Decoder::new(origin, config, skips, sink);
            let mut de = serde_json::Deserializer::from_reader(&mut reader);
            let outcome = decoder.drive::<_, Box<RawValue>>(&mut de);
            let at_end = || reader.fill_buf().is_ok_and(|rest| rest.is_empty());
            decoder.finish(outcome, at_end)
        }
    }
}

/// Decode one Jaeger JSON body held in memory (a query-API response), as [`read`] does.
pub fn decode(
    bytes: &[u8],
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    let mut decoder = Decoder::new(origin, config, skips, sink);
    let outcome = decoder.drive::<_, &RawValue>(&mut serde_json::Deserializer::from_slice(bytes));
    let at_end = match &outcome {
        Err(Broken::Invalid { line, column, .. }) => json::rest_is_blank(bytes, *line, *column),
        _ => false,
    };
    decoder.finish(outcome, || at_end)
}

struct Decoder<'c> {
    origin: &'c str,
    config: &'c Config,
    skips: &'c mut Skips,
    sink: &'c mut dyn FnMut(Trace),
    /// Trace elements begun (the 1-based index of the current one).
    elements: usize,
    /// Traces delivered.
    delivered: usize,
}

impl<'c> Decoder<'c> {
    fn new(origin: &'c str, config: &'c Config, skips: &'c mut Skips, sink: &'c mut dyn FnMut(Trace)) -> Self {
        Decoder { origin, config, skips, sink, elements: 0, delivered: 0 }
    }

    /// Read top-level documents until the end of input.
    fn drive<'de, R, Raw>(&mut self, de: &mut serde_json::Deserializer<R>) -> Result<(), Broken>
    where
        R: serde_json::de::Read<'de>,
        Raw: Deserialize<'de> + Deref<Target = RawValue>,
    {
        let mut documents = 0usize;
        loop {
            // `end` succeeds at end of input and fails (without consuming) before more input.
            match de.end().map_err(Broken::classify) {
                Ok(()) if documents == 0 => return Err(Broken::Empty),
                Ok(()) => return Ok(()),
                Err(e @ Broken::Io(_)) => return Err(e),
                Err(_) => {}
            }
            documents += 1;
            let document = Document::<Raw> { decoder: self, raw: PhantomData };
            document.deserialize(&mut *de).map_err(Broken::classify)?;
        }
    }

    /// Turn how the input ended into a result and skips. `at_end` says whether invalid JSON
    /// was found at the very end of the input (a number cut short), which is a truncation.
    fn finish(&mut self, outcome: Result<(), Broken>, at_end: impl FnOnce() -> bool) -> Result<(), Error> {
        let origin = self.origin;
        let delivered = self.delivered;
        let outcome = match outcome {
            Err(Broken::Invalid { line, column, .. }) if self.elements > 0 && at_end() => {
                Err(Broken::Truncated { line, column })
            }
            other => other,
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Broken::Empty) => Err(Error::format(origin, FORMAT, 1, 0, "empty input")),
            Err(Broken::Io(e)) => Err(Error::io(origin, e)),
            Err(Broken::Truncated { line, column }) => {
                self.skips.add(Reason::Truncated, || {
                    format!("{origin}:{line}:{column}: input ends early ({delivered} traces read)")
                });
                Ok(())
            }
            Err(Broken::Invalid { line, column, detail }) if self.elements == 0 => {
                Err(Error::format(origin, FORMAT, line, column, detail))
            }
            Err(Broken::Invalid { line, column, detail }) => {
                self.skips.add(Reason::Malformed, || {
                    format!("{origin}:{line}:{column}: {detail}; rest of the input skipped")
                });
                Ok(())
            }
        }
    }

    /// One trace object's JSON text.
    fn trace_text(&mut self, text: &str) {
        let index = self.elements;
        match serde_json::from_str::<TraceDoc<'_>>(text) {
            Ok(doc) => {
                if let Some(trace) = self.convert(&doc) {
                    self.delivered += 1;
                    (self.sink)(trace);
                }
            }
            Err(e) => {
                let origin = self.origin;
                self.skips
                    .add(Reason::Malformed, || format!("{origin}: trace #{index}: {e} (position within the trace)"));
            }
        }
    }

    fn convert(&mut self, doc: &TraceDoc<'_>) -> Option<Trace> {
        let origin = self.origin;
        let index = self.elements;
        let raw_id = doc.trace_id.as_ref().or_else(|| doc.spans.iter().find_map(|s| s.trace_id.as_ref()));
        let Some(id) = raw_id.and_then(|t| ids::hex_trace_id(t.as_str())) else {
            self.skips
                .add(Reason::Malformed, || format!("{origin}: trace #{index}: missing or non-hex traceID {raw_id:?}"));
            return None;
        };
        let mut spans = Vec::with_capacity(doc.spans.len());
        for s in &doc.spans {
            match span(s, &id, &doc.processes, self.config) {
                Ok(span) => spans.push(span),
                Err((reason, why)) => {
                    self.skips.add(reason, || format!("{origin}: trace {id}: {why}"));
                    return None;
                }
            }
        }
        Some(Trace { id, spans })
    }
}

/// One span, or why its trace is skipped.
fn span(
    s: &SpanDoc<'_>,
    trace_id: &str,
    processes: &HashMap<Text<'_>, ProcessDoc<'_>>,
    config: &Config,
) -> Result<Span, (Reason, String)> {
    let id = ids::hex_u64(s.span_id.as_str())
        .ok_or_else(|| (Reason::Malformed, format!("span id {:?} is not hex", s.span_id.as_str())))?;
    let bad_ref = |r: &str| (Reason::Malformed, format!("span {id:016x}: parent id {r:?} is not hex"));
    let (mut child_of, mut follows) = (None, None);
    for r in &s.references {
        if r.trace_id.as_ref().is_some_and(|t| !same_trace(t.as_str(), trace_id)) {
            continue;
        }
        let pid = ids::hex_u64(r.span_id.as_str()).ok_or_else(|| bad_ref(r.span_id.as_str()))?;
        match (pid, r.ref_type) {
            (0, _) | (_, RefType::Other) => {}
            (_, RefType::ChildOf) => _ = child_of.get_or_insert(pid),
            (_, RefType::FollowsFrom) => _ = follows.get_or_insert(pid),
        }
    }
    let mut parent = child_of
        .map(|id| Parent { id, kind: RefKind::ChildOf })
        .or(follows.map(|id| Parent { id, kind: RefKind::FollowsFrom }));
    if parent.is_none()
        && let Some(p) = &s.parent_span_id
    {
        let pid = ids::hex_u64(p.as_str()).ok_or_else(|| bad_ref(p.as_str()))?;
        parent = (pid != 0).then_some(Parent { id: pid, kind: RefKind::ChildOf });
    }

    let (start_us, duration_us) = match (s.start_time.get(), s.duration.get()) {
        (Some(start), Some(duration)) if times_ok(start, duration) => (start, duration),
        (start, duration) => {
            let why = format!("span {id:016x}: bad time (startTime {start:?}, duration {duration:?})");
            return Err((Reason::BadTime, why));
        }
    };

    let process = s.process.as_ref().or_else(|| s.process_id.as_ref().and_then(|p| processes.get(p.as_str())));
    let Some(process) = process.filter(|p| !p.service_name.as_str().is_empty()) else {
        let pid = s.process_id.as_ref().map(Text::as_str);
        return Err((Reason::NoService, format!("span {id:016x}: no process serviceName (processID {pid:?})")));
    };
    let container = ["hostname", "ip"]
        .iter()
        .find_map(|k| process.tags.iter().find(|t| t.key.as_str() == *k))
        .map(|t| raw_to_string(t.value))
        .filter(|c| !c.is_empty());

    let mut tags: Vec<(String, String)> = s
        .tags
        .iter()
        .filter(|t| config.keeps(t.key.as_str()))
        .map(|t| (t.key.as_str().to_owned(), raw_to_string(t.value)))
        .collect();
    if parent.is_none() {
        for key in [Config::SAMPLER_TYPE, Config::SAMPLER_PARAM] {
            if tags.iter().all(|(k, _)| k != key)
                && let Some(t) = process.tags.iter().find(|t| t.key.as_str() == key)
            {
                tags.push((key.to_owned(), raw_to_string(t.value)));
            }
        }
    }

    Ok(Span { id, parent, service: process.service_name.as_str().to_owned(), start_us, duration_us, container, tags })
}

/// Whether a reference's trace id names `canonical` (compared without leading zeros or case).
fn same_trace(raw: &str, canonical: &str) -> bool {
    let a = raw.trim_start_matches('0');
    let b = canonical.trim_start_matches('0');
    a.eq_ignore_ascii_case(b)
}

// ---------------------------------------------------------------------------------------
// Streaming over the top level.

/// One top-level document: `{"data": [...]}`, a bare trace object, or a list of traces.
struct Document<'a, 'c, Raw> {
    decoder: &'a mut Decoder<'c>,
    raw: PhantomData<Raw>,
}

impl<'de, Raw> DeserializeSeed<'de> for Document<'_, '_, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, Raw> Visitor<'de> for Document<'_, '_, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a Jaeger query response {"data": [...]}, a trace, or a list of traces"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen_data = false;
        let mut bare: Vec<(&'static str, Raw)> = Vec::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "data" => {
                    seen_data = true;
                    map.next_value_seed(json::RawList::<_, Raw>::new(&mut *self.decoder, "a list of traces or null"))?;
                }
                "traceID" => bare.push(("traceID", map.next_value()?)),
                "spans" => bare.push(("spans", map.next_value()?)),
                "processes" => bare.push(("processes", map.next_value()?)),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if bare.iter().any(|(k, _)| *k == "spans") {
            let mut text = String::from("{");
            for (i, (key, value)) in bare.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!("\"{key}\":{}", value.get()));
            }
            text.push('}');
            self.decoder.elements += 1;
            self.decoder.trace_text(&text);
        } else if !seen_data {
            return Err(de::Error::custom(r#"no "data" list and no "spans": not a Jaeger response"#));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        json::RawList::<_, Raw>::new(self.decoder, "a list of traces or null").visit_seq(seq)
    }
}

/// The list of traces (`data`, or a top-level list) goes through [`json::RawList`].
impl json::Elements for Decoder<'_> {
    fn begin(&mut self) {
        self.elements += 1;
    }

    fn element(&mut self, text: &str) {
        self.trace_text(text);
    }
}

// ---------------------------------------------------------------------------------------
// Typed view of one trace, borrowing from its text.

#[derive(Deserialize)]
struct TraceDoc<'a> {
    #[serde(rename = "traceID", borrow, default)]
    trace_id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "nullable")]
    spans: Vec<SpanDoc<'a>>,
    #[serde(borrow, default, deserialize_with = "nullable")]
    processes: HashMap<Text<'a>, ProcessDoc<'a>>,
}

#[derive(Deserialize)]
struct SpanDoc<'a> {
    #[serde(rename = "traceID", borrow, default)]
    trace_id: Option<Text<'a>>,
    #[serde(rename = "spanID", borrow)]
    span_id: Text<'a>,
    #[serde(rename = "parentSpanID", borrow, default)]
    parent_span_id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "nullable")]
    references: Vec<RefDoc<'a>>,
    #[serde(rename = "startTime")]
    start_time: Int,
    duration: Int,
    #[serde(borrow, default, deserialize_with = "nullable")]
    tags: Vec<TagDoc<'a>>,
    #[serde(rename = "processID", borrow, default)]
    process_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    process: Option<ProcessDoc<'a>>,
}

#[derive(Deserialize)]
struct RefDoc<'a> {
    #[serde(rename = "refType", default)]
    ref_type: RefType,
    #[serde(rename = "traceID", borrow, default)]
    trace_id: Option<Text<'a>>,
    #[serde(rename = "spanID", borrow)]
    span_id: Text<'a>,
}

#[derive(Deserialize)]
struct TagDoc<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ProcessDoc<'a> {
    #[serde(rename = "serviceName", borrow, default)]
    service_name: Text<'a>,
    #[serde(borrow, default, deserialize_with = "nullable")]
    tags: Vec<TagDoc<'a>>,
}

/// `refType`: `"CHILD_OF"` / `"FOLLOWS_FROM"` (any case), or the proto enum number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum RefType {
    #[default]
    ChildOf,
    FollowsFrom,
    Other,
}

impl<'de> Deserialize<'de> for RefType {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RefType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("CHILD_OF or FOLLOWS_FROM")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RefType, E> {
                Ok(if v.eq_ignore_ascii_case("CHILD_OF") {
                    RefType::ChildOf
                } else if v.eq_ignore_ascii_case("FOLLOWS_FROM") {
                    RefType::FollowsFrom
                } else {
                    RefType::Other
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RefType, E> {
                Ok(match v {
                    0 => RefType::ChildOf,
                    1 => RefType::FollowsFrom,
                    _ => RefType::Other,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RefType, E> {
                Ok(u64::try_from(v).map_or(RefType::Other, |v| self.visit_u64::<E>(v).unwrap_or(RefType::Other)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RefType, E> {
                Ok(RefType::ChildOf)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// Writer.

/// Write `traces` as one Jaeger query-API response (`{"data": [...]}`): processes `p1`, `p2`,
/// ... per distinct (service, container) of a trace, with the container as process tag
/// `hostname`; span tags as string tags; trace ids that are not hex are replaced by a hash.
pub fn write(writer: impl Write, traces: &[Trace]) -> std::io::Result<()> {
    let mut w = BufWriter::new(writer);
    w.write_all(b"{\"data\":[")?;
    for (i, trace) in traces.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        let id = ids::wire_trace_id(&trace.id).trace_hex();
        serde_json::to_writer(&mut w, &TraceOut::new(trace, &id))?;
    }
    write!(w, "],\"total\":{},\"limit\":0,\"offset\":0,\"errors\":null}}", traces.len())?;
    w.flush()
}

#[derive(Serialize)]
struct TraceOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: &'a str,
    spans: Vec<SpanOut<'a>>,
    processes: HashMap<String, ProcessOut<'a>>,
}

#[derive(Serialize)]
struct SpanOut<'a> {
    #[serde(rename = "traceID")]
    trace_id: &'a str,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "operationName")]
    operation_name: &'a str,
    references: Vec<RefOut<'a>>,
    #[serde(rename = "startTime")]
    start_time: i64,
    duration: i64,
    tags: Vec<TagOut<'a>>,
    #[serde(rename = "processID")]
    process_id: String,
}

#[derive(Serialize)]
struct RefOut<'a> {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: &'a str,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Serialize)]
struct TagOut<'a> {
    key: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct ProcessOut<'a> {
    #[serde(rename = "serviceName")]
    service_name: &'a str,
    tags: Vec<TagOut<'a>>,
}

impl<'a> TraceOut<'a> {
    fn new(trace: &'a Trace, trace_id: &'a str) -> Self {
        let mut out = TraceOut { trace_id, spans: Vec::new(), processes: HashMap::new() };
        let mut keys: Vec<(&str, Option<&str>)> = Vec::new();
        for s in &trace.spans {
            let key = (s.service.as_str(), s.container.as_deref());
            let n = match keys.iter().position(|k| *k == key) {
                Some(n) => n + 1,
                None => {
                    keys.push(key);
                    let tags = key.1.map(|c| vec![string_tag("hostname", c)]).unwrap_or_default();
                    out.processes.insert(format!("p{}", keys.len()), ProcessOut { service_name: key.0, tags });
                    keys.len()
                }
            };
            let references = s
                .parent
                .map(|p| RefOut {
                    ref_type: match p.kind {
                        RefKind::ChildOf => "CHILD_OF",
                        RefKind::FollowsFrom => "FOLLOWS_FROM",
                    },
                    trace_id,
                    span_id: format!("{:016x}", p.id),
                })
                .into_iter()
                .collect();
            out.spans.push(SpanOut {
                trace_id,
                span_id: format!("{:016x}", s.id),
                operation_name: &s.service,
                references,
                start_time: s.start_us,
                duration: s.duration_us,
                tags: s.tags.iter().map(|(k, v)| string_tag(k, v)).collect(),
                process_id: format!("p{n}"),
            });
        }
        out
    }
}

fn string_tag<'a>(key: &'a str, value: &'a str) -> TagOut<'a> {
    TagOut { key, kind: "string", value }
}

#[cfg(test)]
mod tests;
