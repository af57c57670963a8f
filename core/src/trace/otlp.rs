//! OpenTelemetry traces (OTLP): JSON and protobuf `ExportTraceServiceRequest`s.
//!
//! JSON shapes: a plain request `{"resourceSpans": [...]}` (also the legacy
//! `instrumentationLibrarySpans` and proto field names such as `resource_spans`), Jaeger
//! api_v3's `{"result": {"resourceSpans": [...]}}`, and JSON lines (one request per line, as
//! the OpenTelemetry Collector file exporter writes). Elements of `resourceSpans` are read one
//! at a time, so memory stays bounded; invalid JSON after data began is counted
//! ([`Reason::Malformed`]) and reading resumes at the next line. Protobuf: one
//! `ExportTraceServiceRequest` per input, streamed: its top-level `resourceSpans` fields are
//! framed by their length and decoded one at a time, so memory is bounded by the largest
//! element and a cut file keeps what came before the cut. A request whose first field is not
//! `resourceSpans` (legal, never written by exporters) is held whole and decoded by prost.
//!
//! Per span:
//! - ids: hex (32 or 16 digits) or base64 (24 or 12 characters, as some exporters write the
//!   bytes), told apart by length; the trace id becomes canonical hex (see `Trace::id`),
//!   span ids their low 64 bits. An empty or all-zero `parentSpanId` marks a root; links are
//!   ignored. An unreadable trace id drops the span ([`Reason::Malformed`]); any other bad id
//!   drops its trace.
//! - times: `startTimeUnixNano` / `endTimeUnixNano`, strings or numbers, nanoseconds rounded
//!   down to microseconds; an end before the start or a value out of range drops the trace
//!   ([`Reason::BadTime`]).
//! - service: resource attribute `service.name`; missing drops the span's trace
//!   ([`Reason::NoService`]). Container: resource `k8s.pod.name`, else `service.instance.id`,
//!   else `host.name`.
//! - attributes (`AnyValue`: string, int as string or number, double, bool, others as JSON
//!   text) kept as strings, only those [`Config::keeps`].
//!
//! Spans of one trace may be spread across `resourceSpans`, lines and request bodies; an
//! [`Assembler`] groups them (see [`super::assemble`] for when a trace is complete). [`read`]
//! owns one; a receiver that gets one body at a time keeps its own and calls
//! [`decode_json`] / [`decode_protobuf`] per body, [`Assembler::advance`] on a timer and
//! [`Assembler::finish`] at shutdown.

use super::json::{self, Int};
use super::{Assembler, Config, Error, Parent, Reason, RefKind, Skips, Span, Trace, ids, times_ok};
use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pb;
use prost::Message as _;
use std::io::{BufRead, BufReader, Read};

const JSON: &str = "OTLP JSON";
const PROTOBUF: &str = "OTLP protobuf";

/// Decode OTLP (JSON, JSON lines or protobuf, detected from the first bytes) from `reader`,
/// calling `sink` for each assembled trace.
pub fn read(
    reader: impl Read,
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    read_with_limit(reader, json::IN_MEMORY_LIMIT, origin, config, skips, sink)
}

fn read_with_limit(
    reader: impl Read,
    limit: usize,
    origin: &str,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    let mut assembler = Assembler::new(config.flush_after_us);
    match json::Input::read(reader, limit).map_err(|e| Error::io(origin, e))? {
        json::Input::Whole { bytes, cut } => {
            let truncated = skips.count(Reason::Truncated);
            if is_json(&bytes) {
                decode_json(&bytes, origin, config, &mut assembler, skips, sink)?;
            } else if !is_blank(&bytes) {
                decode_protobuf(&bytes, origin, config, &mut assembler, skips, sink)?;
            }
            if cut && skips.count(Reason::Truncated) == truncated {
                skips.add(Reason::Truncated, || format!("{origin}: input ends early (cut compressed stream)"));
            }
        }
        json::Input::Large(reader) => {
            let mut reader = BufReader::with_capacity(1 << 16, reader);
            let head = reader.fill_buf().map_err(|e| Error::io(origin, e))?;
            if is_json(head) {
                let mut decoder = Decoder::new(origin, config, &mut assembler, skips, sink);
                decoder.stream(reader)?;
            } else {
                // Streamed; a short input is checked for blankness first, as when whole.
                let mut head = Vec::new();
                (&mut reader).take(1 << 16).read_to_end(&mut head).map_err(|e| Error::io(origin, e))?;
                let mut decoder = Decoder::new(origin, config, &mut assembler, skips, sink);
                if head.len() < 1 << 16 {
                    if !is_blank(&head) {
                        decoder.protobuf(&head[..])?;
                    }
                } else {
                    decoder.protobuf(std::io::Cursor::new(head).chain(reader))?;
                }
            }
        }
    }
    assembler.finish(&mut |id, spans| sink(Trace { id, spans }));
    Ok(())
}

/// Only whitespace: an empty input (not a protobuf message of whitespace bytes).
fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// JSON if the first non-blank byte opens an object whose next token is a key or its end (a
/// protobuf request may start with the bytes of `\n{`).
fn is_json(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rest = bytes.iter().skip_while(|b| b.is_ascii_whitespace());
    rest.next() == Some(&b'{') && matches!(rest.find(|b| !b.is_ascii_whitespace()), Some(b'"' | b'}') | None)
}

/// Decode one OTLP JSON body (or several requests, one per line) into `assembler`; complete
/// traces go to `sink`. Nothing that parses as an OTLP request at the top is an
/// [`Error::Format`] (an OTLP/HTTP receiver answers 400).
pub fn decode_json(
    bytes: &[u8],
    origin: &str,
    config: &Config,
    assembler: &mut Assembler,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    Decoder::new(origin, config, assembler, skips, sink).slice(bytes)
}

/// Decode one OTLP protobuf `ExportTraceServiceRequest` into `assembler`; complete traces go to
/// `sink`. Bytes that are not such a message at the start are an [`Error::Format`] (column =
/// byte offset); damage after some `resourceSpans` were read is counted instead.
pub fn decode_protobuf(
    bytes: &[u8],
    origin: &str,
    config: &Config,
    assembler: &mut Assembler,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    Decoder::new(origin, config, assembler, skips, sink).protobuf(bytes)
}

/// Reads one byte; `None` at the end.
fn next_byte(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let byte = reader.fill_buf()?.first().copied();
    if byte.is_some() {
        reader.consume(1);
    }
    Ok(byte)
}

/// Reads a length delimiter (a varint of at most 10 bytes): `Err` with why if it is cut or bad.
fn length_delimiter(reader: &mut impl BufRead) -> Result<(usize, usize), String> {
    let mut bytes = [0u8; 10];
    for n in 0..bytes.len() {
        match next_byte(reader) {
            Ok(Some(b)) => {
                bytes[n] = b;
                if b < 0x80 {
                    let len = prost::decode_length_delimiter(&bytes[..=n]).map_err(|e| e.to_string())?;
                    return Ok((len, n + 1));
                }
            }
            Ok(None) => return Err("input ends inside a length".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("length varint longer than 10 bytes".into())
}

/// The resource a span ran in.
#[derive(Debug, Default)]
struct Origin {
    service: Option<String>,
    container: Option<String>,
}

impl Origin {
    /// From (key, value) attribute pairs, values converted only for the keys used.
    fn new<'v>(attributes: impl Iterator<Item = (&'v str, Box<dyn FnOnce() -> String + 'v>)>) -> Self {
        const CONTAINER: [&str; 3] = ["k8s.pod.name", "service.instance.id", "host.name"];
        let mut origin = Origin::default();
        let mut rank = CONTAINER.len();
        for (key, value) in attributes {
            if key == "service.name" {
                origin.service = Some(value()).filter(|s| !s.is_empty());
            } else if let Some(r) = CONTAINER.iter().position(|k| *k == key).filter(|&r| r < rank) {
                let v = value();
                if !v.is_empty() {
                    origin.container = Some(v);
                    rank = r;
                }
            }
        }
        origin
    }
}

/// One span as read, before checks.
struct Incoming {
    trace: Option<ids::IdBytes>,
    id: Option<ids::IdBytes>,
    /// `Err` if present but unreadable.
    parent: Result<Option<ids::IdBytes>, ()>,
    start_ns: Int,
    end_ns: Int,
    tags: Vec<(String, String)>,
}

struct Decoder<'c> {
    origin: &'c str,
    config: &'c Config,
    assembler: &'c mut Assembler,
    skips: &'c mut Skips,
    sink: &'c mut dyn FnMut(Trace),
    /// `resourceSpans` elements begun.
    elements: usize,
}

impl<'c> Decoder<'c> {
    fn new(
        origin: &'c str,
        config: &'c Config,
        assembler: &'c mut Assembler,
        skips: &'c mut Skips,
        sink: &'c mut dyn FnMut(Trace),
    ) -> Self {
        Decoder { origin, config, assembler, skips, sink, elements: 0 }
    }

    /// Check one span and hand it to the assembler.
    fn span(&mut self, origin: &Origin, s: Incoming) {
        let source = self.origin;
        let Some(trace) = s.trace.filter(|t| !t.is_zero()) else {
            self.skips.add(Reason::Malformed, || format!("{source}: a span without a valid traceId"));
            return;
        };
        let trace_id = trace.trace_hex();
        let times = match (s.start_ns.get(), s.end_ns.get()) {
            (Some(start), Some(end)) if start <= end => {
                let (start_us, end_us) = (start.div_euclid(1000), end.div_euclid(1000));
                let duration = end_us.checked_sub(start_us).filter(|&d| times_ok(start_us, d));
                duration.map(|d| (start_us, d, end_us))
            }
            _ => None,
        };
        let id = s.id.filter(|i| !i.is_zero()).map(|i| i.low_u64());
        let checked = || -> Result<Span, (Reason, String)> {
            let id = id.ok_or((Reason::Malformed, "missing or invalid spanId".to_owned()))?;
            let parent = s.parent.map_err(|()| (Reason::Malformed, "invalid parentSpanId".to_owned()))?;
            let (start_us, duration_us, _) = times.ok_or_else(|| {
                (Reason::BadTime, format!("bad times: start {:?} ns, end {:?} ns", s.start_ns, s.end_ns))
            })?;
            let service = origin.service.clone().ok_or((Reason::NoService, "no service.name".to_owned()))?;
            Ok(Span {
                id,
                parent: parent.filter(|p| !p.is_zero()).map(|p| Parent { id: p.low_u64(), kind: RefKind::ChildOf }),
                service,
                start_us,
                duration_us,
                container: origin.container.clone(),
                tags: s.tags,
            })
        };
        let end_us = times.map_or_else(|| self.assembler.clock().unwrap_or(i64::MIN), |t| t.2);
        match checked() {
            Ok(span) => self.assembler.add(&trace_id, end_us, span),
            Err((reason, why)) => {
                let span = id.map(|i| format!("{i:016x}")).unwrap_or_default();
                let example = || format!("{source}: trace {trace_id}: span {span}: {why}");
                self.assembler.reject(&trace_id, end_us, reason, example, self.skips);
            }
        }
    }

    /// Streams one protobuf `ExportTraceServiceRequest` from `reader` (see the module docs).
    fn protobuf(&mut self, mut reader: impl BufRead) -> Result<(), Error> {
        let origin = self.origin;
        let mut element = Vec::new();
        let (mut offset, mut index) = (0usize, 0usize);
        let fail = |decoder: &mut Self, index: usize, offset: usize, reason: Reason, detail: String| {
            if index == 0 {
                Err(Error::format(origin, PROTOBUF, 1, offset + 1, detail))
            } else {
                decoder.skips.add(reason, || format!("{origin}: byte {offset}: {detail}; rest skipped"));
                Ok(())
            }
        };
        loop {
            let key = match next_byte(&mut reader).map_err(|e| Error::io(origin, e))? {
                Some(key) => key,
                None => return Ok(()),
            };
            // Field 1 (resource_spans), length-delimited: key byte 0x0a.
            if key != 0x0a {
                let mut rest = vec![key];
                reader.read_to_end(&mut rest).map_err(|e| Error::io(origin, e))?;
                return match ExportTraceServiceRequest::decode(&rest[..]) {
                    Ok(request) => {
                        request.resource_spans.into_iter().for_each(|rs| self.proto_resource_spans(rs));
                        Ok(())
                    }
                    Err(e) => fail(self, index, offset, Reason::Malformed, e.to_string()),
                };
            }
            let (len, width) = match length_delimiter(&mut reader) {
                Ok(frame) => frame,
                Err(detail) => return fail(self, index, offset, Reason::Truncated, detail),
            };
            element.clear();
            let got = (&mut reader).take(len as u64).read_to_end(&mut element).map_err(|e| Error::io(origin, e))?;
            if got < len {
                let detail = format!("resourceSpans of {len} bytes, {got} left");
                return fail(self, index, offset, Reason::Truncated, detail);
            }
            match pb::ResourceSpans::decode(&element[..]) {
                Ok(rs) => self.proto_resource_spans(rs),
                Err(e) if index == 0 => return fail(self, index, offset, Reason::Malformed, e.to_string()),
                Err(e) => {
                    self.skips.add(Reason::Malformed, || format!("{origin}: byte {offset}: resourceSpans: {e}"));
                }
            }
            offset += 1 + width + len;
            index += 1;
        }
    }

    /// A `resourceSpans` is done: emit the traces the clock has passed.
    fn flush(&mut self) {
        let sink = &mut *self.sink;
        self.assembler.flush(&mut |id, spans| sink(Trace { id, spans }));
    }

    fn proto_resource_spans(&mut self, rs: pb::ResourceSpans) {
        let attributes = rs.resource.as_ref().map(|r: &Resource| &r.attributes[..]).unwrap_or_default();
        let origin = Origin::new(attributes.iter().map(|kv| {
            let value: Box<dyn FnOnce() -> String> = Box::new(|| proto_value(kv.value.as_ref()));
            (kv.key.as_str(), value)
        }));
        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            let tags = self.proto_tags(&span.attributes);
            let incoming = Incoming {
                trace: ids::IdBytes::from_slice(&span.trace_id),
                id: ids::IdBytes::from_slice(&span.span_id),
                parent: ids::IdBytes::from_slice(&span.parent_span_id).map(Some).ok_or(()),
                start_ns: i64::try_from(span.start_time_unix_nano).map_or(Int::OutOfRange, Int::Value),
                end_ns: i64::try_from(span.end_time_unix_nano).map_or(Int::OutOfRange, Int::Value),
                tags,
            };
            self.span(&origin, incoming);
        }
        self.flush();
    }

    fn proto_tags(&self, attributes: &[KeyValue]) -> Vec<(String, String)> {
        attributes
            .iter()
            .filter(|kv| self.config.keeps(&kv.key))
            .map(|kv| (kv.key.clone(), proto_value(kv.value.as_ref())))
            .collect()
    }
}

/// An `AnyValue` as a string.
fn proto_value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| proto_value(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let items: Vec<String> =
                kv.values.iter().map(|kv| format!("{}={}", kv.key, proto_value(kv.value.as_ref()))).collect();
            format!("{{{}}}", items.join(","))
        }
        Some(any_value::Value::StringValueStrindex(_)) => String::new(),
    }
}

mod stream;
mod write;

pub use write::{encode_protobuf, write_json};

#[cfg(test)]
mod tests;
