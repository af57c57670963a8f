//! Property tests: every decoder and the tree builder take arbitrary bytes, mutated valid
//! documents and arbitrary span sets without panicking, and what they produce is sane.

use derm_core::trace::{
    self, Assembler, Call, Config, Error, Format, Parent, RefKind, Request, Skips, Span, Trace, alibaba, jaeger, otlp,
    tree,
};
use proptest::prelude::*;
use serde_json::Value;

fn config() -> Config {
    Config { arg_tags: vec!["distance".into(), "interface".into()], flush_after_us: 0 }
}

/// Invariants of a built request, checked without recursion.
fn check_request(req: &Request, spans: usize) {
    let mut stack = vec![&req.root];
    let mut calls = 0;
    while let Some(call) = stack.pop() {
        calls += 1;
        assert!(call.duration_us >= 0);
        assert!((0..=call.duration_us).contains(&call.exclusive_us), "{call:?}");
        let mut previous_start = i64::MIN;
        for stage in &call.stages {
            assert!(!stage.is_empty());
            let first = stage.iter().map(|c| c.start_us).min().unwrap_or_default();
            assert!(first >= previous_start, "stages in start order");
            previous_start = first;
            stack.extend(stage.iter());
        }
    }
    assert!(calls <= spans, "{calls} calls from {spans} spans");
    if let Some(p) = req.sampling {
        assert!(p > 0.0 && p <= 1.0);
    }
    assert!(req.tags.iter().all(|(k, _)| !k.starts_with("sampler.")));
}

/// Build trees from decoded traces and check them.
fn trees(traces: Vec<Trace>) {
    let mut skips = Skips::default();
    for t in traces {
        let spans = t.spans.len();
        if let Some(req) = tree::build(t, &mut skips) {
            check_request(&req, spans);
        }
    }
}

/// Run a decoder; a fatal error is allowed (it must be a format or I/O error, not a panic).
fn run(decode: impl FnOnce(&mut Skips, &mut dyn FnMut(Trace)) -> Result<(), Error>) {
    let mut skips = Skips::default();
    let mut out = Vec::new();
    let result = decode(&mut skips, &mut |t| out.push(t));
    if let Err(e) = &result {
        assert!(matches!(e, Error::Format { .. } | Error::Io { .. }), "{e}");
        assert!(!e.to_string().is_empty());
    }
    trees(out);
}

fn all_decoders(bytes: &[u8]) {
    let c = config();
    run(|s, sink| jaeger::read(bytes, "fuzz", &c, s, sink));
    run(|s, sink| jaeger::decode(bytes, "fuzz", &c, s, sink));
    run(|s, sink| otlp::read(bytes, "fuzz", &c, s, sink));
    run(|s, sink| {
        let mut assembler = Assembler::new(c.flush_after_us);
        otlp::decode_json(bytes, "fuzz", &c, &mut assembler, s, sink)?;
        assembler.finish(&mut |id, spans| sink(Trace { id, spans }));
        Ok(())
    });
    run(|s, sink| {
        let mut assembler = Assembler::new(c.flush_after_us);
        otlp::decode_protobuf(bytes, "fuzz", &c, &mut assembler, s, sink)?;
        assembler.finish(&mut |id, spans| sink(Trace { id, spans }));
        Ok(())
    });
    run(|s, sink| alibaba::read(bytes, "fuzz", &c, s, sink));
    let _ = trace::input::detect(bytes);
}

fn sample_traces() -> Vec<Trace> {
    let span = |id: u64, parent: Option<(u64, RefKind)>, service: &str, start: i64, duration: i64| Span {
        id,
        parent: parent.map(|(id, kind)| Parent { id, kind }),
        service: service.into(),
        start_us: start,
        duration_us: duration,
        container: Some(format!("{service}-1")),
        tags: if parent.is_none() {
            vec![
                ("distance".into(), "3".into()),
                ("sampler.type".into(), "probabilistic".into()),
                ("sampler.param".into(), "0.5".into()),
            ]
        } else {
            Vec::new()
        },
    };
    vec![
        Trace {
            id: "5b8efff798038103d269b633813fc60c".into(),
            spans: vec![
                span(1, None, "front", 1_000, 500),
                span(2, Some((1, RefKind::ChildOf)), "a", 1_010, 100),
                span(3, Some((1, RefKind::ChildOf)), "b", 1_050, 100),
                span(4, Some((2, RefKind::FollowsFrom)), "c", 1_200, 100),
                span(5, Some((3, RefKind::ChildOf)), "b", 1_060, 20),
            ],
        },
        Trace { id: "00000000000000ff".into(), spans: vec![span(9, None, "front", 3_000, 5)] },
    ]
}

fn jaeger_doc() -> Vec<u8> {
    let mut out = Vec::new();
    jaeger::write(&mut out, &sample_traces()).expect("write");
    out
}

fn otlp_json_doc() -> Vec<u8> {
    let mut out = Vec::new();
    otlp::write_json(&mut out, &sample_traces()).expect("write");
    out
}

const ALIBABA: &str = "\
,traceid,timestamp,rpcid,um,rpctype,dm,interface,rt
0,T1,1000,0,USER,http,MS_A,/home,20
1,T1,1001,0.1,MS_A,rpc,MS_B,getB,5
2,T2,1001,0,UNKNOWN,http,MS_X,/x,3
3,T1,1002,0.1,MS_A,rpc,MS_B,getB,-4
4,T1,1003,0.1.1,MS_B,db,MS_D,q,0
5,T2,1002,0.1,MS_X,mc,NAN,get,-1
";

/// Byte-level mutations: (position, kind, byte).
fn mutate(mut doc: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, kind, byte) in edits {
        if doc.is_empty() {
            break;
        }
        let at = pos % doc.len();
        match kind % 4 {
            0 => doc[at] = byte,
            1 => {
                doc.remove(at);
            }
            2 => doc.insert(at, byte),
            _ => doc.truncate(at),
        }
    }
    doc
}

/// Replace the `n`th JSON node (pre-order) with `replacement`.
fn replace_node(value: &mut Value, n: &mut usize, replacement: &Value) -> bool {
    if *n == 0 {
        *value = replacement.clone();
        return true;
    }
    *n -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| replace_node(v, n, replacement)),
        Value::Object(map) => map.values_mut().any(|v| replace_node(v, n, replacement)),
        _ => false,
    }
}

fn weird_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(-1.5)),
        Just(Value::from("18446744073709551616")),
        Just(Value::from("-9223372036854775809")),
        Just(Value::from("")),
        Just(Value::from("zz")),
        Just(Value::from("AAAAAAAAAAAAAAAAAAAAAA==")),
        "[a-f0-9]{0,40}".prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"refType": "CHILD_OF", "spanID": "1"}])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trace_decoders_take_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_decoders(&bytes);
    }

    #[test]
    fn trace_decoders_take_arbitrary_text(text in "[\\[\\]{}\",:0-9a-zA-Z. \n-]{0,300}") {
        all_decoders(text.as_bytes());
    }

    #[test]
    fn trace_decoders_take_byte_mutations(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let doc = match which {
            0 => jaeger_doc(),
            1 => otlp_json_doc(),
            2 => otlp::encode_protobuf(&sample_traces()),
            _ => ALIBABA.as_bytes().to_vec(),
        };
        all_decoders(&mutate(doc, &edits));
    }

    #[test]
    fn trace_decoders_take_json_mutations(
        otlp_doc in any::<bool>(),
        nodes in proptest::collection::vec((0usize..400, weird_value()), 1..4),
    ) {
        let doc = if otlp_doc { otlp_json_doc() } else { jaeger_doc() };
        let mut value: Value = serde_json::from_slice(&doc).expect("valid JSON");
        for (n, replacement) in &nodes {
            replace_node(&mut value, &mut n.clone(), replacement);
        }
        let bytes = serde_json::to_vec(&value).expect("serialize");
        all_decoders(&bytes);
    }

    #[test]
    fn trace_tree_takes_arbitrary_span_sets(
        spans in proptest::collection::vec(
            (0u64..12, proptest::option::of((0u64..14, any::<bool>())), 0usize..4, -5i64..200, -2i64..100),
            0..40,
        ),
    ) {
        let spans: Vec<Span> = spans
            .into_iter()
            .map(|(id, parent, service, start, duration)| Span {
                id,
                parent: parent.map(|(id, follows)| Parent {
                    id,
                    kind: if follows { RefKind::FollowsFrom } else { RefKind::ChildOf },
                }),
                service: ["a", "b", "c", "d"][service].into(),
                start_us: start,
                duration_us: duration,
                container: None,
                tags: vec![("sampler.type".into(), "const".into()), ("sampler.param".into(), "1".into())],
            })
            .collect();
        let n = spans.len();
        let mut skips = Skips::default();
        if let Some(req) = tree::build(Trace { id: "p".into(), spans }, &mut skips) {
            check_request(&req, n);
            prop_assert_eq!(req.sampling, Some(1.0));
        } else {
            prop_assert!(skips.total() >= 1, "a skipped trace is counted");
        }
    }
}

#[test]
fn trace_samples_decode_cleanly() {
    let c = config();
    for (format, bytes) in [
        (Format::Jaeger, jaeger_doc()),
        (Format::Otlp, otlp_json_doc()),
        (Format::Otlp, otlp::encode_protobuf(&sample_traces())),
        (Format::Alibaba, ALIBABA.as_bytes().to_vec()),
    ] {
        assert_eq!(trace::input::detect(&bytes), Some(format));
        let mut skips = Skips::default();
        let mut out = Vec::new();
        let sink = &mut |t| out.push(t);
        match format {
            Format::Jaeger => jaeger::read(&bytes[..], "doc", &c, &mut skips, sink),
            Format::Otlp => otlp::read(&bytes[..], "doc", &c, &mut skips, sink),
            Format::Alibaba => alibaba::read(&bytes[..], "doc", &c, &mut skips, sink),
        }
        .expect("decodes");
        assert_eq!(out.len(), 2, "{format}");
        let requests: Vec<Call> = out.into_iter().filter_map(|t| tree::build(t, &mut skips).map(|r| r.root)).collect();
        assert_eq!(requests.len(), 2, "{format}: {skips:?}");
    }
}
