//! Background pollers, one per DermApp with a given kind of source (Jaeger traces, call
//! counts): started for new apps, restarted when an app's source changes, stopped for apps
//! gone or invalid, all stopped when this replica stops leading.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use kube::ResourceExt as _;
use tokio::task::JoinHandle;

use crate::controller::Apps;
use crate::crd::{DermApp, DermAppSpec};
use crate::jaeger::Client;

/// An app's (namespace, name).
pub type Key = (String, String);

/// A kind of source a poller reads for an app.
pub trait Source: PartialEq + Clone + Sized {
    /// The metrics its pollers report to.
    type Metrics: Clone + std::fmt::Debug;
    /// The app's source of this kind, if its spec has one.
    fn of(spec: &DermAppSpec) -> Option<Self>;
    /// Spawns the poller of the app `key`, feeding `apps`.
    fn start(self, key: &Key, client: &Client, metrics: &Self::Metrics, apps: &Apps) -> JoinHandle<()>;
}

/// The running pollers of one kind of source, owned by the controller's loop.
#[derive(Debug)]
pub struct Pollers<S: Source> {
    client: Client,
    metrics: S::Metrics,
    running: BTreeMap<Key, (S, JoinHandle<()>)>,
}

impl<S: Source> Pollers<S> {
    pub fn new(client: Client, metrics: S::Metrics) -> Self {
        Pollers { client, metrics, running: BTreeMap::new() }
    }

    /// Runs one poller per valid app in `list` with a source of this kind; a poller whose
    /// source changed is restarted, the others' are stopped.
    pub fn sync(&mut self, apps: &Apps, list: &[DermApp]) {
        let mut want = BTreeMap::new();
        for app in list {
            if let Some(source) = S::of(&app.spec)
                && app.spec.validate().is_ok()
            {
                want.insert((app.namespace().unwrap_or_default(), app.name_any()), source);
            }
        }
        self.running.retain(|key, (source, task)| {
            let keep = want.get(key) == Some(source);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, source) in want {
            if let Entry::Vacant(v) = self.running.entry(key) {
                let task = source.clone().start(v.key(), &self.client, &self.metrics, apps);
                v.insert((source, task));
            }
        }
    }

    /// Stops every poller.
    pub fn clear(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.running) {
            task.abort();
        }
    }
}

impl<S: Source> Drop for Pollers<S> {
    fn drop(&mut self) {
        self.clear();
    }
}
