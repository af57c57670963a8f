use super::*;
use crate::trace::tree;

/// Two traces interleaved by timestamp, each call on both sides, as in the dataset.
const CSV: &str = "\
,traceid,timestamp,rpcid,um,rpctype,dm,interface,rt
0,T1,1000,0,USER,http,MS_A,/home,20
1,T1,1001,0.1,MS_A,rpc,MS_B,getB,5
2,T2,1001,0,UNKNOWN,http,MS_X,/x,3
3,T1,1002,0.1,MS_A,rpc,MS_B,getB,-4
4,T1,1002,0.2,MS_A,rpc,MS_C,getC,6
5,T1,1003,0.1.1,MS_B,db,MS_D,q,0
6,T1,1002,0.2,MS_A,rpc,MS_C,getC,-5
7,T2,1002,0.1,MS_X,mc,NAN,get,-1
";

fn config() -> Config {
    Config { arg_tags: vec!["interface".into()], flush_after_us: 0 }
}

fn read_str(input: &[u8], config: &Config) -> (Result<(), Error>, Vec<Trace>, Skips) {
    let mut skips = Skips::default();
    let mut traces = Vec::new();
    let result = read(input, "MSCallGraph_0.csv", config, &mut skips, &mut |t| traces.push(t));
    (result, traces, skips)
}

fn find<'t>(traces: &'t [Trace], id: &str) -> &'t Trace {
    traces.iter().find(|t| t.id == id).unwrap_or_else(|| panic!("no trace {id}: {traces:?}"))
}

#[test]
fn rows_become_deduplicated_spans() {
    let (result, traces, skips) = read_str(CSV.as_bytes(), &config());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.len(), 2);
    let t1 = find(&traces, "T1");
    let spans: Vec<(u64, Option<u64>, &str, i64, i64)> = t1
        .spans
        .iter()
        .map(|s| (s.id, s.parent.map(|p| p.id), s.service.as_str(), s.start_us, s.duration_us))
        .collect();
    // rpcids sorted 0, 0.1, 0.1.1, 0.2 -> ids 1..4; caller-side rows (rt > 0) chosen.
    assert_eq!(
        spans,
        vec![
            (1, None, "MS_A", 1_000_000, 20_000),
            (2, Some(1), "MS_B", 1_001_000, 5_000),
            (3, Some(2), "MS_D", 1_003_000, 0),
            (4, Some(1), "MS_C", 1_002_000, 6_000),
        ]
    );
    assert!(t1.spans.iter().all(|s| s.container.is_none()));
    assert_eq!(t1.spans[0].tags, vec![("interface".to_owned(), "/home".to_owned())]);

    // T2's only call has no service name: dropped and counted.
    assert_eq!(find(&traces, "T2").spans.len(), 1);
    assert_eq!(skips.count(Reason::NoService), 1);
    let (_, _, example) = skips.iter().next().expect("a skip");
    assert_eq!(example, "MSCallGraph_0.csv:9: trace T2: rpcid 0.1: service \"NAN\"");

    let mut tree_skips = Skips::default();
    let req = tree::build(t1.clone(), &mut tree_skips).expect("a tree");
    let services: Vec<Vec<&str>> =
        req.root.stages.iter().map(|s| s.iter().map(|c| c.service.as_str()).collect()).collect();
    // B [1001, 1006] and C [1002, 1008] overlap: one parallel stage.
    assert_eq!(services, vec![vec!["MS_B", "MS_C"]]);
    assert_eq!(req.root.exclusive_us, 20_000 - 7_000);
}

#[test]
fn columns_by_name_without_index() {
    let csv = "rt,dm,rpcid,timestamp,traceid\n-3,MS_A,0,5,T\n";
    let (result, traces, _) = read_str(csv.as_bytes(), &config());
    assert!(result.is_ok());
    assert_eq!(traces[0].spans[0].service, "MS_A");
    assert_eq!(traces[0].spans[0].duration_us, 3_000, "callee side alone: |rt|");

    let (result, _, _) = read_str(b"traceid,timestamp,um,dm,rt\nT,1,USER,A,1\n", &config());
    let message = result.map_err(|e| e.to_string()).err().unwrap_or_default();
    assert!(message.starts_with("MSCallGraph_0.csv:1:1: not Alibaba CSV input: missing column `rpcid`"), "{message}");

    let (result, _, _) = read_str(b"", &config());
    assert!(matches!(result, Err(Error::Format { .. })), "{result:?}");
    let (result, traces, skips) = read_str(b",traceid,timestamp,rpcid,um,rpctype,dm,interface,rt\n", &config());
    assert!(result.is_ok() && traces.is_empty() && skips.total() == 0);
}

#[test]
fn missing_names_orphan_their_children() {
    let csv = "\
traceid,timestamp,rpcid,um,dm,rt
T,0,0,USER,A,10
T,1,0.1,A,(?),5
T,2,0.1.1,(?),C,1
T,1,0.2,A,,-2
T,1,0.2,A,B,2
";
    let (_, traces, skips) = read_str(csv.as_bytes(), &config());
    assert_eq!(skips.count(Reason::NoService), 1, "the twin row of 0.2 named B: {skips:?}");
    let mut tree_skips = Skips::default();
    assert!(tree::build(traces[0].clone(), &mut tree_skips).is_none());
    assert_eq!(tree_skips.count(Reason::Orphan), 1);
}

#[test]
fn the_shortest_rpcid_is_the_root_and_missing_parents_are_orphans() {
    let csv = "traceid,timestamp,rpcid,dm,rt\nT,0,0.1,A,10\nT,1,0.1.1,B,5\nT,2,0.1.2.1,C,1\n";
    let (_, traces, _) = read_str(csv.as_bytes(), &config());
    let t = &traces[0];
    assert_eq!(t.spans[0].parent, None);
    assert_eq!(t.spans[1].parent.map(|p| p.id), Some(t.spans[0].id));
    // 0.1.2 has no row: C's parent gets an id no span has.
    let c = t.spans[2].parent.map(|p| p.id).unwrap_or_default();
    assert!(t.spans.iter().all(|s| s.id != c));
    let mut tree_skips = Skips::default();
    assert!(tree::build(t.clone(), &mut tree_skips).is_none());
    assert_eq!(tree_skips.count(Reason::Orphan), 1);

    let two_roots = "traceid,timestamp,rpcid,dm,rt\nT,0,0.1,A,10\nT,1,0.2,B,5\n";
    let (_, traces, _) = read_str(two_roots.as_bytes(), &config());
    let mut tree_skips = Skips::default();
    assert!(tree::build(traces[0].clone(), &mut tree_skips).is_none());
    assert_eq!(tree_skips.count(Reason::MultipleRoots), 1);
}

#[test]
fn non_utf8_names_and_bad_numbers() {
    let mut csv = b"traceid,timestamp,rpcid,dm,rt\nT,0,0,A\xff\xfe,10\nT,0,0.1,B,1\n".to_vec();
    csv.extend_from_slice(b"U,1\xff,0,A,1\nU,1,0.1,B,1\nV,1,0,A,1e400\nW,1,0.x.,A,1\n,1,0,A,1\nX,1,0,A\n");
    let (result, traces, skips) = read_str(&csv, &config());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(traces.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["T"]);
    assert_eq!(traces[0].spans[0].service, "A\u{fffd}\u{fffd}");
    // U (bad timestamp), V (rt out of range), W (bad rpcid), the row without a traceid and
    // X (a short row).
    assert_eq!(skips.count(Reason::Malformed), 5, "{skips:?}");
    let examples: Vec<&str> = skips.iter().map(|(_, _, ex)| ex).collect();
    assert!(examples[0].starts_with("MSCallGraph_0.csv:4: trace U: unreadable timestamp"), "{examples:?}");
}

#[test]
fn traces_are_emitted_as_rows_move_on() {
    let mut csv = String::from("traceid,timestamp,rpcid,dm,rt\n");
    for i in 0..50 {
        csv.push_str(&format!("T{i},{},0,A,1\n", i * 1000));
    }
    let config = Config { flush_after_us: 2_000_000, ..config() };
    let mut seen_at = Vec::new();
    let mut skips = Skips::default();
    let mut n = 0;
    read(csv.as_bytes(), "x.csv", &config, &mut skips, &mut |t| {
        seen_at.push(t.id);
        n += 1;
    })
    .expect("reads");
    assert_eq!(n, 50);
    let expected: Vec<String> = (0..50).map(|i| format!("T{i}")).collect();
    assert_eq!(seen_at, expected);
}

#[test]
fn float_fields_and_zero_rt() {
    let csv = "traceid,timestamp,rpcid,dm,rt\nT,12.5,0,A,0\nT,13,0.1,B,-0.0\nT,13,0.1,B,2.25\n";
    let (_, traces, skips) = read_str(csv.as_bytes(), &config());
    assert_eq!(skips.total(), 0);
    let spans = &traces[0].spans;
    assert_eq!((spans[0].start_us, spans[0].duration_us), (12_500, 0));
    assert_eq!(spans[1].duration_us, 2_250, "the caller side wins over rt = 0");
}
