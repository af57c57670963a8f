//! Wire types of `k8s.io/kube-scheduler/extender/v1`, exactly as kube-scheduler sends and reads
//! them.
//!
//! The Go structs carry no json tags, so the keys are the Go field names (`Pod`, `Nodes`,
//! `NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`); the Pod
//! and Node objects inside are ordinary Kubernetes JSON (camelCase). Only the fields Derm reads
//! are decoded: the rest of a Pod is skipped, and Node objects are kept as raw JSON so a filter
//! reply in full-node mode returns them byte for byte.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `ExtenderArgs`: the body of `POST <urlPrefix>/filter` and `/prioritize`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Args<'a> {
    /// The pod being scheduled (required; `null` or absent is a bad request).
    #[serde(default)]
    pub pod: Option<Pod>,
    /// Candidate nodes as full objects (`nodeCacheCapable: false`).
    #[serde(default, borrow)]
    pub nodes: Option<NodeList<'a>>,
    /// Candidate node names (`nodeCacheCapable: true`).
    #[serde(default, borrow)]
    pub node_names: Option<Vec<Name<'a>>>,
}

/// A node name borrowed from the request body (serde borrows a `Cow` only as a direct field;
/// inside a `Vec` it would allocate every name).
#[derive(Debug, Deserialize)]
pub struct Name<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// A `v1.NodeList` whose items stay raw JSON.
#[derive(Debug, Deserialize, Serialize)]
pub struct NodeList<'a> {
    /// `metadata` of the list, echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub metadata: Option<&'a RawValue>,
    /// The nodes, untouched.
    #[serde(default, borrow)]
    pub items: Vec<&'a RawValue>,
}

/// The part of a Node object Derm reads.
#[derive(Debug, Deserialize)]
pub struct Node<'a> {
    /// Object metadata.
    #[serde(borrow)]
    pub metadata: NodeMeta<'a>,
}

/// A Node's name.
#[derive(Debug, Deserialize)]
pub struct NodeMeta<'a> {
    /// Node name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// The part of a Pod Derm reads.
#[derive(Debug, Default, Deserialize)]
pub struct Pod {
    /// Object metadata.
    #[serde(default)]
    pub metadata: PodMeta,
}

/// Pod metadata: identity and what links the pod to its workload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    /// Pod name (empty for a pod created with generateName and not yet named).
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// UID.
    #[serde(default)]
    pub uid: String,
    /// Labels (`pod-template-hash` links a ReplicaSet to its Deployment).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Owners; the one with `controller: true` is the workload.
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

/// An owner reference.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// Owner kind, e.g. `ReplicaSet`.
    #[serde(default)]
    pub kind: String,
    /// Owner name.
    #[serde(default)]
    pub name: String,
    /// Whether this owner is the managing controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// `ExtenderFilterResult`: the reply to `filter`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterResult<'a> {
    /// Nodes that fit (full-node mode), else `null`.
    #[serde(borrow)]
    pub nodes: Option<NodeList<'a>>,
    /// Names of the nodes that fit (names mode), else `null`.
    pub node_names: Option<Vec<Cow<'a, str>>>,
    /// Nodes that do not fit, with the reason; preemption may help.
    pub failed_nodes: BTreeMap<String, String>,
    /// Nodes that do not fit and preemption cannot help.
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// An error, empty when none.
    pub error: String,
}

/// `HostPriority`: one entry of the reply to `prioritize` (a bare JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority<'a> {
    /// Node name.
    pub host: Cow<'a, str>,
    /// Score, 0..=10 (see [`crate::score::Score`]).
    pub score: i64,
}

/// Why a request body cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON of the expected shape.
    #[error("malformed ExtenderArgs: {0}")]
    Json(#[from] serde_json::Error),
    /// `Pod` is absent or null.
    #[error("ExtenderArgs.Pod is missing")]
    MissingPod,
    /// Neither `Nodes` nor `NodeNames` is set.
    #[error("ExtenderArgs has neither Nodes nor NodeNames")]
    MissingNodes,
    /// A node object in `Nodes.items` has no `metadata.name`.
    #[error("ExtenderArgs.Nodes.items[{index}]: {source}")]
    Node {
        /// Index in `items`.
        index: usize,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// More candidate nodes than `--max-nodes`.
    #[error("{count} candidate nodes exceed the limit of {limit} (--max-nodes)")]
    TooManyNodes {
        /// Nodes sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// A decoded request: the pod and its candidates, in whichever mode they were sent.
#[derive(Debug)]
pub struct Request<'a> {
    /// The pod.
    pub pod: Pod,
    /// Candidate node names, in request order.
    pub names: Vec<Cow<'a, str>>,
    /// The raw node objects (full-node mode), parallel to `names`.
    pub full: Option<NodeList<'a>>,
}

impl<'a> Request<'a> {
    /// Decodes `body`, accepting at most `max_nodes` candidates.
    pub fn decode(body: &'a [u8], max_nodes: usize) -> Result<Self, Error> {
        let args: Args<'a> = serde_json::from_slice(body)?;
        let pod = args.pod.ok_or(Error::MissingPod)?;
        let (names, full) = match (args.node_names, args.nodes) {
            (Some(names), _) => (names.into_iter().map(|n| n.0).collect(), None),
            (None, Some(list)) => {
                let names = list
                    .items
                    .iter()
                    .enumerate()
                    .map(|(index, raw)| {
                        serde_json::from_str::<Node<'a>>(raw.get())
                            .map(|n| n.metadata.name)
                            .map_err(|source| Error::Node { index, source })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (names, Some(list))
            }
            (None, None) => return Err(Error::MissingNodes),
        };
        if names.len() > max_nodes {
            return Err(Error::TooManyNodes { count: names.len(), limit: max_nodes });
        }
        Ok(Self { pod, names, full })
    }

    /// The filter reply keeping the candidates for which `keep` is true, in the request's mode.
    pub fn filter_reply(self, keep: &[bool], failed: BTreeMap<String, String>) -> FilterResult<'a> {
        let mut reply = FilterResult { failed_nodes: failed, ..FilterResult::default() };
        match self.full {
            Some(list) => {
                let items = list.items.into_iter().zip(keep).filter(|(_, k)| **k).map(|(n, _)| n).collect();
                reply.nodes = Some(NodeList { metadata: list.metadata, items });
            }
            None => {
                reply.node_names =
                    Some(self.names.into_iter().zip(keep).filter(|(_, k)| **k).map(|(n, _)| n).collect());
            }
        }
        reply
    }
}

/// A filter reply carrying only an error (kube-scheduler fails the attempt, or skips this
/// extender when it is `ignorable`).
pub fn filter_error(message: String) -> FilterResult<'static> {
    FilterResult { error: message, ..FilterResult::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{"metadata":{"name":"cart-7d9f-x","namespace":"shop","uid":"u1",
        "labels":{"app":"cart","pod-template-hash":"7d9f"},
        "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"cart-7d9f","uid":"r","controller":true}]},
        "spec":{"containers":[{"name":"c","image":"pause"}]},"status":{"phase":"Pending"}}"#;

    #[test]
    fn names_mode_request_and_golden_reply() {
        let body = format!(r#"{{"Pod":{POD},"Nodes":null,"NodeNames":["n1","n2","n3"]}}"#);
        let req = Request::decode(body.as_bytes(), 10).unwrap();
        assert_eq!(req.pod.metadata.namespace, "shop");
        assert_eq!(req.pod.metadata.owner_references[0].name, "cart-7d9f");
        assert_eq!(req.names, ["n1", "n2", "n3"]);
        let failed = BTreeMap::from([("n2".to_owned(), "full".to_owned())]);
        let reply = serde_json::to_string(&req.filter_reply(&[true, false, true], failed)).unwrap();
        assert_eq!(
            reply,
            r#"{"Nodes":null,"NodeNames":["n1","n3"],"FailedNodes":{"n2":"full"},"FailedAndUnresolvableNodes":{},"Error":""}"#
        );
    }

    #[test]
    fn full_mode_request_returns_node_objects_untouched() {
        let n1 = r#"{"metadata":{"name":"n1","labels":{"zone":"a"}},"status":{"allocatable":{"pods":"110"}}}"#;
        let n2 = r#"{"metadata":{"name":"n2"}}"#;
        let body = format!(r#"{{"Pod":{POD},"Nodes":{{"metadata":{{}},"items":[{n1},{n2}]}},"NodeNames":null}}"#);
        let req = Request::decode(body.as_bytes(), 10).unwrap();
        assert_eq!(req.names, ["n1", "n2"]);
        let reply = serde_json::to_string(&req.filter_reply(&[true, false], BTreeMap::new())).unwrap();
        assert_eq!(
            reply,
            format!(
                r#"{{"Nodes":{{"metadata":{{}},"items":[{n1}]}},"NodeNames":null,"FailedNodes":{{}},"FailedAndUnresolvableNodes":{{}},"Error":""}}"#
            )
        );
    }

    #[test]
    fn prioritize_golden() {
        let reply = vec![HostPriority { host: "n1".into(), score: 7 }, HostPriority { host: "n2".into(), score: 0 }];
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"[{"Host":"n1","Score":7},{"Host":"n2","Score":0}]"#);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let err = |body: &str| Request::decode(body.as_bytes(), 3).unwrap_err().to_string();
        assert!(err("{").starts_with("malformed ExtenderArgs"));
        assert!(err("7").starts_with("malformed ExtenderArgs"));
        // serde reads a struct from a sequence too: an empty one has no Pod.
        assert_eq!(err("[]"), "ExtenderArgs.Pod is missing");
        assert_eq!(err(r#"{"NodeNames":["a"]}"#), "ExtenderArgs.Pod is missing");
        assert_eq!(err(r#"{"Pod":null,"NodeNames":["a"]}"#), "ExtenderArgs.Pod is missing");
        assert_eq!(err(r#"{"Pod":{}}"#), "ExtenderArgs has neither Nodes nor NodeNames");
        assert!(err(r#"{"Pod":{},"Nodes":{"items":[{"metadata":{}}]}}"#).starts_with("ExtenderArgs.Nodes.items[0]"));
        assert_eq!(
            err(r#"{"Pod":{},"NodeNames":["a","b","c","d"]}"#),
            "4 candidate nodes exceed the limit of 3 (--max-nodes)"
        );
        // camelCase keys are not the wire format: the request reads as empty.
        assert_eq!(err(r#"{"pod":{},"nodeNames":["a"]}"#), "ExtenderArgs.Pod is missing");
        // An empty candidate list is valid.
        assert!(Request::decode(br#"{"Pod":{},"NodeNames":[]}"#, 3).unwrap().names.is_empty());
    }

    #[test]
    fn names_are_borrowed_unless_escaped() {
        let req = Request::decode(br#"{"Pod":{},"NodeNames":["n\u0031","n2"]}"#, 3).unwrap();
        assert_eq!(req.names, ["n1", "n2"]);
        assert!(matches!(req.names[0], Cow::Owned(_)) && matches!(req.names[1], Cow::Borrowed(_)));
    }
}
