//! One trace -> one request: the call tree, exclusive times, and stages of parallel calls.
//!
//! Rules, in the order they are checked (each skip counts one [`Reason`] with an example
//! `trace <id>: ...`; a skipped trace counts exactly one reason):
//! 1. A span with a negative duration or a time out of range: [`Reason::BadTime`], skipped.
//! 2. A span id seen twice: the first span is kept, later ones are dropped, each counted as
//!    [`Reason::DuplicateSpan`]; the trace is kept.
//! 3. Exactly one root (a span without a parent): several are [`Reason::MultipleRoots`];
//!    a span whose parent id is not in the trace is [`Reason::Orphan`] (its graph is unknown);
//!    no root at all is [`Reason::NoRoot`]; spans that the root does not reach through parent
//!    links (a cycle) are [`Reason::Cycle`]. All skipped.
//! 4. Same-service folding: a span of the same service as its parent (a client span, an
//!    internal span) is merged into the parent; its children become the parent's children,
//!    keeping their own times. The call keeps the outermost span's times, container and
//!    identity. A chain of folded spans folds into one call.
//! 5. Exclusive time of a call = its duration minus the length of the union of its children's
//!    intervals, each clipped to the call's interval; never negative. A `CHILD_OF` span that
//!    reaches outside its parent span by more than [`SKEW_TOLERANCE_US`] counts one
//!    [`Reason::ClockSkew`] per trace; the trace is kept (clipping repairs the time).
//!    `FOLLOWS_FROM` children are calls of the tree like the others (the request caused them)
//!    but may outlive their parent without counting as skew.
//! 6. Stages: a call's children sorted by start (ties: by end); a child joins the current
//!    stage if it starts before the latest end in that stage, otherwise it opens the next
//!    stage. Overlapping calls are parallel, back-to-back calls sequential.
//! 7. Sampling from the root's `sampler.type` / `sampler.param`: `probabilistic` with a
//!    parameter in (0, 1] gives that probability; `const` with `1` or `true` gives 1; anything
//!    else `None`. [`Request::tags`]: the kept tags of the root span and of the spans folded
//!    into it (first value of a key wins, root first), except `sampler.*`.
//! 8. Calls nested deeper than [`MAX_DEPTH`] (after folding): [`Reason::Malformed`], skipped.
//!    Nothing here recurses; the cap protects the recursive consumers of [`Call`] (drop,
//!    clone, graph canonicalisation) from stack overflow.

use super::{Call, Reason, RefKind, Request, Skips, Span, Trace, times_ok};
use std::collections::HashMap;

/// Deepest call tree accepted (after same-service folding). Real call graphs are a few tens
/// of levels deep; the derived `Clone`/`Debug` of a 2,000-deep [`Call`] already overflow a
/// 2 MiB thread stack in a debug build, so the cap leaves recursive consumers 8x headroom.
pub const MAX_DEPTH: usize = 256;

/// A `CHILD_OF` span may reach this far outside its parent before it counts as clock skew.
pub const SKEW_TOLERANCE_US: i64 = 1;

const NONE: usize = usize::MAX;

/// Build the call tree of `trace`, or count why not in `skips` and return `None`.
pub fn build(trace: Trace, skips: &mut Skips) -> Option<Request> {
    let Trace { id, mut spans } = trace;
    if spans.is_empty() {
        skips.add(Reason::NoRoot, || format!("trace {id}: no spans"));
        return None;
    }
    if let Some(s) = spans.iter().find(|s| !times_ok(s.start_us, s.duration_us)) {
        skips.add(Reason::BadTime, || {
            format!("trace {id}: span {:016x} has start {} us, duration {} us", s.id, s.start_us, s.duration_us)
        });
        return None;
    }

    // Duplicate ids: keep the first.
    let mut index: HashMap<u64, usize> = HashMap::with_capacity(spans.len());
    spans.retain(|s| {
        if index.contains_key(&s.id) {
            skips.add(Reason::DuplicateSpan, || format!("trace {id}: span id {:016x} appears again; first kept", s.id));
            false
        } else {
            index.insert(s.id, index.len());
            true
        }
    });
    let n = spans.len();

    // Parents and roots.
    let mut parent = vec![NONE; n];
    let mut roots = Vec::new();
    let mut orphan = None;
    for (i, s) in spans.iter().enumerate() {
        match s.parent {
            None => roots.push(i),
            Some(p) => match index.get(&p.id) {
                Some(&j) => parent[i] = j,
                None => _ = orphan.get_or_insert((i, p.id)),
            },
        }
    }
    if roots.len() > 1 {
        skips.add(Reason::MultipleRoots, || {
            let names: Vec<String> = roots.iter().take(4).map(|&r| describe(&spans[r])).collect();
            format!("trace {id}: {} roots: {}", roots.len(), names.join(", "))
        });
        return None;
    }
    if let Some((i, p)) = orphan {
        skips.add(Reason::Orphan, || {
            format!("trace {id}: {}: parent {p:016x} is not in the trace", describe(&spans[i]))
        });
        return None;
    }
    let Some(&root) = roots.first() else {
        skips.add(Reason::NoRoot, || format!("trace {id}: every span has a parent ({n} spans)"));
        return None;
    };

    // Children lists (CSR) and breadth-first order from the root.
    let children = Csr::new(n, (0..n).filter(|&i| parent[i] != NONE).map(|i| (parent[i], i)));
    let mut order = Vec::with_capacity(n);
    order.push(root);
    let mut head = 0;
    while let Some(&v) = order.get(head) {
        head += 1;
        order.extend_from_slice(children.get(v));
    }
    if order.len() != n {
        skips.add(Reason::Cycle, || {
            let mut reached = vec![false; n];
            order.iter().for_each(|&v| reached[v] = true);
            let first = reached.iter().position(|r| !r).map(|i| describe(&spans[i])).unwrap_or_default();
            format!("trace {id}: {} spans not reachable from the root (a parent cycle), e.g. {first}", n - order.len())
        });
        return None;
    }

    // Same-service folding: rep[v] is the span whose call v belongs to.
    let mut rep = vec![NONE; n];
    let mut depth = vec![0usize; n];
    for &v in &order {
        let p = parent[v];
        if p == NONE {
            rep[v] = v;
        } else if spans[v].service == spans[p].service {
            rep[v] = rep[p];
            depth[v] = depth[p];
        } else {
            rep[v] = v;
            depth[v] = depth[p] + 1;
            if depth[v] > MAX_DEPTH {
                skips.add(Reason::Malformed, || format!("trace {id}: call tree deeper than {MAX_DEPTH} levels"));
                return None;
            }
        }
    }

    // Clock skew: a CHILD_OF span outside its parent span.
    let skewed = order.iter().find(|&&v| {
        let p = parent[v];
        p != NONE && spans[v].parent.is_some_and(|r| r.kind == RefKind::ChildOf) && {
            let (c, p) = (&spans[v], &spans[p]);
            c.start_us < p.start_us - SKEW_TOLERANCE_US
                || c.start_us + c.duration_us > p.start_us + p.duration_us + SKEW_TOLERANCE_US
        }
    });
    if let Some(&v) = skewed {
        skips.add(Reason::ClockSkew, || {
            let (c, p) = (&spans[v], &spans[parent[v]]);
            format!(
                "trace {id}: {} [{}, +{}] reaches outside its parent {} [{}, +{}]",
                describe(c),
                c.start_us,
                c.duration_us,
                describe(p),
                p.start_us,
                p.duration_us
            )
        });
    }

    // Root tags: the root span's, then those of spans folded into it.
    let mut root_tags: Vec<(String, String)> = Vec::new();
    for &v in order.iter().filter(|&&v| rep[v] == root) {
        for (k, val) in std::mem::take(&mut spans[v].tags) {
            if root_tags.iter().all(|(have, _)| *have != k) {
                root_tags.push((k, val));
            }
        }
    }

    // Calls, bottom-up: a call's children are the unfolded spans whose parent belongs to it.
    let calls_of = Csr::new(n, order.iter().filter(|&&v| rep[v] == v && v != root).map(|&v| (rep[parent[v]], v)));
    let mut calls: Vec<Option<Call>> = std::iter::repeat_with(|| None).take(n).collect();
    let mut scratch = Vec::new();
    for &v in order.iter().rev().filter(|&&v| rep[v] == v) {
        let kids: Vec<Call> = calls_of.get(v).iter().filter_map(|&c| calls[c].take()).collect();
        let s = &mut spans[v];
        let exclusive_us = exclusive(s.start_us, s.duration_us, &kids, &mut scratch);
        calls[v] = Some(Call {
            service: std::mem::take(&mut s.service),
            start_us: s.start_us,
            duration_us: s.duration_us,
            exclusive_us,
            container: s.container.take(),
            stages: stages(kids),
        });
    }
    let Some(root_call) = calls[root].take() else {
        skips.add(Reason::Malformed, || format!("trace {id}: no root call"));
        return None;
    };

    let sampling = sampling(&root_tags);
    let tags = root_tags.into_iter().filter(|(k, _)| !k.starts_with("sampler.")).collect();
    Some(Request { trace_id: id, root: root_call, sampling, tags })
}

fn describe(s: &Span) -> String {
    format!("span {:016x} ({})", s.id, s.service)
}

/// Adjacency lists in two flat arrays.
struct Csr {
    start: Vec<usize>,
    items: Vec<usize>,
}

impl Csr {
    /// Lists of `n` nodes from (node, item) pairs; items keep their order within a node.
    fn new(n: usize, pairs: impl Iterator<Item = (usize, usize)> + Clone) -> Self {
        let mut start = vec![0usize; n + 1];
        for (node, _) in pairs.clone() {
            start[node + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut items = vec![0usize; start[n]];
        for (node, item) in pairs {
            items[next[node]] = item;
            next[node] += 1;
        }
        Csr { start, items }
    }

    fn get(&self, node: usize) -> &[usize] {
        &self.items[self.start[node]..self.start[node + 1]]
    }
}

/// Duration minus the union of the children's intervals clipped to [start, start + duration].
fn exclusive(start: i64, duration: i64, kids: &[Call], scratch: &mut Vec<(i64, i64)>) -> i64 {
    let end = start + duration;
    scratch.clear();
    scratch.extend(
        kids.iter().map(|c| (c.start_us.max(start), (c.start_us + c.duration_us).min(end))).filter(|(a, b)| a < b),
    );
    scratch.sort_unstable();
    let mut covered = 0;
    let mut current: Option<(i64, i64)> = None;
    for &(a, b) in scratch.iter() {
        current = match current {
            Some((lo, hi)) if a <= hi => Some((lo, hi.max(b))),
            Some((lo, hi)) => {
                covered += hi - lo;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((lo, hi)) = current {
        covered += hi - lo;
    }
    (duration - covered).max(0)
}

/// Children in sequential stages of overlapping (parallel) calls.
fn stages(mut kids: Vec<Call>) -> Vec<Vec<Call>> {
    kids.sort_by_key(|c| (c.start_us, c.start_us + c.duration_us));
    let mut stages: Vec<Vec<Call>> = Vec::new();
    let mut stage_end = i64::MIN;
    for c in kids {
        let end = c.start_us + c.duration_us;
        match stages.last_mut() {
            Some(stage) if c.start_us < stage_end => stage.push(c),
            _ => stages.push(vec![c]),
        }
        stage_end = stage_end.max(end);
    }
    stages
}

/// Sampling probability from `sampler.type` / `sampler.param`.
fn sampling(tags: &[(String, String)]) -> Option<f64> {
    let get = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim());
    let param = get(super::Config::SAMPLER_PARAM)?;
    match get(super::Config::SAMPLER_TYPE)? {
        "probabilistic" => param.parse::<f64>().ok().filter(|p| *p > 0.0 && *p <= 1.0),
        "const" => matches!(param, "1" | "true" | "1.0").then_some(1.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
