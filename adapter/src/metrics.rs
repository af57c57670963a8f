//! The published values: one desired replica count per (namespace, app, service).
//!
//! A [`Store`] holds an immutable [`Snapshot`] behind an [`ArcSwap`]: the writer builds a
//! whole new snapshot and swaps it in; request handlers load the current one without locks and
//! never call upstream. Freshness is judged at read time from each value's timestamp and its
//! app's [`Staleness`] limits, so a writer that stops publishing cannot leave old values
//! looking fresh.
//!
//! Writers today: `--static-values FILE` ([`StaticValue`]) and tests. TODO(next slice): the
//! DermApp status watch publishes here (every replica), fed by the leader's online loop.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::crd::ScaleTargetRef;

/// Identity of one published series; ordered so one namespace is a contiguous range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Namespace of the DermApp.
    pub namespace: String,
    /// DermApp name (label `app`).
    pub app: String,
    /// Service name as traced (label `service`).
    pub service: String,
}

impl Key {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, app: impl Into<String>, service: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), app: app.into(), service: service.into() }
    }
}

/// How long a value stays good without an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Up to this age a value is [`Freshness::Fresh`].
    pub hold: Duration,
    /// Past this age a value is [`Freshness::Expired`] and is answered with an error, so the HPA
    /// keeps its current count rather than acting on old data.
    pub error_after: Duration,
}

impl Staleness {
    /// Values that never go stale (static values, demos).
    pub const NEVER: Self = Self { hold: Duration::MAX, error_after: Duration::MAX };

    /// Judges a value of the given age.
    pub fn judge(&self, age: Duration) -> Freshness {
        if age <= self.hold {
            Freshness::Fresh
        } else if age <= self.error_after {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

/// Freshness of a value at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Recently updated.
    Fresh,
    /// Older than the hold time: still served (the last good value), flagged in metrics.
    Stale,
    /// Older than the error threshold: not served.
    Expired,
}

/// One published value.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Desired replicas.
    pub replicas: u32,
    /// When the value was computed.
    pub timestamp: SystemTime,
    /// Limits for this value's app.
    pub staleness: Staleness,
    /// The workload the value scales, for custom.metrics.k8s.io object metrics.
    pub scale_target: Option<ScaleTargetRef>,
}

impl Value {
    /// Age at `now` (zero if the timestamp is in the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.timestamp).unwrap_or_default()
    }

    /// Freshness at `now`.
    pub fn freshness(&self, now: SystemTime) -> Freshness {
        self.staleness.judge(self.age(now))
    }
}

/// An immutable set of published values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    values: BTreeMap<Key, Value>,
}

impl Snapshot {
    /// Builds a snapshot from (key, value) pairs; a later duplicate key wins.
    pub fn new(values: impl IntoIterator<Item = (Key, Value)>) -> Self {
        Self { values: values.into_iter().collect() }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is published.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// All series.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.values.iter()
    }

    /// The series of one namespace, ordered by (app, service).
    pub fn namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        let start = Key::new(namespace, "", "");
        self.values.range(start..).take_while(move |(k, _)| k.namespace == namespace)
    }

    /// Age of the oldest value at `now`, if any.
    pub fn max_age(&self, now: SystemTime) -> Option<Duration> {
        self.values.values().map(|v| v.age(now)).max()
    }
}

/// The owner of the current [`Snapshot`].
#[derive(Debug, Default)]
pub struct Store {
    current: ArcSwap<Snapshot>,
}

impl Store {
    /// A store holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self { current: ArcSwap::from_pointee(snapshot) }
    }

    /// Replaces the published values atomically.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The current snapshot (cheap; lock-free).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// One entry of the `--static-values` file.
///
/// ```json
/// [{"namespace": "shop", "app": "shop", "service": "frontend", "replicas": 3,
///   "scaleTargetRef": {"kind": "Deployment", "name": "frontend"}}]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticValue {
    /// Namespace of the app.
    pub namespace: String,
    /// App name (label `app`).
    pub app: String,
    /// Service name (label `service`).
    pub service: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Optional scale target, for custom.metrics.k8s.io object metrics.
    #[serde(default)]
    pub scale_target_ref: Option<ScaleTargetRef>,
}

/// Why the static values file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// The file could not be read.
    #[error("cannot read static values {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON list of values.
    #[error("static values {path}: expected [{{\"namespace\",\"app\",\"service\",\"replicas\"}}]")]
    Parse {
        /// The file.
        path: String,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// An entry has an empty name.
    #[error("static values {path}: entry {index}: field {field} must not be empty")]
    Empty {
        /// The file.
        path: String,
        /// Index of the entry.
        index: usize,
        /// The empty field.
        field: &'static str,
    },
}

impl StaticValue {
    /// Reads a static values file into a snapshot stamped `now`; the values never go stale.
    pub fn load(path: &Path, now: SystemTime) -> Result<Snapshot, StaticError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| StaticError::Read { path: shown.clone(), source })?;
        let entries: Vec<Self> =
            serde_json::from_slice(&bytes).map_err(|source| StaticError::Parse { path: shown.clone(), source })?;
        for (index, e) in entries.iter().enumerate() {
            for (field, v) in [("namespace", &e.namespace), ("app", &e.app), ("service", &e.service)] {
                if v.is_empty() {
                    return Err(StaticError::Empty { path: shown, index, field });
                }
            }
        }
        Ok(Snapshot::new(entries.into_iter().map(|e| {
            let value = Value {
                replicas: e.replicas,
                timestamp: now,
                staleness: Staleness::NEVER,
                scale_target: e.scale_target_ref,
            };
            (Key::new(e.namespace, e.app, e.service), value)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(replicas: u32) -> Value {
        Value { replicas, timestamp: SystemTime::UNIX_EPOCH, staleness: Staleness::NEVER, scale_target: None }
    }

    #[test]
    fn namespace_range_is_exact() {
        let snap = Snapshot::new([
            (Key::new("a", "x", "s"), value(1)),
            (Key::new("b", "x", "s1"), value(2)),
            (Key::new("b", "y", "s2"), value(3)),
            (Key::new("bb", "x", "s"), value(4)),
        ]);
        let got: Vec<u32> = snap.namespace("b").map(|(_, v)| v.replicas).collect();
        assert_eq!(got, [2, 3]);
        assert_eq!(snap.namespace("c").count(), 0);
    }

    #[test]
    fn staleness_thresholds() {
        let s = Staleness { hold: Duration::from_secs(10), error_after: Duration::from_secs(60) };
        assert_eq!(s.judge(Duration::from_secs(10)), Freshness::Fresh);
        assert_eq!(s.judge(Duration::from_secs(11)), Freshness::Stale);
        assert_eq!(s.judge(Duration::from_secs(61)), Freshness::Expired);
        assert_eq!(Staleness::NEVER.judge(Duration::from_secs(u32::MAX.into())), Freshness::Fresh);
    }

    #[test]
    fn store_swaps_whole_snapshots() {
        let store = Store::default();
        let before = store.load();
        store.publish(Snapshot::new([(Key::new("n", "a", "s"), value(7))]));
        assert!(before.is_empty());
        assert_eq!(store.load().len(), 1);
    }

    #[test]
    fn static_values_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        std::fs::write(&path, r#"[{"namespace":"n","app":"","service":"s","replicas":2}]"#).unwrap();
        let err = StaticValue::load(&path, SystemTime::now()).unwrap_err().to_string();
        assert!(err.contains("entry 0: field app must not be empty"), "{err}");
        std::fs::write(&path, r#"[{"namespace":"n","app":"a","service":"s","replicas":-1}]"#).unwrap();
        assert!(matches!(StaticValue::load(&path, SystemTime::now()), Err(StaticError::Parse { .. })));
        std::fs::write(
            &path,
            r#"[{"namespace":"n","app":"a","service":"s","replicas":2,"scaleTargetRef":{"kind":"Deployment","name":"s"}}]"#,
        )
        .unwrap();
        let snap = StaticValue::load(&path, SystemTime::now()).unwrap();
        let (_, v) = snap.iter().next().unwrap();
        assert_eq!(v.replicas, 2);
        assert_eq!(v.scale_target.as_ref().map(|t| t.name.as_str()), Some("s"));
    }
}
