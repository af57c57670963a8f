//! OTLP JSON: requests streamed one `resourceSpans` at a time, and resynchronisation at the
//! next line after invalid JSON (JSON lines).

use super::{Decoder, Incoming, JSON, Origin};
use crate::trace::json::{self, Broken, Int, Text, nullable, raw_to_string};
use crate::trace::{Error, Reason, ids};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::io::{BufRead, Read};
use std::marker::PhantomData;
use std::ops::Deref;

impl Decoder<'_> {
    /// One `resourceSpans` element's JSON text.
    fn resource_spans_text(&mut self, text: &str) {
        match serde_json::from_str::<ResourceSpansDoc<'_>>(text) {
            Ok(doc) => self.json_resource_spans(&doc),
            Err(e) => {
                let (origin, index) = (self.origin, self.elements);
                self.skips.add(Reason::Malformed, || {
                    format!("{origin}: resourceSpans #{index}: {e} (position within the element)")
                });
            }
        }
    }

    fn json_resource_spans(&mut self, doc: &ResourceSpansDoc<'_>) {
        let attributes = doc.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
        let origin = Origin::new(attributes.iter().map(|kv| {
            let value: Box<dyn FnOnce() -> String> = Box::new(|| json_value(kv.value.as_ref()));
            (kv.key.as_str(), value)
        }));
        for span in doc.scope_spans.iter().chain(&doc.library_spans).flat_map(|ss| &ss.spans) {
            let tags = span
                .attributes
                .iter()
                .filter(|kv| self.config.keeps(kv.key.as_str()))
                .map(|kv| (kv.key.as_str().to_owned(), json_value(kv.value.as_ref())))
                .collect();
            let parent = match span.parent_span_id.as_ref().map(Text::as_str) {
                None | Some("") => Ok(None),
                Some(p) => ids::otlp_json_id(p, 8).map(Some).ok_or(()),
            };
            let incoming = Incoming {
                trace: span.trace_id.as_ref().and_then(|t| ids::otlp_json_id(t.as_str(), 16)),
                id: span.span_id.as_ref().and_then(|t| ids::otlp_json_id(t.as_str(), 8)),
                parent,
                start_ns: span.start.unwrap_or(Int::Value(0)),
                end_ns: span.end.unwrap_or(Int::Value(0)),
                tags,
            };
            self.span(&origin, incoming);
        }
        self.flush();
    }

    /// Decode JSON held in memory, resuming at the next line after invalid JSON.
    pub(super) fn slice(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut rest = bytes;
        let mut line_base = 0;
        let mut began = false;
        loop {
            let outcome = self.drive::<_, &RawValue>(&mut serde_json::Deserializer::from_slice(rest), &mut began);
            match outcome {
                Err(Broken::Invalid { line, column, detail }) if began => {
                    if json::rest_is_blank(rest, line, column) {
                        return self.finish(Err(Broken::Truncated { line: line_base + line, column }));
                    }
                    self.count_invalid(line_base + line, column, &detail);
                    // Column 0: the parser stopped at a line break; resume on the next line.
                    let skip = if column == 0 && line > 1 { line - 1 } else { line };
                    match json::next_line(rest, skip) {
                        Some(next) => rest = &rest[next..],
                        None => return Ok(()),
                    }
                    line_base += skip;
                }
                Err(Broken::Invalid { line, column, detail }) => {
                    return self.finish(Err(Broken::Invalid { line: line_base + line, column, detail }));
                }
                Err(Broken::Truncated { line, column }) => {
                    return self.finish(Err(Broken::Truncated { line: line_base + line, column }));
                }
                other => return self.finish(other),
            }
        }
    }

    /// Decode JSON from a reader with bounded memory, resuming at the next line after
    /// invalid JSON (as [`Decoder::slice`] does).
    pub(super) fn stream(&mut self, reader: impl BufRead) -> Result<(), Error> {
        let mut input = Resync { inner: reader, replay: Vec::new(), at: 0, line: Vec::new(), long: false };
        let mut line_base = 0;
        let mut began = false;
        loop {
            let outcome =
                self.drive::<_, Box<RawValue>>(&mut serde_json::Deserializer::from_reader(&mut input), &mut began);
            match outcome {
                Err(Broken::Invalid { line, column, detail }) if began => {
                    if input.at_end() {
                        return self.finish(Err(Broken::Truncated { line: line_base + line, column }));
                    }
                    self.count_invalid(line_base + line, column, &detail);
                    // Column 0: the parser stopped at a line break; resume on the next line.
                    if column == 0 && line > 1 && input.rewind_line() {
                        line_base += line - 1;
                        continue;
                    }
                    match input.skip_line() {
                        Ok(true) => line_base += line,
                        Ok(false) => return Ok(()),
                        Err(e) => return Err(Error::io(self.origin, e)),
                    }
                }
                Err(Broken::Invalid { line, column, detail }) => {
                    return self.finish(Err(Broken::Invalid { line: line_base + line, column, detail }));
                }
                Err(Broken::Truncated { line, column }) => {
                    return self.finish(Err(Broken::Truncated { line: line_base + line, column }));
                }
                other => return self.finish(other),
            }
        }
    }

    fn count_invalid(&mut self, line: usize, column: usize, detail: &str) {
        let origin = self.origin;
        self.skips.add(Reason::Malformed, || format!("{origin}:{line}:{column}: {detail}; skipped to the next line"));
    }

    /// Read top-level requests until the end of input; `began` is set once one was read
    /// or an element of one was begun.
    fn drive<'de, R, Raw>(&mut self, de: &mut serde_json::Deserializer<R>, began: &mut bool) -> Result<(), Broken>
    where
        R: serde_json::de::Read<'de>,
        Raw: Deserialize<'de> + Deref<Target = RawValue>,
    {
        loop {
            match de.end().map_err(Broken::classify) {
                Ok(()) => return Ok(()),
                Err(e @ Broken::Io(_)) => return Err(e),
                Err(_) => {}
            }
            let before = self.elements;
            let result = Request::<Raw> { decoder: self, raw: PhantomData }.deserialize(&mut *de);
            *began |= self.elements > before;
            result.map_err(Broken::classify)?;
            *began = true;
        }
    }

    fn finish(&mut self, outcome: Result<(), Broken>) -> Result<(), Error> {
        let origin = self.origin;
        match outcome {
            Ok(()) | Err(Broken::Empty) => Ok(()),
            Err(Broken::Io(e)) => Err(Error::io(origin, e)),
            Err(Broken::Truncated { line, column }) => {
                self.skips.add(Reason::Truncated, || format!("{origin}:{line}:{column}: input ends early"));
                Ok(())
            }
            Err(Broken::Invalid { line, column, detail }) => Err(Error::format(origin, JSON, line, column, detail)),
        }
    }
}

/// A reader that can go back to the start of the current line, if the parser read only a
/// few bytes of it (serde_json's reader may read a byte past where it reports an error).
struct Resync<R> {
    inner: R,
    /// Bytes to read again before `inner`, from `at`.
    replay: Vec<u8>,
    at: usize,
    /// The current line's bytes read so far (the first few).
    line: Vec<u8>,
    /// More of the current line was read than `line` holds.
    long: bool,
}

impl<R: BufRead> Resync<R> {
    const KEEP: usize = 16;

    fn rewind_line(&mut self) -> bool {
        if self.long {
            return false;
        }
        let mut replay = std::mem::take(&mut self.line);
        replay.extend_from_slice(&self.replay[self.at..]);
        (self.replay, self.at) = (replay, 0);
        true
    }

    /// Read past the next line break; false at end of input.
    fn skip_line(&mut self) -> std::io::Result<bool> {
        let mut byte = [0u8];
        loop {
            match self.read(&mut byte)? {
                0 => return Ok(false),
                _ if byte[0] == b'\n' => return Ok(true),
                _ => {}
            }
        }
    }

    fn at_end(&mut self) -> bool {
        self.at >= self.replay.len() && self.inner.fill_buf().is_ok_and(|rest| rest.is_empty())
    }
}

impl<R: BufRead> Read for Resync<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = if self.at < self.replay.len() {
            let n = buf.len().min(self.replay.len() - self.at);
            buf[..n].copy_from_slice(&self.replay[self.at..self.at + n]);
            self.at += n;
            n
        } else {
            self.inner.read(buf)?
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                self.line.clear();
                self.long = false;
            } else if self.line.len() < Self::KEEP {
                self.line.push(b);
            } else {
                self.long = true;
            }
        }
        Ok(n)
    }
}

/// An OTLP JSON `AnyValue` as a string.
fn json_value(value: Option<&AnyValueDoc<'_>>) -> String {
    let Some(v) = value else { return String::new() };
    if let Some(s) = &v.string {
        return s.as_str().to_owned();
    }
    let raw = [v.int, v.double, v.bool, v.array, v.kvlist, v.bytes].into_iter().flatten().next();
    raw_to_string(raw)
}

// ---------------------------------------------------------------------------------------
// Streaming over the top level.

/// One request: `{"resourceSpans": [...]}` or `{"result": {"resourceSpans": [...]}}`.
struct Request<'a, 'c, Raw> {
    decoder: &'a mut Decoder<'c>,
    raw: PhantomData<Raw>,
}

impl<'de, Raw> DeserializeSeed<'de> for Request<'_, '_, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, Raw> Visitor<'de> for Request<'_, '_, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an OTLP request {"resourceSpans": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut known, mut unknown) = (false, false);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "resourceSpans" | "resource_spans" => {
                    known = true;
                    map.next_value_seed(json::RawList::<_, Raw>::new(&mut *self.decoder, "a list of resourceSpans"))?;
                }
                "result" => {
                    known = true;
                    map.next_value_seed(Request::<Raw> { decoder: &mut *self.decoder, raw: PhantomData })?;
                }
                "error" => {
                    known = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    unknown = true;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if unknown && !known {
            return Err(de::Error::custom("no resourceSpans: not an OTLP trace request"));
        }
        Ok(())
    }
}

/// `resourceSpans` goes through [`json::RawList`], one element at a time.
impl json::Elements for Decoder<'_> {
    fn begin(&mut self) {
        self.elements += 1;
    }

    fn element(&mut self, text: &str) {
        self.resource_spans_text(text);
    }
}

// ---------------------------------------------------------------------------------------
// Typed view of one resourceSpans element, borrowing from its text.

#[derive(Deserialize)]
struct ResourceSpansDoc<'a> {
    #[serde(borrow, default)]
    resource: Option<ResourceDoc<'a>>,
    #[serde(rename = "scopeSpans", alias = "scope_spans", borrow, default, deserialize_with = "nullable")]
    scope_spans: Vec<ScopeSpansDoc<'a>>,
    #[serde(
        rename = "instrumentationLibrarySpans",
        alias = "instrumentation_library_spans",
        borrow,
        default,
        deserialize_with = "nullable"
    )]
    library_spans: Vec<ScopeSpansDoc<'a>>,
}

#[derive(Deserialize)]
struct ResourceDoc<'a> {
    #[serde(borrow, default, deserialize_with = "nullable")]
    attributes: Vec<KeyValueDoc<'a>>,
}

#[derive(Deserialize)]
struct ScopeSpansDoc<'a> {
    #[serde(borrow, default, deserialize_with = "nullable")]
    spans: Vec<SpanDoc<'a>>,
}

#[derive(Deserialize)]
struct SpanDoc<'a> {
    #[serde(rename = "traceId", alias = "trace_id", borrow, default)]
    trace_id: Option<Text<'a>>,
    #[serde(rename = "spanId", alias = "span_id", borrow, default)]
    span_id: Option<Text<'a>>,
    #[serde(rename = "parentSpanId", alias = "parent_span_id", borrow, default)]
    parent_span_id: Option<Text<'a>>,
    #[serde(rename = "startTimeUnixNano", alias = "start_time_unix_nano", default)]
    start: Option<Int>,
    #[serde(rename = "endTimeUnixNano", alias = "end_time_unix_nano", default)]
    end: Option<Int>,
    #[serde(borrow, default, deserialize_with = "nullable")]
    attributes: Vec<KeyValueDoc<'a>>,
}

#[derive(Deserialize)]
struct KeyValueDoc<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow, default)]
    value: Option<AnyValueDoc<'a>>,
}

#[derive(Deserialize)]
struct AnyValueDoc<'a> {
    #[serde(rename = "stringValue", alias = "string_value", borrow, default)]
    string: Option<Text<'a>>,
    #[serde(rename = "intValue", alias = "int_value", borrow, default)]
    int: Option<&'a RawValue>,
    #[serde(rename = "doubleValue", alias = "double_value", borrow, default)]
    double: Option<&'a RawValue>,
    #[serde(rename = "boolValue", alias = "bool_value", borrow, default)]
    bool: Option<&'a RawValue>,
    #[serde(rename = "arrayValue", alias = "array_value", borrow, default)]
    array: Option<&'a RawValue>,
    #[serde(rename = "kvlistValue", alias = "kvlist_value", borrow, default)]
    kvlist: Option<&'a RawValue>,
    #[serde(rename = "bytesValue", alias = "bytes_value", borrow, default)]
    bytes: Option<&'a RawValue>,
}
