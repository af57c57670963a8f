use super::*;
use crate::trace::{Parent, Reason, RefKind, Span, Trace};

/// A trace fixture: `Fixture::new().span(..).child(..)...`.
struct Fixture(Trace);

impl Fixture {
    fn new() -> Self {
        Fixture(Trace { id: "t1".into(), spans: Vec::new() })
    }

    fn push(mut self, id: u64, parent: Option<Parent>, service: &str, start: i64, dur: i64) -> Self {
        self.0.spans.push(Span {
            id,
            parent,
            service: service.into(),
            start_us: start,
            duration_us: dur,
            container: Some(format!("{service}-pod")),
            tags: Vec::new(),
        });
        self
    }

    /// The root span.
    fn root(self, id: u64, service: &str, start: i64, dur: i64) -> Self {
        self.push(id, None, service, start, dur)
    }

    /// A CHILD_OF span.
    fn child(self, id: u64, parent: u64, service: &str, start: i64, dur: i64) -> Self {
        self.push(id, Some(Parent { id: parent, kind: RefKind::ChildOf }), service, start, dur)
    }

    /// A FOLLOWS_FROM span.
    fn follows(self, id: u64, parent: u64, service: &str, start: i64, dur: i64) -> Self {
        self.push(id, Some(Parent { id: parent, kind: RefKind::FollowsFrom }), service, start, dur)
    }

    /// A tag on the last span added.
    fn tag(mut self, key: &str, value: &str) -> Self {
        if let Some(s) = self.0.spans.last_mut() {
            s.tags.push((key.into(), value.into()));
        }
        self
    }

    fn build(self) -> (Option<Request>, Skips) {
        let mut skips = Skips::default();
        (build(self.0, &mut skips), skips)
    }

    fn request(self) -> Request {
        let (req, skips) = self.build();
        req.unwrap_or_else(|| panic!("no request: {skips:?}"))
    }

    fn skipped(self) -> Skips {
        let (req, skips) = self.build();
        assert!(req.is_none(), "expected a skip, got {req:?}");
        assert_eq!(skips.total(), 1, "one reason per skipped trace: {skips:?}");
        skips
    }
}

/// Services of each stage of a call.
fn shape(call: &Call) -> Vec<Vec<&str>> {
    call.stages.iter().map(|s| s.iter().map(|c| c.service.as_str()).collect()).collect()
}

#[test]
fn overlapping_calls_are_parallel_back_to_back_sequential() {
    let req = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "b", 10, 30) // [10, 40]
        .child(3, 1, "c", 20, 40) // [20, 60]: overlaps b
        .child(4, 1, "d", 60, 30) // [60, 90]: starts when c ends
        .request();
    assert_eq!(shape(&req.root), vec![vec!["b", "c"], vec!["d"]]);
    // Union of [10, 60] and [60, 90] is 80.
    assert_eq!(req.root.exclusive_us, 20);
    assert_eq!(req.root.container.as_deref(), Some("a-pod"));
    assert_eq!(req.trace_id, "t1");
}

#[test]
fn stage_ties_sort_by_end_and_children_order_does_not_matter() {
    let req = Fixture::new()
        .root(1, "a", 0, 100)
        .child(4, 1, "late", 50, 10)
        .child(3, 1, "long", 0, 40)
        .child(2, 1, "short", 0, 10)
        .request();
    assert_eq!(shape(&req.root), vec![vec!["short", "long"], vec!["late"]]);
}

#[test]
fn exclusive_time_subtracts_the_union_of_overlapping_children() {
    let req = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "b", 10, 40) // [10, 50]
        .child(3, 1, "c", 30, 40) // [30, 70]
        .request();
    // Union is [10, 70] = 60 (a sum would give 80 and exclusive 20).
    assert_eq!(req.root.exclusive_us, 40);
    let b = &req.root.stages[0][0];
    assert_eq!((b.service.as_str(), b.exclusive_us), ("b", 40));
}

#[test]
fn exclusive_time_is_never_negative() {
    let req = Fixture::new().root(1, "a", 0, 100).child(2, 1, "b", 0, 100).child(3, 1, "c", 0, 100).request();
    assert_eq!(req.root.exclusive_us, 0);
}

#[test]
fn clock_skew_is_counted_once_and_clipped() {
    let (req, skips) = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "b", -5, 50) // [-5, 45]: starts before its parent
        .child(3, 1, "c", 80, 40) // [80, 120]: ends after it
        .build();
    let req = req.expect("skew keeps the trace");
    assert_eq!(skips.count(Reason::ClockSkew), 1);
    assert!(skips.iter().any(|(_, _, ex)| ex.starts_with("trace t1: span")));
    // Clipped: [0, 45] and [80, 100] cover 65.
    assert_eq!(req.root.exclusive_us, 35);
}

#[test]
fn skew_within_tolerance_and_follows_from_are_not_skew() {
    let (req, skips) = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "b", -1, 101) // 1 us outside on both sides
        .follows(3, 1, "c", 90, 100) // async follower outliving its parent
        .build();
    assert!(req.is_some());
    assert_eq!(skips.count(Reason::ClockSkew), 0, "{skips:?}");
}

#[test]
fn follows_from_children_are_calls() {
    let req = Fixture::new().root(1, "a", 0, 100).follows(2, 1, "queue", 50, 200).request();
    assert_eq!(shape(&req.root), vec![vec!["queue"]]);
    assert_eq!(req.root.exclusive_us, 50);
}

#[test]
fn same_service_spans_fold_into_their_parent() {
    // a (server) -> a (client) -> b (server) -> b (internal) -> c
    let req = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "a", 10, 60)
        .child(3, 2, "b", 15, 50)
        .child(4, 3, "b", 20, 30)
        .child(5, 4, "c", 25, 10)
        .child(6, 1, "d", 80, 10)
        .request();
    assert_eq!(shape(&req.root), vec![vec!["b"], vec!["d"]]);
    assert_eq!(req.root.exclusive_us, 100 - 50 - 10);
    let b = &req.root.stages[0][0];
    assert_eq!((b.start_us, b.duration_us, b.exclusive_us), (15, 50, 40));
    assert_eq!(shape(b), vec![vec!["c"]]);
    assert_eq!(b.stages[0][0].start_us, 25, "children keep their own times");
}

#[test]
fn a_long_same_service_chain_folds_without_recursion() {
    let mut f = Fixture::new().root(1, "a", 0, 1_000_000);
    for i in 2..=100_000u64 {
        f = f.child(i, i - 1, "a", 1, 10);
    }
    let req = f.child(100_001, 100_000, "b", 1, 5).request();
    assert_eq!(shape(&req.root), vec![vec!["b"]]);
    assert_eq!(req.root.exclusive_us, 1_000_000 - 5);
}

#[test]
fn a_deep_chain_of_calls_is_skipped_not_overflowed() {
    let mut f = Fixture::new().root(1, "s0", 0, 1_000_000);
    for i in 2..=100_000u64 {
        f = f.child(i, i - 1, if i % 2 == 0 { "s1" } else { "s0" }, 1, 10);
    }
    let skips = f.skipped();
    assert_eq!(skips.count(Reason::Malformed), 1);
}

#[test]
fn a_chain_at_max_depth_is_built_and_safe_to_use() {
    let mut f = Fixture::new().root(1, "s0", 0, 1_000_000);
    for i in 1..=MAX_DEPTH as u64 {
        f = f.child(i + 1, i, if i % 2 == 0 { "s0" } else { "s1" }, 1, 10);
    }
    let req = f.request();
    let copy = req.clone();
    assert_eq!(copy, req);
    assert!(!format!("{copy:?}").is_empty());
    let mut depth = 0;
    let mut call = &req.root;
    while let Some(next) = call.stages.first().and_then(|s| s.first()) {
        depth += 1;
        call = next;
    }
    assert_eq!(depth, MAX_DEPTH);
}

#[test]
fn orphans_skip_the_trace() {
    let skips = Fixture::new().root(1, "a", 0, 100).child(2, 99, "b", 10, 10).skipped();
    assert_eq!(skips.count(Reason::Orphan), 1);
    assert!(skips.iter().all(|(_, _, ex)| ex.contains("parent 0000000000000063")));
}

#[test]
fn duplicates_keep_the_first_span() {
    let (req, skips) = Fixture::new()
        .root(1, "a", 0, 100)
        .child(2, 1, "b", 10, 10)
        .child(2, 1, "c", 50, 10)
        .child(2, 1, "d", 70, 10)
        .build();
    let req = req.expect("duplicates keep the trace");
    assert_eq!(skips.count(Reason::DuplicateSpan), 2);
    assert_eq!(shape(&req.root), vec![vec!["b"]]);
}

#[test]
fn cycles_and_missing_roots_skip_the_trace() {
    let skips = Fixture::new().root(1, "a", 0, 100).child(2, 3, "b", 0, 1).child(3, 2, "c", 0, 1).skipped();
    assert_eq!(skips.count(Reason::Cycle), 1);
    let skips = Fixture::new().root(1, "a", 0, 100).child(2, 2, "self", 0, 1).skipped();
    assert_eq!(skips.count(Reason::Cycle), 1);
    let skips = Fixture::new().child(2, 3, "b", 0, 1).child(3, 2, "c", 0, 1).skipped();
    assert_eq!(skips.count(Reason::NoRoot), 1);
    let skips = Fixture::new().root(1, "a", 0, 100).root(2, "b", 0, 100).skipped();
    assert_eq!(skips.count(Reason::MultipleRoots), 1);
    let skips = Fixture::new().skipped();
    assert_eq!(skips.count(Reason::NoRoot), 1);
}

#[test]
fn bad_times_skip_the_trace() {
    let skips = Fixture::new().root(1, "a", 0, 100).child(2, 1, "b", 10, -1).skipped();
    assert_eq!(skips.count(Reason::BadTime), 1);
    let skips = Fixture::new().root(1, "a", i64::MAX, 1).skipped();
    assert_eq!(skips.count(Reason::BadTime), 1);
    let skips = Fixture::new().root(1, "a", 0, i64::MAX).skipped();
    assert_eq!(skips.count(Reason::BadTime), 1);
}

#[test]
fn sampling_and_tags_come_from_the_root() {
    let req = Fixture::new()
        .root(1, "a", 0, 100)
        .tag("sampler.type", "probabilistic")
        .tag("sampler.param", "0.001")
        .tag("distance", "3")
        .child(2, 1, "a", 1, 10)
        .tag("distance", "9")
        .tag("seats", "2")
        .child(3, 2, "b", 2, 5)
        .tag("ignored", "x")
        .request();
    assert_eq!(req.sampling, Some(0.001));
    let tags: Vec<(&str, &str)> = req.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(tags, vec![("distance", "3"), ("seats", "2")]);
}

#[test]
fn sampling_rules() {
    let sampled = |kind: &str, param: &str| {
        Fixture::new().root(1, "a", 0, 1).tag("sampler.type", kind).tag("sampler.param", param).request().sampling
    };
    assert_eq!(sampled("probabilistic", "0.5"), Some(0.5));
    assert_eq!(sampled("probabilistic", "1"), Some(1.0));
    assert_eq!(sampled("probabilistic", "0"), None);
    assert_eq!(sampled("probabilistic", "1.5"), None);
    assert_eq!(sampled("probabilistic", "NaN"), None);
    assert_eq!(sampled("const", "1"), Some(1.0));
    assert_eq!(sampled("const", "true"), Some(1.0));
    assert_eq!(sampled("const", "0"), None);
    assert_eq!(sampled("ratelimiting", "2"), None);
    assert_eq!(Fixture::new().root(1, "a", 0, 1).request().sampling, None);
}
