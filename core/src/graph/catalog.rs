//! The catalog of call graphs seen: canonical signature -> id, graph and (weighted) count.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Node;
use crate::trace::Call;

/// One catalogued graph as written to `graphs.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Share of all (sampling-corrected) requests.
    pub share: f64,
    /// Sampled requests seen with this graph.
    pub count: u64,
    pub root: Node,
}

/// `graphs.json`: every graph seen, most frequent first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Graphs {
    pub graphs: Vec<Entry>,
}

impl Graphs {
    /// The graph with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.graphs.iter().find(|e| e.id == id)
    }
}

#[derive(Debug, Clone)]
struct Slot {
    id: String,
    root: Node,
    count: u64,
    weight: f64,
}

/// Accumulates graphs by canonical signature; ids are stable across runs and machines.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_signature: HashMap<String, usize>,
    slots: Vec<Slot>,
}

impl Catalog {
    /// Record one request with this call tree and sampling weight; returns the graph id.
    pub fn record(&mut self, call: &Call, weight: f64) -> &str {
        let mut sig = String::new();
        signature(call, &mut sig);
        let idx = match self.by_signature.get(&sig) {
            Some(&i) => i,
            None => {
                let root = Node::from_call(call);
                let slot = Slot { id: root.id(), root, count: 0, weight: 0.0 };
                self.slots.push(slot);
                self.by_signature.insert(sig, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[idx];
        slot.count += 1;
        slot.weight += weight;
        &slot.id
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The catalog as `graphs.json`, most frequent first (ties by id, so output is stable).
    pub fn graphs(&self) -> Graphs {
        let total: f64 = self.slots.iter().map(|s| s.weight).sum();
        let mut graphs: Vec<Entry> = self
            .slots
            .iter()
            .map(|s| Entry {
                id: s.id.clone(),
                share: if total > 0.0 { s.weight / total } else { 0.0 },
                count: s.count,
                root: s.root.clone(),
            })
            .collect();
        graphs.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.id.cmp(&b.id)));
        Graphs { graphs }
    }

    /// Graph ids with their graphs.
    pub fn nodes(&self) -> BTreeMap<&str, &Node> {
        self.slots.iter().map(|s| (s.id.as_str(), &s.root)).collect()
    }
}

/// The canonical signature of a call tree without building its [`Node`] (the hot path: one
/// per request). Equal to `Node::from_call(call).signature()`.
fn signature(call: &Call, out: &mut String) {
    out.push_str(&call.service);
    if call.stages.iter().all(|s| s.is_empty()) {
        return;
    }
    out.push('(');
    let mut first_stage = true;
    for stage in call.stages.iter().filter(|s| !s.is_empty()) {
        if !first_stage {
            out.push(';');
        }
        first_stage = false;
        if stage.len() == 1 {
            signature(&stage[0], out);
            continue;
        }
        // Parallel calls: sort the children's canonical forms, as Node::canonical does.
        let mut parts: Vec<Node> = stage.iter().map(Node::from_call).collect();
        parts.sort();
        for (j, n) in parts.iter().enumerate() {
            if j > 0 {
                out.push('|');
            }
            out.push_str(&n.signature());
        }
    }
    out.push(')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(service: &str, stages: Vec<Vec<Call>>) -> Call {
        Call { service: service.into(), start_us: 0, duration_us: 10, exclusive_us: 1, container: None, stages }
    }

    #[test]
    fn fast_signature_matches_canonical_node() {
        let tree = call(
            "a",
            vec![
                vec![call("c", vec![]), call("b", vec![vec![call("e", vec![])], vec![call("d", vec![])]])],
                vec![call("f", vec![])],
            ],
        );
        let mut sig = String::new();
        signature(&tree, &mut sig);
        assert_eq!(sig, Node::from_call(&tree).signature());
        assert_eq!(sig, "a(b(e;d)|c;f)");
    }

    #[test]
    fn shares_are_weighted() {
        let mut cat = Catalog::default();
        let simple = call("a", vec![]);
        let complex = call("a", vec![vec![call("b", vec![])]]);
        cat.record(&simple, 1.0);
        cat.record(&complex, 3.0);
        let g = cat.graphs();
        assert_eq!(g.graphs.len(), 2);
        assert!((g.graphs[0].share - 0.75).abs() < 1e-12);
        assert_eq!(g.graphs[0].root.signature(), "a(b)");
    }
}
