use super::*;
use crate::trace::tree;

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

/// A plain request: one trace spread over two resources, a second trace in base64 ids.
const REQUEST: &str = r#"{"resourceSpans": [
 {"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "frontend"}},
    {"key": "host.name", "value": {"stringValue": "node-1"}},
    {"key": "k8s.pod.name", "value": {"stringValue": "frontend-6c9"}}]},
  "scopeSpans": [{"scope": {"name": "x"}, "spans": [
    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "parentSpanId": "",
     "name": "GET /", "kind": 2, "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
     "attributes": [{"key": "distance", "value": {"intValue": "3"}},
                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                    {"key": "vip", "value": {"boolValue": true}},
                    {"key": "other", "value": {"stringValue": "dropped"}}],
     "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000001"}],
     "status": {}},
    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0000000000000002", "parentSpanId": "eee19b7ec3c1b174",
     "startTimeUnixNano": 1544712660100000000, "endTimeUnixNano": 1544712660200000000}]}]},
 {"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "backend"}},
    {"key": "host.name", "value": {"stringValue": "node-2"}},
    {"key": "service.instance.id", "value": {"stringValue": "backend-1"}}]},
  "scopeSpans": [{"spans": [
    {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0000000000000003", "parentSpanId": "0000000000000002",
     "startTimeUnixNano": "1544712660110000000", "endTimeUnixNano": "1544712660190000999"},
    {"traceId": "W47/95gDgQPSabYzgT/GAA==", "spanId": "7uGbfsPBsXQ=",
     "startTimeUnixNano": "1544712670000000000", "endTimeUnixNano": "1544712670000001000",
     "attributes": [{"key": "distance", "value": {"intValue": 5}}]}]}]}
]}"#;

fn config() -> Config {
    Config { arg_tags: vec!["distance".into(), "ratio".into(), "vip".into()], flush_after_us: 0 }
}

/// Read through the in-memory path and the streaming path; they must agree.
fn read_bytes(input: &[u8]) -> (Result<(), Error>, Vec<Trace>, Skips) {
    let run = |limit: usize| {
        let mut skips = Skips::default();
        let mut traces = Vec::new();
        let result = read_with_limit(input, limit, "in.otlp", &config(), &mut skips, &mut |t| traces.push(t));
        (result, traces, skips)
    };
    let (result, traces, skips) = run(json::IN_MEMORY_LIMIT);
    let (result2, traces2, skips2) = run(0);
    assert_eq!(traces, traces2);
    assert_eq!(skips, skips2);
    assert_eq!(result.as_ref().map_err(ToString::to_string), result2.as_ref().map_err(ToString::to_string));
    (result, traces, skips)
}

fn by_id(traces: &[Trace], id: &str) -> Trace {
    traces.iter().find(|t| t.id == id).cloned().unwrap_or_else(|| panic!("no trace {id} in {traces:?}"))
}

#[test]
fn plain_request_spread_over_resources() {
    let (result, traces, skips) = read_bytes(REQUEST.as_bytes());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(skips.total(), 0, "{skips:?}");
    assert_eq!(traces.len(), 2);
    let t = by_id(&traces, TRACE);
    let [root, client, server] = &t.spans[..] else { panic!("3 spans: {t:?}") };
    assert_eq!((root.id, root.parent), (0xeee1_9b7e_c3c1_b174, None));
    assert_eq!((root.service.as_str(), root.container.as_deref()), ("frontend", Some("frontend-6c9")));
    assert_eq!((root.start_us, root.duration_us), (1_544_712_660_000_000, 1_000_000));
    let tags: Vec<(&str, &str)> = root.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(tags, vec![("distance", "3"), ("ratio", "0.5"), ("vip", "true")]);
    assert_eq!(client.parent, Some(Parent { id: root.id, kind: RefKind::ChildOf }));
    assert_eq!((server.service.as_str(), server.container.as_deref()), ("backend", Some("backend-1")));
    // Nanoseconds round down: 80,000,999 ns after 110 ms is 80,000 us.
    assert_eq!(server.duration_us, 80_000);

    // Base64 ids (16 and 8 bytes) decode to the same forms as hex ones.
    let b = by_id(&traces, "5b8efff798038103d269b633813fc600");
    assert_eq!(b.spans[0].id, 0xeee1_9b7e_c3c1_b174);
    assert_eq!(b.spans[0].tags, vec![("distance".to_owned(), "5".to_owned())]);

    let mut tree_skips = Skips::default();
    let req = tree::build(t, &mut tree_skips).expect("a tree");
    assert_eq!(req.root.stages.len(), 1);
    assert_eq!(req.root.stages[0][0].service, "backend", "the client span folds into frontend");
}

#[test]
fn api_v3_wrapper_legacy_names_and_empty_requests() {
    let v3 = format!(r#"{{"result": {REQUEST}}}"#);
    let (result, traces, _) = read_bytes(v3.as_bytes());
    assert!(result.is_ok());
    assert_eq!(traces.len(), 2);

    let legacy = REQUEST
        .replace("\"scopeSpans\"", "\"instrumentationLibrarySpans\"")
        .replace("\"resourceSpans\"", "\"resource_spans\"");
    let (_, traces2, _) = read_bytes(legacy.as_bytes());
    assert_eq!(traces, traces2);

    for empty in ["", "  \n", "{}", r#"{"resourceSpans": []}"#, r#"{"result": {}}"#, r#"{"error": {"httpCode": 404}}"#]
    {
        let (result, traces, skips) = read_bytes(empty.as_bytes());
        assert!(result.is_ok(), "{empty:?}: {result:?}");
        assert!(traces.is_empty() && skips.total() == 0, "{empty:?}");
    }
}

#[test]
fn json_lines_assemble_traces_and_skip_bad_lines() {
    let line = |span: &str, parent: &str, start_ms: u64| {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"s{span}"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{TRACE}","spanId":"000000000000000{span}","parentSpanId":"{parent}","startTimeUnixNano":"{}","endTimeUnixNano":"{}"}}]}}]}}]}}"#,
            start_ms * 1_000_000,
            (start_ms + 1) * 1_000_000
        )
    };
    let lines = [
        line("1", "", 0),
        line("2", "0000000000000001", 0),
        r#"{"resourceSpans": [{"resource": oops}]}"#.to_owned(),
        line("3", "0000000000000002", 0),
    ];
    let input = lines.join("\n") + "\n";
    let (result, traces, skips) = read_bytes(input.as_bytes());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].spans.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(skips.count(Reason::Malformed), 1, "{skips:?}");
    let example = skips.iter().next().map(|(_, _, ex)| ex.to_owned()).unwrap_or_default();
    assert!(example.starts_with("in.otlp:3:"), "{example}");

    // A last line cut short keeps the spans before it.
    let cut = &input[..input.len() - 30];
    let (result, traces, skips) = read_bytes(cut.as_bytes());
    assert!(result.is_ok());
    assert_eq!(traces[0].spans.len(), 2);
    assert_eq!((skips.count(Reason::Truncated), skips.count(Reason::Malformed)), (1, 1), "{skips:?}");
}

#[test]
fn traces_are_emitted_as_the_clock_passes_them() {
    let config = Config { flush_after_us: 1_000, ..config() };
    let traces: Vec<Trace> = (0..5u64)
        .map(|i| Trace { id: format!("{:032x}", i + 1), spans: vec![span(1, None, "a", 10_000 * i as i64, 10)] })
        .collect();
    let bytes = encode_protobuf(&traces);
    let mut assembler = Assembler::new(config.flush_after_us);
    let mut out = Vec::new();
    let mut skips = Skips::default();
    decode_protobuf(&bytes, "body", &config, &mut assembler, &mut skips, &mut |t| out.push(t.id)).expect("decodes");
    // All but the last are complete once a later span moved the clock 1 ms past them.
    assert_eq!(out.len(), 4);
    assert_eq!(assembler.open_traces(), 1);
    assembler.finish(&mut |id, _| out.push(id));
    let expected: Vec<String> = traces.iter().filter_map(|t| ids::hex_trace_id(&t.id)).collect();
    assert_eq!(out, expected);
}

#[test]
fn bodies_share_an_assembler() {
    let traces =
        vec![Trace { id: TRACE.into(), spans: vec![span(1, None, "a", 0, 100), span(2, Some(1), "b", 10, 50)] }];
    let mut first = traces.clone();
    let second = first[0].spans.split_off(1);
    let mut assembler = Assembler::new(0);
    let mut skips = Skips::default();
    let mut out = Vec::new();
    let body1 = encode_protobuf(&first);
    let mut body2 = Vec::new();
    write_json(&mut body2, &[Trace { id: TRACE.into(), spans: second }]).expect("write");
    decode_protobuf(&body1, "b1", &config(), &mut assembler, &mut skips, &mut |t| out.push(t)).expect("decodes");
    decode_json(&body2, "b2", &config(), &mut assembler, &mut skips, &mut |t| out.push(t)).expect("decodes");
    assert!(out.is_empty());
    assembler.finish(&mut |id, spans| out.push(Trace { id, spans }));
    assert_eq!(out, traces);
}

#[test]
fn bad_spans_drop_their_trace() {
    let request = |resource: &str, span: &str| {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{resource}]}},"scopeSpans":[{{"spans":[{span},
            {{"traceId":"{TRACE}","spanId":"0000000000000009","startTimeUnixNano":"5","endTimeUnixNano":"6"}}]}}]}}]}}"#
        )
    };
    let service = r#"{"key":"service.name","value":{"stringValue":"s"}}"#;
    let ok =
        format!(r#"{{"traceId":"{TRACE}","spanId":"0000000000000001","startTimeUnixNano":"1","endTimeUnixNano":"2"}}"#);
    let cases = [
        (request("", &ok), Reason::NoService),
        (request(service, &ok.replace("\"2\"", "\"0\"")), Reason::BadTime),
        (request(service, &ok.replace("\"2\"", "1e300")), Reason::BadTime),
        (request(service, &ok.replace("\"2\"", "\"99999999999999999999\"")), Reason::BadTime),
        (request(service, &ok.replace("0000000000000001", "zz")), Reason::Malformed),
        (request(service, &ok.replace("\"spanId\"", "\"parentSpanId\":\"q\",\"spanId\"")), Reason::Malformed),
    ];
    for (input, reason) in cases {
        let (result, traces, skips) = read_bytes(input.as_bytes());
        assert!(result.is_ok(), "{result:?}");
        assert!(traces.is_empty(), "{input}: {traces:?}");
        assert_eq!((skips.count(reason), skips.total()), (1, 1), "{input}: {skips:?}");
    }
    // A span whose trace id cannot be read is dropped alone.
    let bad_trace = request(service, &ok.replace(TRACE, "not-an-id"));
    let (_, traces, skips) = read_bytes(bad_trace.as_bytes());
    assert_eq!((traces.len(), skips.count(Reason::Malformed)), (1, 1));
    // Wrong types inside an element skip that element only.
    let wrong = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"spanId":7}}]}}]}}, {}]}}"#,
        &REQUEST[REQUEST.find("{\"resource\"").unwrap_or(0)..REQUEST.rfind(']').unwrap_or(0)]
    );
    let (result, traces, skips) = read_bytes(wrong.as_bytes());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!((traces.len(), skips.count(Reason::Malformed)), (2, 1), "{skips:?}");
}

#[test]
fn not_otlp_is_a_format_error() {
    for input in [&b"hello world"[..], b"{\"data\": []}", b"\x0a\xff\xff\xff\xff\xff\xff", b"\x0a\x05abc"] {
        let (result, _, _) = read_bytes(input);
        assert!(matches!(result, Err(Error::Format { .. })), "{input:?}: {result:?}");
    }
    let mut assembler = Assembler::new(0);
    let mut skips = Skips::default();
    let result = decode_json(b"[1, 2]", "body", &config(), &mut assembler, &mut skips, &mut |_| {});
    assert!(matches!(result, Err(Error::Format { line: 1, .. })), "{result:?}");
}

fn span(id: u64, parent: Option<u64>, service: &str, start: i64, duration: i64) -> Span {
    Span {
        id,
        parent: parent.map(|id| Parent { id, kind: RefKind::ChildOf }),
        service: service.into(),
        start_us: start,
        duration_us: duration,
        container: Some(format!("{service}-0")),
        tags: if parent.is_none() { vec![("distance".into(), "2".into())] } else { Vec::new() },
    }
}

fn synthetic() -> Vec<Trace> {
    vec![
        Trace {
            id: TRACE.into(),
            spans: vec![
                span(u64::MAX, None, "front", 1_700_000_000_000_000, 900),
                span(2, Some(u64::MAX), "b", 1_700_000_000_000_010, 500),
                Span { container: None, ..span(3, Some(2), "c é \"q\"", 1_700_000_000_000_020, 0) },
            ],
        },
        Trace { id: "00000000000000ff".into(), spans: vec![span(1, None, "front", 5, 6)] },
    ]
}

#[test]
fn protobuf_and_json_round_trip() {
    let mut traces = synthetic();
    // Emitted in order of their last span end.
    traces.reverse();
    let (result, back, skips) = read_bytes(&encode_protobuf(&traces));
    assert!(result.is_ok() && skips.total() == 0, "{result:?} {skips:?}");
    assert_eq!(back, traces);

    let mut json = Vec::new();
    write_json(&mut json, &traces).expect("write");
    assert!(json.starts_with(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\""));
    let (result, back, skips) = read_bytes(&json);
    assert!(result.is_ok() && skips.total() == 0, "{result:?} {skips:?}");
    assert_eq!(back, traces);

    // JSON lines: the same request twice gives each span twice (the tree builder dedupes).
    let lines = [&json[..], b"\n", &json[..], b"\n"].concat();
    let (_, back, _) = read_bytes(&lines);
    assert_eq!(back.iter().map(|t| t.spans.len()).sum::<usize>(), 8);
}

#[test]
fn cut_protobuf_never_panics_and_keeps_complete_resources() {
    let bytes = encode_protobuf(&synthetic());
    for end in 0..bytes.len() {
        let (result, traces, skips) = read_bytes(&bytes[..end]);
        match result {
            Ok(()) => assert!(
                end <= 1 || skips.count(Reason::Truncated) + skips.count(Reason::Malformed) >= 1 || !traces.is_empty()
            ),
            Err(Error::Format { .. }) => assert!(traces.is_empty()),
            Err(e) => panic!("cut at {end}: {e}"),
        }
    }
}

#[test]
fn json_detection() {
    assert!(is_json(b"  {\"resourceSpans\": []}"));
    assert!(is_json(b"\xEF\xBB\xBF{}"));
    assert!(!is_json(b"\n{\n\x0a\x0cservice.name"));
    assert!(!is_json(b""));
    assert!(!is_json(b"[]"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..Default::default()
    })]

    /// The streaming decoder and the in-memory one agree on damaged JSON lines too (compact
    /// lines: in a pretty-printed document the two may resume at different lines).
    #[test]
    fn streaming_and_in_memory_agree(
        edits in proptest::collection::vec((0usize..4096, 0u8..4, 0u8..0x80), 0..4),
    ) {
        let mut json = Vec::new();
        write_json(&mut json, &synthetic()).expect("write");
        let compact = serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(REQUEST).expect("JSON")).expect("JSON");
        let doc = [&json[..], b"\n", &compact, b"\n", &json[..]].concat();
        let doc = json::damage::apply(doc, &edits);
        let (a, b) = json::damage::both_ways(|limit, skips, sink| {
            read_with_limit(&doc[..], limit, "in.otlp", &config(), skips, sink)
        });
        proptest::prop_assert_eq!(a.0, b.0);
        proptest::prop_assert_eq!(a.1, b.1);
        proptest::prop_assert_eq!(a.2, b.2);
    }
}
