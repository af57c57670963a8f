//! Trace files: open, gunzip, detect the format, dispatch to its decoder.
//!
//! Gzip is recognised by its magic bytes (so `.gz` files and unnamed gzip streams both work;
//! concatenated gzip members are read as one stream). Format detection from the first bytes:
//! - `{"data"`, `{"traceID"`, `{"spans"` or `[`: Jaeger JSON;
//! - `{"resourceSpans"`, `{"resource_spans"` or `{"result"`: OTLP JSON (also JSON lines);
//! - another JSON object: whichever of those keys appears first in the first 64 KiB;
//! - a first line naming columns `traceid` and `rpcid`: Alibaba CSV;
//! - bytes that are not text: OTLP protobuf;
//! - anything else: [`Error::UnknownFormat`].

use super::{Config, Error, Format, Skips, Trace, alibaba, jaeger, otlp};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// How much of the input is looked at to detect its format.
const PEEK: usize = 64 << 10;

/// Read the trace file at `path` in `format` (detected from its content when `None`), calling
/// `sink` for each trace and counting skipped records in `skips`.
pub fn read_path(
    path: &Path,
    format: Option<Format>,
    config: &Config,
    skips: &mut Skips,
    sink: &mut dyn FnMut(Trace),
) -> Result<(), Error> {
    let origin = path.display().to_string();
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut file = BufReader::with_capacity(PEEK, File::open(path).map_err(io)?);
    let gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> =
        if gzip { Box::new(BufReader::with_capacity(PEEK, MultiGzDecoder::new(file))) } else { Box::new(file) };
    let format = match format {
        Some(f) => f,
        None => detect(peek(&mut reader).map_err(io)?).ok_or_else(|| Error::UnknownFormat { path: path.to_owned() })?,
    };
    match format {
        Format::Jaeger => jaeger::read(reader, &origin, config, skips, sink),
        Format::Otlp => otlp::read(reader, &origin, config, skips, sink),
        Format::Alibaba => alibaba::read(reader, &origin, config, skips, sink),
    }
}

/// The first bytes of `reader` (fewer only at end of input), without consuming them.
fn peek(reader: &mut Box<dyn BufRead>) -> std::io::Result<&[u8]> {
    // A gzip decoder may hand out a few bytes at a time: collect up to PEEK by re-buffering.
    let first = reader.fill_buf()?.len();
    if first >= 64 || first == 0 {
        return reader.fill_buf();
    }
    let mut head = Vec::with_capacity(PEEK);
    reader.by_ref().take(PEEK as u64).read_to_end(&mut head)?;
    let rest = std::mem::replace(reader, Box::new(std::io::empty()));
    *reader = Box::new(BufReader::new(std::io::Cursor::new(head).chain(rest)));
    reader.fill_buf()
}

/// The format of an input starting with `head`, if it can be told.
pub fn detect(head: &[u8]) -> Option<Format> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = head.trim_ascii_start();
    match text.first()? {
        b'[' => return Some(Format::Jaeger),
        b'{' => return detect_json(text),
        _ => {}
    }
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let header = String::from_utf8_lossy(first_line).to_ascii_lowercase();
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    if columns.contains(&"traceid") && columns.contains(&"rpcid") {
        return Some(Format::Alibaba);
    }
    let binary = std::str::from_utf8(head).is_err()
        || head.iter().any(|&b| b < 0x20 && !b.is_ascii_whitespace())
        || head.first() == Some(&0x0a);
    binary.then_some(Format::Otlp)
}

/// Which known key comes first in a JSON object's text.
fn detect_json(text: &[u8]) -> Option<Format> {
    const KEYS: [(&[u8], Format); 6] = [
        (b"\"data\"", Format::Jaeger),
        (b"\"traceID\"", Format::Jaeger),
        (b"\"spans\"", Format::Jaeger),
        (b"\"resourceSpans\"", Format::Otlp),
        (b"\"resource_spans\"", Format::Otlp),
        (b"\"result\"", Format::Otlp),
    ];
    let position = |key: &[u8]| text.windows(key.len()).position(|w| w == key);
    KEYS.iter().filter_map(|(key, format)| position(key).map(|p| (p, *format))).min_by_key(|(p, _)| *p).map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Reason, Span};
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn traces() -> Vec<Trace> {
        let span = |id: u64, parent: Option<u64>, service: &str| Span {
            id,
            parent: parent.map(|id| crate::trace::Parent { id, kind: crate::trace::RefKind::ChildOf }),
            service: service.into(),
            start_us: 1_000 + id as i64,
            duration_us: 100 - id as i64,
            container: Some(format!("{service}-0")),
            tags: Vec::new(),
        };
        vec![Trace { id: "0000000000000abc".into(), spans: vec![span(1, None, "a"), span(2, Some(1), "b")] }]
    }

    /// A file in `dir` (removed with it when the test ends).
    fn temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn read(path: &Path, format: Option<Format>) -> (Result<(), Error>, Vec<Trace>, Skips) {
        let mut skips = Skips::default();
        let mut out = Vec::new();
        let result = read_path(path, format, &Config::default(), &mut skips, &mut |t| out.push(t));
        (result, out, skips)
    }

    #[test]
    fn detects_every_format_plain_and_gzipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let traces = traces();
        let mut jaeger = Vec::new();
        jaeger::write(&mut jaeger, &traces).expect("write");
        let mut otlp_json = Vec::new();
        otlp::write_json(&mut otlp_json, &traces).expect("write");
        let otlp_protobuf = otlp::encode_protobuf(&traces);
        let alibaba = b",traceid,timestamp,rpcid,um,rpctype,dm,interface,rt\n0,abc,1,0,USER,http,a,/,1\n".to_vec();
        let v3 = [&b"{\"result\":"[..], &otlp_json, b"}"].concat();
        let cases = [
            ("jaeger.json", jaeger, Format::Jaeger),
            ("otlp.json", otlp_json, Format::Otlp),
            ("v3.json", v3, Format::Otlp),
            ("otlp.pb", otlp_protobuf, Format::Otlp),
            ("calls.csv", alibaba, Format::Alibaba),
        ];
        for (name, bytes, format) in cases {
            assert_eq!(detect(&bytes), Some(format), "{name}");
            for (file, content) in [(name.to_owned(), bytes.clone()), (format!("{name}.gz"), gzip(&bytes))] {
                let (result, out, skips) = read(&temp(&dir, &file, &content), None);
                assert!(result.is_ok(), "{file}: {result:?}");
                assert_eq!(skips.total(), 0, "{file}: {skips:?}");
                if format == Format::Alibaba {
                    assert_eq!(out.len(), 1, "{file}");
                } else {
                    assert_eq!(out, traces, "{file}");
                }
            }
        }
    }

    #[test]
    fn detection_edge_cases() {
        assert_eq!(detect(b"  \n{\"total\": 0, \"data\": []}"), Some(Format::Jaeger));
        assert_eq!(detect(b"{\"spans\": [], \"traceID\": \"1\"}"), Some(Format::Jaeger));
        assert_eq!(detect(b"{\"x\": 1}"), None);
        assert_eq!(detect(b"hello, world\n"), None);
        assert_eq!(detect(b"TraceId,Timestamp,RpcId\n"), Some(Format::Alibaba));
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"\x0a\x80\x01"), Some(Format::Otlp));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = Path::new("/nonexistent/derm/traces.json");
        match read(missing, None).0 {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
        let path = temp(&dir, "unknown.txt", b"just some text\n");
        match read(&path, None).0 {
            Err(e @ Error::UnknownFormat { .. }) => assert!(e.to_string().contains("unknown.txt")),
            other => panic!("{other:?}"),
        }
        let path = temp(&dir, "empty.json", b"");
        assert!(matches!(read(&path, None).0, Err(Error::UnknownFormat { .. })));
        let path = temp(&dir, "bad.json", b"not json");
        match read(&path, Some(Format::Jaeger)).0 {
            Err(Error::Format { path: p, line: 1, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cut_gzip_stream_counts_as_truncated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut jaeger = Vec::new();
        let many: Vec<Trace> = (1..=50u64).map(|i| Trace { id: format!("{i:x}"), ..traces().swap_remove(0) }).collect();
        jaeger::write(&mut jaeger, &many).expect("write");
        let gz = gzip(&jaeger);
        let path = temp(&dir, "cut.json.gz", &gz[..gz.len() / 2]);
        let (result, out, skips) = read(&path, None);
        assert!(result.is_ok(), "{result:?}");
        assert!(!out.is_empty() && out.len() < 50, "{}", out.len());
        assert_eq!(skips.count(Reason::Truncated), 1, "{skips:?}");
    }
}
