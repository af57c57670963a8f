//! Background pollers, one per DermApp with a given kind of source (Jaeger traces, call
//! counts): started for new apps, restarted when an app's source changes, stopped for apps
//! gone or invalid, all stopped when this replica stops leading.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use kube::ResourceExt as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::controller::Apps;
use crate::crd::{DermApp, DermAppSpec};
use crate::jaeger::{AppLabels, Client, ErrorLabels, Reason};

/// An app's (namespace, name).
pub type Key = (String, String);

/// A kind of source a poller reads for an app.
pub trait Source: PartialEq + Clone + std::fmt::Debug + Sized {
    /// Names its pollers in logs.
    const KIND: &'static str;
    /// The metrics its pollers report to.
    type Metrics: Clone + std::fmt::Debug;
    /// The app's source of this kind, if its spec has one.
    fn of(spec: &DermAppSpec) -> Option<Self>;
    /// The poller of app `key` (`app`: `namespace/name`), feeding `apps` until aborted.
    fn poll(
        self,
        key: Key,
        app: String,
        client: &Client,
        metrics: &Self::Metrics,
        apps: Apps,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// Poll failures by app and reason, and what the polls delivered by app: each source's
/// `derm_adapter_<name>_errors_total` and `derm_adapter_<name>_<delivered>_total`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub errors: Family<ErrorLabels, Counter>,
    pub delivered: Family<AppLabels, Counter>,
}

impl Counters {
    /// Registers the two families; `help` describes the errors' polls and what is delivered.
    pub fn register(registry: &mut Registry, name: &str, delivered: &str, help: [&str; 2]) -> Self {
        let this = Self::default();
        let sub = registry.sub_registry_with_prefix("derm_adapter");
        sub.register(format!("{name}_errors"), help[0], this.errors.clone());
        sub.register(format!("{name}_{delivered}"), help[1], this.delivered.clone());
        this
    }

    pub fn error(&self, app: &str, reason: Reason) {
        self.errors.get_or_create(&ErrorLabels { app: app.to_owned(), reason }).inc();
    }

    pub fn delivered(&self, app: &str, n: u64) {
        self.delivered.get_or_create(&AppLabels { app: app.to_owned() }).inc_by(n);
    }
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
                let app = format!("{}/{}", v.key().0, v.key().1);
                tracing::info!(app, ?source, "starting the {} poller", S::KIND);
                let span = tracing::info_span!("poller", kind = S::KIND, app);
                let poll = source.clone().poll(v.key().clone(), app, &self.client, &self.metrics, apps.clone());
                v.insert((source, tokio::spawn(poll.instrument(span))));
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
