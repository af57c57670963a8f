//! The DermApp watch that every adapter replica runs: status -> [`Store`].
//!
//! A kube-runtime reflector keeps every DermApp in memory; each change republishes the whole
//! snapshot ([`crate::status::snapshot`]). When kube-apiserver goes away the watcher retries
//! with backoff and the store keeps the last values (they age from their solve time, see
//! [`crate::status`]); a re-list after a restart replaces the cache only once it completed, so
//! no value disappears in between.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::admin::Health;
use crate::crd::DermApp;
use crate::metrics::Store;

/// Watches DermApps in every namespace (or one) and publishes their status into `store`.
/// Runs until the task is dropped; errors are logged and retried.
pub async fn run(client: Client, namespace: Option<String>, store: Arc<Store>, health: Arc<Health>) {
    let api: Api<DermApp> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            // The cache swaps in a re-list only at InitDone, so publishing then (and on each
            // later change) never shows a half-listed set.
            Ok(watcher::Event::InitDone) => {
                publish(&reader, &store);
                health.mark_synced();
                tracing::info!(apps = reader.state().len(), "DermApps listed");
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => publish(&reader, &store),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::warn!(error = %e, "DermApp watch error; retrying with backoff"),
        }
    }
}

fn publish(reader: &Cache<DermApp>, store: &Store) {
    let apps = reader.state();
    store.publish(crate::status::snapshot(apps.iter().map(|a| a.as_ref())));
}
