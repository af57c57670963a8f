//! The published values: one desired replica count per (namespace, app, service).
//!
//! A [`Store`] holds an immutable [`Snapshot`] behind an [`ArcSwap`]: the writer builds a
//! whole new snapshot and swaps it in; request handlers load the current one without locks and
//! never call upstream. Freshness is judged at read time from each value's timestamp and its
//! app's [`Staleness`] limits, so a writer that stops publishing cannot leave old values
//! looking fresh.
//!
//! Writers today: `--static-values FILE` ([`StaticValue`], kept current by [`StaticWatcher`])
//! and tests. TODO(next slice): the
//! DermApp status watch publishes here (every replica), fed by the leader's online loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

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

/// Keeps a `--static-values` file published: [`check`](Self::check) reloads it into the
/// [`Store`] when its modification time or size changed since the last look. A file that cannot
/// be used (unreadable, removed, bad JSON) is reported once and the previous values stay
/// published; fixing the file changes its stamp again and is picked up.
///
/// Writers should replace the file atomically (write a temporary file, rename it): a reader may
/// otherwise see a half-written file, which is reported and then superseded by the next change.
#[derive(Debug)]
pub struct StaticWatcher {
    path: PathBuf,
    store: Arc<Store>,
    seen: Option<Stamp>,
}

/// What identifies one version of the file; `None` when it cannot be stat'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self { modified: meta.modified().ok(), len: meta.len() })
    }
}

/// Outcome of one [`StaticWatcher::check`].
#[derive(Debug)]
pub enum Reload {
    /// Same modification time and size as the last look: nothing read.
    Unchanged,
    /// The file changed and its values are now published.
    Reloaded {
        /// Number of series published.
        series: usize,
    },
    /// The file changed but cannot be used; the previous values stay published.
    Kept(StaticError),
}

impl StaticWatcher {
    /// Loads `path` and publishes it into `store`. Fails when the file cannot be used, so a bad
    /// file at startup stops the process rather than serving nothing.
    pub fn start(path: impl Into<PathBuf>, store: Arc<Store>) -> Result<Self, StaticError> {
        let path = path.into();
        // Stamped before reading: a write racing the read changes the stamp and is read again.
        let seen = Stamp::of(&path);
        store.publish(StaticValue::load(&path, SystemTime::now())?);
        Ok(Self { path, store, seen })
    }

    /// Looks at the file once and reloads it if it changed.
    pub fn check(&mut self) -> Reload {
        let stamp = Stamp::of(&self.path);
        if stamp == self.seen {
            return Reload::Unchanged;
        }
        self.seen = stamp;
        match StaticValue::load(&self.path, SystemTime::now()) {
            Ok(snapshot) => {
                let series = snapshot.len();
                self.store.publish(snapshot);
                Reload::Reloaded { series }
            }
            Err(e) => Reload::Kept(e),
        }
    }

    /// Checks every `every` in a spawned task (until it is aborted), logging reloads and
    /// failures. The file is small and local, so it is read on the runtime thread.
    pub fn spawn(mut self, every: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the file was just loaded
            loop {
                tick.tick().await;
                match self.check() {
                    Reload::Unchanged => {}
                    Reload::Reloaded { series } => {
                        tracing::info!(path = %self.path.display(), series, "static values reloaded");
                    }
                    Reload::Kept(e) => tracing::warn!(
                        error = format!("{:#}", anyhow::Error::from(e)),
                        "static values not reloaded; keeping the previous values"
                    ),
                }
            }
        })
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

    /// Writes `body` and sets the modification time to `t0 + k` seconds, so each version has a
    /// distinct stamp whatever the file system's timestamp granularity.
    fn write_version(path: &Path, body: &str, k: u64) {
        std::fs::write(path, body).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + k)).unwrap();
    }

    fn replicas_of(store: &Store) -> Vec<u32> {
        store.load().iter().map(|(_, v)| v.replicas).collect()
    }

    fn entry(replicas: u32) -> String {
        format!(r#"[{{"namespace":"n","app":"a","service":"s","replicas":{replicas}}}]"#)
    }

    #[test]
    fn static_watcher_reloads_changes_and_keeps_the_last_good_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_version(&path, &entry(2), 0);
        let store = Arc::new(Store::default());
        let mut watcher = StaticWatcher::start(&path, store.clone()).unwrap();
        assert_eq!(replicas_of(&store), [2]);
        assert!(matches!(watcher.check(), Reload::Unchanged));

        // Same size, new modification time: reloaded.
        write_version(&path, &entry(5), 1);
        assert!(matches!(watcher.check(), Reload::Reloaded { series: 1 }));
        assert_eq!(replicas_of(&store), [5]);

        // Bad JSON: reported once, previous values kept.
        write_version(&path, "[{", 2);
        assert!(matches!(watcher.check(), Reload::Kept(StaticError::Parse { .. })));
        assert!(matches!(watcher.check(), Reload::Unchanged));
        assert_eq!(replicas_of(&store), [5]);

        // Removed: reported, kept.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watcher.check(), Reload::Kept(StaticError::Read { .. })));
        assert_eq!(replicas_of(&store), [5]);

        // Back and valid: reloaded.
        write_version(&path, &entry(9), 3);
        assert!(matches!(watcher.check(), Reload::Reloaded { series: 1 }));
        assert_eq!(replicas_of(&store), [9]);
    }

    #[test]
    fn static_watcher_refuses_a_bad_file_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_version(&path, "{}", 0);
        let store = Arc::new(Store::default());
        assert!(matches!(StaticWatcher::start(&path, store.clone()), Err(StaticError::Parse { .. })));
        assert!(store.load().is_empty());
    }

    #[tokio::test]
    async fn spawned_static_watcher_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        write_version(&path, &entry(1), 0);
        let store = Arc::new(Store::default());
        let task = StaticWatcher::start(&path, store.clone()).unwrap().spawn(Duration::from_millis(10));

        // Polls the store until it holds `want`, with a deadline; the store must never be empty.
        let eventually = |want: u32| {
            let store = store.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let got = replicas_of(&store);
                    assert!(!got.is_empty(), "values were dropped");
                    if got == [want] {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "still {got:?}, want [{want}]");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        write_version(&path, &entry(8), 1);
        eventually(8).await;
        // A bad version followed by a good one: the good one lands and nothing is dropped between.
        write_version(&path, "not json", 2);
        write_version(&path, &entry(19), 3);
        eventually(19).await;
        task.abort();
    }
}
