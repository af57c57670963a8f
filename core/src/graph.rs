//! Call graphs: the canonical form of a call tree, its stable id, the catalog of graphs seen,
//! and per-window statistics ([`window`]).
//!
//! A graph keeps services and stage structure only. Order inside a parallel stage does not
//! matter (stages are sorted canonically); repeated calls are kept, so a service called twice
//! is two nodes.

pub mod catalog;
pub mod counted;
pub mod window;

pub use catalog::Catalog;
pub use window::{Window, Windows};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use crate::trace::Call;

/// A node of a call graph: a service and its children in sequential stages of parallel calls.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    pub service: String,
    /// Stages run one after another; the nodes of one stage run in parallel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Vec<Node>>,
}

impl Node {
    /// A service with no calls.
    pub fn leaf(service: impl Into<String>) -> Self {
        Node { service: service.into(), stages: Vec::new() }
    }

    /// `services[0]` calls `services[1]`, which calls `services[2]`, ... (a nested chain).
    pub fn chain<S: Into<String>>(services: impl IntoIterator<Item = S>) -> Self {
        let mut names: Vec<String> = services.into_iter().map(Into::into).collect();
        let last = names.pop().unwrap_or_default();
        names.into_iter().rev().fold(Node::leaf(last), |child, s| Node::leaf(s).then(child))
    }

    /// Append a sequential stage holding one call.
    pub fn then(mut self, child: Node) -> Self {
        self.stages.push(vec![child]);
        self
    }

    /// Append a stage of parallel calls.
    pub fn with_parallel(mut self, children: impl IntoIterator<Item = Node>) -> Self {
        self.stages.push(children.into_iter().collect());
        self
    }

    /// The canonical graph of a call tree (times dropped, parallel stages sorted).
    pub fn from_call(call: &Call) -> Self {
        Node {
            service: call.service.clone(),
            stages: call.stages.iter().map(|s| s.iter().map(Node::from_call).collect()).collect(),
        }
        .canonical()
    }

    /// Sort every parallel stage so that equal graphs compare and hash equal.
    pub fn canonical(mut self) -> Self {
        for stage in &mut self.stages {
            let taken = std::mem::take(stage);
            *stage = taken.into_iter().map(Node::canonical).collect();
            stage.sort();
        }
        self.stages.retain(|s| !s.is_empty());
        self
    }

    /// Compact text form: `a(b;c|d)` means a calls b, then c and d in parallel.
    pub fn signature(&self) -> String {
        let mut out = String::new();
        self.write_signature(&mut out);
        out
    }

    fn write_signature(&self, out: &mut String) {
        out.push_str(&self.service);
        if self.stages.is_empty() {
            return;
        }
        out.push('(');
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            for (j, n) in stage.iter().enumerate() {
                if j > 0 {
                    out.push('|');
                }
                n.write_signature(out);
            }
        }
        out.push(')');
    }

    /// Short stable id: the first 12 hex digits of SHA-256 over the canonical signature.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.signature().as_bytes());
        let mut id = String::with_capacity(12);
        for b in &digest[..6] {
            let _ = write!(id, "{b:02x}");
        }
        id
    }

    /// Visit every node (pre-order).
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        for stage in &self.stages {
            for n in stage {
                n.walk(f);
            }
        }
    }

    /// Number of nodes (calls) in the graph.
    pub fn size(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |_| n += 1);
        n
    }

    /// Calls per service in one request of this graph.
    pub fn calls(&self) -> std::collections::BTreeMap<&str, u32> {
        let mut m = std::collections::BTreeMap::new();
        self.walk(&mut |n| *m.entry(n.service.as_str()).or_insert(0) += 1);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_order_does_not_change_id() {
        let a = Node::leaf("a").with_parallel([Node::leaf("b"), Node::leaf("c")]);
        let b = Node::leaf("a").with_parallel([Node::leaf("c"), Node::leaf("b")]).canonical();
        assert_eq!(a.clone().canonical(), b);
        assert_eq!(a.canonical().id(), b.id());
    }

    #[test]
    fn sequential_order_and_repeats_change_id() {
        let ab = Node::leaf("a").then(Node::leaf("b")).then(Node::leaf("c"));
        let ba = Node::leaf("a").then(Node::leaf("c")).then(Node::leaf("b"));
        let rep = Node::leaf("a").then(Node::leaf("b")).then(Node::leaf("b"));
        assert_ne!(ab.id(), ba.id());
        assert_ne!(ab.id(), rep.id());
        assert_eq!(rep.calls()["b"], 2);
        assert_eq!(ab.id().len(), 12);
    }

    #[test]
    fn chain_nests() {
        let c = Node::chain(["a", "b", "c"]);
        assert_eq!(c.signature(), "a(b(c))");
        assert_eq!(c.size(), 3);
    }
}
