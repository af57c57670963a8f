use super::*;
use crate::trace::tree;

const RESPONSE: &str = r#"{"data": [
 {"traceID": "00000000000000000000000000abcdef",
  "spans": [
   {"traceID": "abcdef", "spanID": "1", "operationName": "GET /", "references": [],
    "startTime": 1000, "duration": 500, "processID": "p1",
    "tags": [{"key": "distance", "type": "int64", "value": "3"},
             {"key": "http.method", "type": "string", "value": "GET"},
             {"key": "sampler.type", "type": "string", "value": "probabilistic"}],
    "logs": [{"timestamp": 1001, "fields": []}], "warnings": null},
   {"traceID": "abcdef", "spanID": "00000000000000a2", "operationName": "q",
    "references": [{"refType": "FOLLOWS_FROM", "traceID": "abcdef", "spanID": "b0"},
                   {"refType": "CHILD_OF", "traceID": "ffff", "spanID": "3"},
                   {"refType": "CHILD_OF", "traceID": "abcdef", "spanID": "0000000000000001"}],
    "startTime": "1100", "duration": "200", "processID": "p2", "tags": null},
   {"traceID": "abcdef", "spanID": "b0", "references": null, "parentSpanID": "1",
    "startTime": 1050, "duration": 10.0, "processID": "p3",
    "tags": [{"key": "distance", "type": "float64", "value": 2.5}, {"key": "flag", "type": "bool", "value": true}]},
   {"traceID": "abcdef", "spanID": "c0",
    "references": [{"refType": "FOLLOWS_FROM", "traceID": "abcdef", "spanID": "b0"}],
    "startTime": 1400, "duration": 300, "processID": "p3", "tags": []}
  ],
  "processes": {
   "p1": {"serviceName": "frontend", "tags": [{"key": "hostname", "type": "string", "value": "frontend-7d9"},
                                              {"key": "ip", "type": "string", "value": "10.0.0.1"},
                                              {"key": "sampler.param", "type": "float64", "value": 0.25}]},
   "p2": {"serviceName": "db", "tags": [{"key": "ip", "type": "int64", "value": 167772162}]},
   "p3": {"serviceName": "cache", "tags": null}
  },
  "warnings": null},
 {"traceID": "2", "spans": [{"spanID": "9", "startTime": 5, "duration": 1, "processID": "p1"}],
  "processes": {"p1": {"serviceName": "x"}}}
], "total": 2, "limit": 0, "offset": 0, "errors": null}"#;

fn config() -> Config {
    Config { arg_tags: vec!["distance".into(), "flag".into()], flush_after_us: 0 }
}

fn read_str(input: &str) -> (Result<(), Error>, Vec<Trace>, Skips) {
    let mut skips = Skips::default();
    let mut traces = Vec::new();
    let result = read(input.as_bytes(), "in.json", &config(), &mut skips, &mut |t| traces.push(t));
    // The streaming decoder (used past the in-memory limit) agrees with the in-memory one.
    let mut skips2 = Skips::default();
    let mut traces2 = Vec::new();
    let result2 = read_with_limit(input.as_bytes(), 0, "in.json", &config(), &mut skips2, &mut |t| traces2.push(t));
    assert_eq!(traces, traces2);
    assert_eq!(skips, skips2);
    assert_eq!(result.map_err(|e| e.to_string()), result2.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    (result2, traces, skips)
}

fn tags(span: &Span) -> Vec<(&str, &str)> {
    span.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn query_response_with_references_processes_and_tags() {
    let (result, traces, skips) = read_str(RESPONSE);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(skips.total(), 0, "{skips:?}");
    assert_eq!(traces.len(), 2);
    let t = &traces[0];
    assert_eq!(t.id, "0000000000abcdef");
    let [root, db, cache, follower] = &t.spans[..] else { panic!("4 spans: {t:?}") };

    assert_eq!((root.id, root.parent, root.service.as_str()), (1, None, "frontend"));
    assert_eq!((root.start_us, root.duration_us), (1000, 500));
    assert_eq!(root.container.as_deref(), Some("frontend-7d9"));
    // int64 as string kept; unkept tags dropped; sampler.param taken from the process.
    assert_eq!(tags(root), vec![("distance", "3"), ("sampler.type", "probabilistic"), ("sampler.param", "0.25")]);

    // First CHILD_OF wins over an earlier FOLLOWS_FROM; the reference into trace ffff is ignored.
    assert_eq!(db.id, 0xa2);
    assert_eq!(db.parent, Some(Parent { id: 1, kind: RefKind::ChildOf }));
    assert_eq!((db.start_us, db.duration_us), (1100, 200));
    assert_eq!(db.container.as_deref(), Some("167772162"), "ip tag of any type");
    assert!(db.tags.is_empty());

    // Legacy parentSpanID; float duration; tags of other types as strings; no container.
    assert_eq!(cache.parent, Some(Parent { id: 1, kind: RefKind::ChildOf }));
    assert_eq!(cache.duration_us, 10);
    assert_eq!(cache.container, None);
    assert_eq!(tags(cache), vec![("distance", "2.5"), ("flag", "true")]);

    assert_eq!(follower.parent, Some(Parent { id: 0xb0, kind: RefKind::FollowsFrom }));

    // The second trace's id is padded; its traceID came from the trace object.
    assert_eq!(traces[1].id, "0000000000000002");
    assert_eq!(traces[1].spans[0].service, "x");
}

#[test]
fn decoded_traces_build_trees() {
    let (_, traces, _) = read_str(RESPONSE);
    let mut skips = Skips::default();
    let req = tree::build(traces[0].clone(), &mut skips).expect("a tree");
    assert_eq!(req.root.service, "frontend");
    assert_eq!(req.root.stages.len(), 2, "{req:?}");
    assert_eq!(req.tags, vec![("distance".to_owned(), "3".to_owned())]);
    assert_eq!(req.sampling, Some(0.25));
}

#[test]
fn bare_trace_list_of_traces_and_several_documents() {
    let one = r#"{"traceID": "a1", "spans": [{"spanID": "1", "startTime": 1, "duration": 2, "processID": "p1"}],
                  "processes": {"p1": {"serviceName": "s"}}}"#;
    let (result, traces, skips) = read_str(one);
    assert!(result.is_ok() && skips.total() == 0, "{result:?} {skips:?}");
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].id, "00000000000000a1");

    // Keys in another order, and an embedded process instead of a processes map.
    let reordered = r#"{"spans": [{"spanID": "1", "startTime": 1, "duration": 2, "process": {"serviceName": "s"}}],
                        "traceID": "a1"}"#;
    let (_, traces, skips) = read_str(reordered);
    assert_eq!((traces.len(), skips.total()), (1, 0), "{skips:?}");

    let list = format!("[{one}, {one}]\n");
    let (_, traces, _) = read_str(&list);
    assert_eq!(traces.len(), 2);

    let appended = format!("{RESPONSE}\n{RESPONSE}\n");
    let (result, traces, skips) = read_str(&appended);
    assert!(result.is_ok());
    assert_eq!((traces.len(), skips.total()), (4, 0));

    let (result, traces, _) = read_str(r#"{"data": null, "errors": [{"code": 500, "msg": "x"}]}"#);
    assert!(result.is_ok());
    assert!(traces.is_empty());
}

#[test]
fn a_malformed_trace_is_skipped_and_the_rest_goes_on() {
    let input = r#"{"data": [
      {"traceID": "1", "spans": [{"spanID": "1", "startTime": true, "duration": 1, "processID": "p1"}], "processes": {}},
      {"traceID": "2", "spans": {"not": "a list"}},
      {"traceID": "zz", "spans": []},
      {"traceID": "3", "spans": [{"spanID": "xyz", "startTime": 1, "duration": 1, "processID": "p1"}]},
      {"traceID": "4", "spans": [{"spanID": "1", "startTime": 1, "duration": 1, "processID": "p1"}],
       "processes": {"p1": {"serviceName": "ok"}}},
      17,
      {"traceID": "5", "spans": [{"spanID": "1", "references": [{"refType": "CHILD_OF", "spanID": "q"}],
        "startTime": 1, "duration": 1, "processID": "p1"}], "processes": {"p1": {"serviceName": "ok"}}}
    ]}"#;
    let (result, traces, skips) = read_str(input);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["0000000000000004"]);
    assert_eq!(skips.count(Reason::Malformed), 6, "{skips:?}");
    assert!(skips.iter().all(|(_, _, ex)| ex.starts_with("in.json")));
}

#[test]
fn negative_or_huge_times_skip_the_whole_trace() {
    let trace = |start: &str, duration: &str| {
        format!(
            r#"{{"traceID": "1", "processes": {{"p1": {{"serviceName": "s"}}}}, "spans": [
              {{"spanID": "1", "startTime": 1, "duration": 5, "processID": "p1"}},
              {{"spanID": "2", "parentSpanID": "1", "startTime": {start}, "duration": {duration}, "processID": "p1"}}]}}"#
        )
    };
    for (start, duration) in [("2", "-1"), ("1e300", "1"), ("18446744073709551615", "1"), ("2", "\"-7\"")] {
        let (result, traces, skips) = read_str(&trace(start, duration));
        assert!(result.is_ok());
        assert!(traces.is_empty(), "{start} {duration}");
        assert_eq!(skips.count(Reason::BadTime), 1, "{start} {duration}: {skips:?}");
    }
    let (_, traces, skips) = read_str(&trace("\"3\"", "\"4\""));
    assert_eq!((traces.len(), skips.total()), (1, 0));
}

#[test]
fn missing_service_skips_the_trace() {
    let input = r#"{"data": [{"traceID": "1", "spans": [{"spanID": "1", "startTime": 1, "duration": 1, "processID": "p9"}],
                    "processes": {"p1": {"serviceName": "s"}}},
                   {"traceID": "2", "spans": [{"spanID": "1", "startTime": 1, "duration": 1, "processID": "p1"}],
                    "processes": {"p1": {"serviceName": ""}}}]}"#;
    let (_, traces, skips) = read_str(input);
    assert!(traces.is_empty());
    assert_eq!(skips.count(Reason::NoService), 2);
}

#[test]
fn truncated_input_keeps_the_traces_before_the_cut() {
    let cut = RESPONSE.find(r#"{"traceID": "2""#).map(|i| &RESPONSE[..i + 20]).unwrap_or(RESPONSE);
    let (result, traces, skips) = read_str(cut);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.len(), 1);
    assert_eq!(skips.count(Reason::Truncated), 1);
    let (_, _, example) = skips.iter().next().expect("one skip");
    assert!(example.starts_with("in.json:30:21: input ends early (1 traces read)"), "{example}");

    // Cut anywhere: never an error once the document has begun, never a panic.
    for end in 1..RESPONSE.len() {
        if !RESPONSE.is_char_boundary(end) {
            continue;
        }
        for limit in [0, json::IN_MEMORY_LIMIT] {
            let mut skips = Skips::default();
            let r = read_with_limit(&RESPONSE.as_bytes()[..end], limit, "in.json", &config(), &mut skips, &mut |_| {});
            assert!(r.is_ok(), "cut at {end}: {r:?}");
            assert_eq!(skips.count(Reason::Truncated), 1, "cut at {end}");
        }
    }
}

#[test]
fn not_json_is_a_format_error_with_position() {
    for (input, line, column) in [("hello", 1, 1), ("\n\n  <html>", 3, 3), ("42", 1, 2), (r#"{"foo": 1}"#, 1, 10)] {
        let (result, traces, _) = read_str(input);
        match result {
            Err(Error::Format { path, line: l, column: c, .. }) => {
                assert_eq!(path, std::path::PathBuf::from("in.json"));
                assert_eq!((l, c), (line, column), "{input}");
            }
            other => panic!("{input}: {other:?}"),
        }
        assert!(traces.is_empty());
    }
    let (result, _, _) = read_str("  \n");
    assert!(matches!(result, Err(Error::Format { .. })), "empty input: {result:?}");
    let message = read_str("hello").0.map_err(|e| e.to_string()).err().unwrap_or_default();
    assert!(message.starts_with("in.json:1:1: not Jaeger JSON input"), "{message}");
}

#[test]
fn invalid_json_after_traces_began_skips_the_rest() {
    let input = format!(
        "{}, garbage]}}",
        &RESPONSE[..RESPONSE
            .find(
                r#",
 {"traceID": "2""#
            )
            .unwrap_or(0)]
    );
    let (result, traces, skips) = read_str(&input);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.len(), 1);
    assert_eq!(skips.count(Reason::Malformed), 1, "{skips:?}");
}

fn synthetic() -> Vec<Trace> {
    let span = |id: u64, parent: Option<Parent>, service: &str, container: Option<&str>, start: i64| Span {
        id,
        parent,
        service: service.into(),
        start_us: start,
        duration_us: 100 - start,
        container: container.map(Into::into),
        tags: if parent.is_none() {
            vec![("distance".into(), "4".into()), ("sampler.type".into(), "const".into())]
        } else {
            Vec::new()
        },
    };
    vec![
        Trace {
            id: "0123456789abcdef0123456789abcdef".into(),
            spans: vec![
                span(u64::MAX, None, "front", Some("front-1"), 1),
                span(2, Some(Parent { id: u64::MAX, kind: RefKind::ChildOf }), "b", Some("b-1"), 5),
                span(3, Some(Parent { id: u64::MAX, kind: RefKind::FollowsFrom }), "b", Some("b-2"), 7),
                span(4, Some(Parent { id: 2, kind: RefKind::ChildOf }), "c \"quoted\" é", None, 9),
            ],
        },
        Trace { id: "00000000000000ff".into(), spans: vec![span(1, None, "front", Some("front-1"), 1)] },
    ]
}

#[test]
fn write_then_read_round_trips() {
    let traces = synthetic();
    let mut out = Vec::new();
    write(&mut out, &traces).expect("write to memory");
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.starts_with(r#"{"data":[{"traceID":"0123456789abcdef0123456789abcdef""#), "{text}");
    let (result, back, skips) = read_str(&text);
    assert!(result.is_ok());
    assert_eq!(skips.total(), 0);
    assert_eq!(back, traces);
}

#[test]
fn writer_hashes_ids_that_are_not_hex() {
    let mut traces = synthetic();
    traces.truncate(1);
    traces[0].id = "alibaba-trace-1".into();
    let mut out = Vec::new();
    write(&mut out, &traces).expect("write to memory");
    let (_, back, _) = read_str(std::str::from_utf8(&out).unwrap_or_default());
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].id, ids::wire_trace_id("alibaba-trace-1").trace_hex());
    assert_eq!(back[0].spans, traces[0].spans);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..Default::default()
    })]

    /// The streaming decoder and the in-memory one agree on damaged input too.
    #[test]
    fn streaming_and_in_memory_agree(
        edits in proptest::collection::vec((0usize..RESPONSE.len(), 0u8..4, 0u8..0x80), 0..4),
    ) {
        let doc = RESPONSE.as_bytes().to_vec();
        let doc = json::damage::apply(doc, &edits);
        let (a, b) = json::damage::both_ways(|limit, skips, sink| {
            read_with_limit(&doc[..], limit, "in.json", &config(), skips, sink)
        });
        proptest::prop_assert_eq!(a.0, b.0);
        proptest::prop_assert_eq!(a.1, b.1);
        proptest::prop_assert_eq!(a.2, b.2);
    }
}
