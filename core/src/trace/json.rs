//! JSON helpers shared by the Jaeger and OTLP decoders: borrowed strings, lenient integers,
//! tag values of any type, and the error classification of a streamed document.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

/// A string borrowed from the input when it has no escapes (the usual case), owned otherwise.
/// (`Option<Cow<str>>` never borrows under serde, this does.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An integer that may arrive as a JSON number (integer or float) or as a string of one.
/// Values that do not fit `i64` (e.g. `1e300`, `18446744073709551615`) are kept as
/// [`Int::OutOfRange`] so the decoder can say `bad_time` rather than `malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    Value(i64),
    OutOfRange,
}

impl Int {
    pub(crate) fn get(self) -> Option<i64> {
        match self {
            Int::Value(v) => Some(v),
            Int::OutOfRange => None,
        }
    }

    fn from_f64(v: f64) -> Self {
        // i64::MAX as f64 rounds up to 2^63, which does not fit: compare with < 2^63.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.is_finite() && v > -LIMIT && v < LIMIT { Int::Value(v as i64) } else { Int::OutOfRange }
    }

    fn from_str(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return Some(Int::Value(v));
        }
        if s.parse::<u128>().is_ok() || s.strip_prefix('-').is_some_and(|d| d.parse::<u128>().is_ok()) {
            return Some(Int::OutOfRange);
        }
        // Integers with many digits fall through here too; finite floats only.
        match s.parse::<f64>() {
            Ok(v) if !s.is_empty() && s.bytes().all(|b| b"0123456789+-.eE".contains(&b)) => Some(Int::from_f64(v)),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer, or a string holding one")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int::Value(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(i64::try_from(v).map_or(Int::OutOfRange, Int::Value))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int, E> {
                Ok(Int::from_f64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int, E> {
                Int::from_str(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// `null` as the type's default (Jaeger writes `"references": null`, `"tags": null`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A tag value of any JSON type as the string a user would write: strings unquoted, numbers
/// and booleans as written, `null` as empty, arrays and objects as their JSON text.
pub(crate) fn raw_to_string(raw: Option<&RawValue>) -> String {
    let Some(raw) = raw else { return String::new() };
    let text = raw.get().trim();
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).filter(|t| !t.contains('\\')) {
        // No escapes: the text between the quotes is the string (RawValue is valid JSON).
        inner.to_owned()
    } else if text.starts_with('"') {
        serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned())
    } else if text == "null" {
        String::new()
    } else {
        text.to_owned()
    }
}

/// What happened to a streamed document that did not parse to its end.
#[derive(Debug)]
pub(crate) enum Broken {
    /// Nothing but whitespace.
    Empty,
    /// The input ended inside a value.
    Truncated { line: usize, column: usize },
    /// Invalid JSON (or a wrong type at the top level).
    Invalid { line: usize, column: usize, detail: String },
    /// Reading failed.
    Io(std::io::Error),
}

impl Broken {
    pub(crate) fn classify(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            Category::Io => {
                let io = std::io::Error::from(e);
                if io.kind() == std::io::ErrorKind::UnexpectedEof {
                    // A cut gzip stream ends like a cut file.
                    Broken::Truncated { line, column }
                } else {
                    Broken::Io(io)
                }
            }
            Category::Eof => Broken::Truncated { line, column },
            Category::Syntax | Category::Data => Broken::Invalid { line, column, detail: e.to_string() },
        }
    }
}

/// Inputs up to this size are read into memory and parsed as a slice, two to three times
/// faster than through serde_json's byte-at-a-time reader; larger ones are streamed, so memory
/// stays bounded on multi-GB files.
pub(crate) const IN_MEMORY_LIMIT: usize = 64 << 20;

/// The start of an input: all of it (when it fits `limit`), or a reader over all of it.
pub(crate) enum Input<R> {
    /// The whole input; `cut` if reading it ended with an unexpected EOF (a cut gzip stream).
    Whole { bytes: Vec<u8>, cut: bool },
    /// Larger than the limit: the bytes read so far, then the rest.
    Large(std::io::Chain<std::io::Cursor<Vec<u8>>, R>),
}

impl<R: std::io::Read> Input<R> {
    pub(crate) fn read(mut reader: R, limit: usize) -> std::io::Result<Self> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
        match (&mut reader).take(limit64).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() < limit => Ok(Input::Whole { bytes, cut: false }),
            Ok(_) => Ok(Input::Large(std::io::Cursor::new(bytes).chain(reader))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Input::Whole { bytes, cut: true }),
            Err(e) => Err(e),
        }
    }
}

/// Whether `bytes` holds only whitespace after the 1-based (`line`, `column`) serde_json
/// reported for an error.
pub(crate) fn rest_is_blank(bytes: &[u8], line: usize, column: usize) -> bool {
    let mut start = 0;
    for _ in 1..line {
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => return false,
        }
    }
    let from = start.saturating_add(column).min(bytes.len());
    bytes[from..].iter().all(u8::is_ascii_whitespace)
}

/// Byte offset of the start of the line after 1-based `line`, if there is one.
pub(crate) fn next_line(bytes: &[u8], line: usize) -> Option<usize> {
    let mut start = 0;
    for _ in 0..line {
        start += bytes[start..].iter().position(|&b| b == b'\n')? + 1;
    }
    Some(start)
}

/// What a streamed list hands its elements to: `begin` before an element is read (so an
/// input cut inside it is known to have started one), `element` with its raw text.
pub(crate) trait Elements {
    fn begin(&mut self);
    fn element(&mut self, text: &str);
}

/// A JSON list (or null) read one element at a time, each captured as raw text (`Raw` is
/// `&RawValue` from a slice, `Box<RawValue>` from a reader) and decoded on its own by the
/// sink, so that a malformed element is skipped without losing the rest.
pub(crate) struct RawList<'a, S, Raw> {
    sink: &'a mut S,
    expecting: &'static str,
    raw: PhantomData<Raw>,
}

impl<'a, S, Raw> RawList<'a, S, Raw> {
    pub(crate) fn new(sink: &'a mut S, expecting: &'static str) -> Self {
        RawList { sink, expecting, raw: PhantomData }
    }
}

impl<'de, S: Elements, Raw> DeserializeSeed<'de> for RawList<'_, S, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Elements, Raw> Visitor<'de> for RawList<'_, S, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RawElement::<S, Raw> { sink: &mut *self.sink, raw: PhantomData })?.is_some() {}
        Ok(())
    }
}

struct RawElement<'a, S, Raw> {
    sink: &'a mut S,
    raw: PhantomData<Raw>,
}

impl<'de, S: Elements, Raw> DeserializeSeed<'de> for RawElement<'_, S, Raw>
where
    Raw: Deserialize<'de> + Deref<Target = RawValue>,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.sink.begin();
        let raw = Raw::deserialize(d)?;
        self.sink.element(raw.get());
        Ok(())
    }
}

/// Damaged inputs for the decoders' property tests: the streaming and in-memory paths must
/// agree on them.
#[cfg(test)]
pub(crate) mod damage {
    use crate::trace::{Error, Skips, Trace};

    /// `doc` after ASCII edits `(position, kind, byte)`: overwrite, remove, insert, truncate.
    pub fn apply(mut doc: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(pos, kind, byte) in edits {
            if doc.is_empty() {
                break;
            }
            let at = pos % doc.len();
            match kind {
                0 => doc[at] = byte,
                1 => _ = doc.remove(at),
                2 => doc.insert(at, byte),
                _ => doc.truncate(at),
            }
        }
        doc
    }

    /// What a decode gave: the kind of error, the traces, the skipped records.
    pub type Outcome = (Result<(), std::mem::Discriminant<Error>>, Vec<Trace>, u64);

    /// `read(limit, skips, sink)` held in memory and streamed (limit 0).
    ///
    /// (ASCII edits only: invalid UTF-8 is found at the byte in memory but at the end of the
    /// element when streaming, so the two resume at different lines; both count it. And
    /// serde_json's reader and slice parsers may place an error a byte apart, which can make
    /// input cut in a value read as truncated by one and invalid by the other: only the kind of
    /// error is compared.)
    pub fn both_ways(
        read: impl Fn(usize, &mut Skips, &mut dyn FnMut(Trace)) -> Result<(), Error>,
    ) -> (Outcome, Outcome) {
        let run = |limit: usize| {
            let mut skips = Skips::default();
            let mut traces = Vec::new();
            let result = read(limit, &mut skips, &mut |t| traces.push(t));
            (result.map_err(|e| std::mem::discriminant(&e)), traces, skips.total())
        };
        (run(super::IN_MEMORY_LIMIT), run(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(json: &str) -> Result<Int, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn ints_from_numbers_and_strings() {
        assert_eq!(int("12").ok(), Some(Int::Value(12)));
        assert_eq!(int("-3").ok(), Some(Int::Value(-3)));
        assert_eq!(int("\"1700000000000000\"").ok(), Some(Int::Value(1_700_000_000_000_000)));
        assert_eq!(int("1.5e6").ok(), Some(Int::Value(1_500_000)));
        assert_eq!(int("\"2.5\"").ok(), Some(Int::Value(2)));
        assert_eq!(int("1e300").ok(), Some(Int::OutOfRange));
        assert_eq!(int("18446744073709551615").ok(), Some(Int::OutOfRange));
        assert_eq!(int("\"99999999999999999999999\"").ok(), Some(Int::OutOfRange));
        assert_eq!(int("\"inf\"").ok(), None);
        assert_eq!(int("\"NaN\"").ok(), None);
        assert_eq!(int("\"abc\"").ok(), None);
        assert_eq!(int("\"\"").ok(), None);
        assert!(int("true").is_err());
        assert!(int("null").is_err());
    }

    #[test]
    fn text_borrows_unless_escaped() {
        let t: Text<'_> = serde_json::from_str("\"abc\"").unwrap_or_default();
        assert!(matches!(t.0, Cow::Borrowed("abc")));
        let t: Text<'_> = serde_json::from_str("\"a\\u0062c\"").unwrap_or_default();
        assert_eq!(t.as_str(), "abc");
        let t: Option<Text<'_>> = serde_json::from_str("\"x\"").unwrap_or_default();
        assert!(matches!(t, Some(Text(Cow::Borrowed("x")))));
    }

    #[test]
    fn raw_values_as_strings() {
        let v: Vec<&RawValue> = serde_json::from_str(r#"["s\"q", 12, 1.5, true, null, [1, 2]]"#).unwrap_or_default();
        let s: Vec<String> = v.into_iter().map(|r| raw_to_string(Some(r))).collect();
        assert_eq!(s, ["s\"q", "12", "1.5", "true", "", "[1, 2]"]);
        assert_eq!(raw_to_string(None), "");
    }
}
