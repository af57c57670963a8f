//! Background tasks, one per DermApp with a given kind of source (the Jaeger and the
//! call-count pollers): started for new apps, restarted when an app's source changes,
//! stopped for apps gone or invalid, all stopped when this replica stops leading.

use std::collections::BTreeMap;

use kube::ResourceExt as _;
use tokio::task::JoinHandle;

use crate::crd::{DermApp, DermAppSpec};

/// An app's (namespace, name).
pub type Key = (String, String);

/// The running tasks with the source each was started for.
#[derive(Debug)]
pub struct Tasks<S> {
    running: BTreeMap<Key, (S, JoinHandle<()>)>,
}

impl<S> Default for Tasks<S> {
    fn default() -> Self {
        Tasks { running: BTreeMap::new() }
    }
}

impl<S: PartialEq + Clone> Tasks<S> {
    /// Runs one task per valid app in `list` whose spec has a source (`of`); `start` spawns
    /// it. A task whose source changed is restarted; the others' are stopped.
    pub fn sync(
        &mut self,
        list: &[DermApp],
        of: impl Fn(&DermAppSpec) -> Option<S>,
        mut start: impl FnMut(&Key, S) -> JoinHandle<()>,
    ) {
        let mut want = BTreeMap::new();
        for app in list {
            if let Some(source) = of(&app.spec)
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
            if let std::collections::btree_map::Entry::Vacant(v) = self.running.entry(key) {
                let task = start(v.key(), source.clone());
                v.insert((source, task));
            }
        }
    }

    /// Stops every task.
    pub fn clear(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.running) {
            task.abort();
        }
    }
}

impl<S> Drop for Tasks<S> {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.running) {
            task.abort();
        }
    }
}
