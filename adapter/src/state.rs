//! Learned state of each DermApp's online loop in a ConfigMap `derm-state-<app>` next to the
//! DermApp (key `state.json`, an [`online::State`]), so that an adapter restart or a new leader
//! starts from the learned profiles and graph catalog instead of from nothing.
//!
//! Each save is one server-side apply of the whole object: a reader sees the previous state or
//! the new one, never a mix. The ConfigMap is owned by the DermApp (deleted with it). States
//! over [`MAX_BYTES`] drop their oldest windows first, then the catalog's graphs of least
//! long-run weight (a ConfigMap holds at most 1 MiB; an oversized one would not be stored at
//! all, and a restart would start from nothing).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};

use crate::crd::DermApp;
use crate::online::{STATE_VERSION, State};

/// Largest `state.json` written.
pub const MAX_BYTES: usize = 900 * 1024;
const KEY: &str = "state.json";
const MANAGER: &str = "derm-adapter";

/// Name of the ConfigMap of app `name`.
pub fn name(app: &str) -> String {
    format!("derm-state-{app}")
}

/// The stored state of `app`, if any usable one exists (a missing, unreadable or other-version
/// state is `None`, logged: the loop then learns from scratch).
pub async fn load(client: &Client, namespace: &str, app: &str) -> Option<State> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = match api.get_opt(&name(app)).await {
        Ok(cm) => cm?,
        Err(e) => {
            tracing::warn!(app, namespace, error = %e, "cannot read the stored state");
            return None;
        }
    };
    let text = cm.data.as_ref()?.get(KEY)?;
    match serde_json::from_str::<State>(text) {
        Ok(s) if s.version == STATE_VERSION => Some(s),
        Ok(s) => {
            tracing::warn!(app, namespace, version = s.version, "stored state of another version; ignored");
            None
        }
        Err(e) => {
            tracing::warn!(app, namespace, error = %e, "stored state unreadable; ignored");
            None
        }
    }
}

/// Stores `state` for `app` (trimmed to [`MAX_BYTES`]).
pub async fn save(client: &Client, app: &DermApp, state: &State) -> Result<(), kube::Error> {
    let (Some(namespace), Some(app_name)) = (app.meta().namespace.as_deref(), app.meta().name.as_deref()) else {
        return Ok(());
    };
    let text = encode(state);
    let owner = app.controller_owner_ref(&()).map(|mut o: OwnerReference| {
        o.block_owner_deletion = Some(false);
        o
    });
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name(app_name)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned())])),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), text)])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    api.patch(&name(app_name), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cm)).await?;
    Ok(())
}

/// JSON of `state`, dropping the oldest windows until it fits, then the catalog's graphs of
/// least long-run weight (profiles are never dropped: they are what a restart needs most).
fn encode(state: &State) -> String {
    let mut state = state.clone();
    loop {
        let text = serde_json::to_string(&state).unwrap_or_default();
        if text.len() <= MAX_BYTES || (state.windows.is_empty() && state.catalog.is_empty()) {
            return text;
        }
        if !state.windows.is_empty() {
            let drop = state.windows.len().div_ceil(2);
            state.windows.drain(..drop);
            continue;
        }
        let weight = |id: &str| state.long_run.weights.get(id).copied().unwrap_or(0.0);
        let mut ids: Vec<(f64, String)> = state.catalog.keys().map(|id| (weight(id), id.clone())).collect();
        ids.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for (_, id) in ids.into_iter().take(state.catalog.len().div_ceil(2)) {
            state.catalog.remove(&id);
            state.long_run.weights.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use derm_core::graph::Node;
    use derm_core::graph::window::Window;

    use crate::online::LongRun;

    use super::*;

    #[test]
    fn oversized_states_lose_old_windows_first() {
        let window = |i: i64| Window {
            start_s: i,
            duration_s: 30,
            load_rps: 1.0,
            requests: 1,
            // About 9 KB per window: 200 windows are twice the limit.
            graph_mix: (0..400).map(|g| (format!("graph-{g:04}-{i}"), 0.0025)).collect(),
            arg_mix: BTreeMap::new(),
            containers: BTreeMap::new(),
            calls_rps: BTreeMap::new(),
        };
        let state = State { version: STATE_VERSION, windows: (0..200).map(window).collect(), ..State::default() };
        let text = encode(&state);
        assert!(text.len() <= MAX_BYTES);
        let back: State = serde_json::from_str(&text).unwrap();
        assert!(!back.windows.is_empty() && back.windows.len() < 200);
        assert_eq!(back.windows.last().unwrap().start_s, 199, "the newest window stays");
        let small = State { version: STATE_VERSION, windows: (0..3).map(window).collect(), ..State::default() };
        assert_eq!(serde_json::from_str::<State>(&encode(&small)).unwrap(), small);
    }

    #[test]
    fn a_catalog_too_large_alone_loses_its_lightest_graphs() {
        // A call tree of 120 calls per graph, about 3 KB each: 400 graphs are 1.4x the limit.
        let tree = |g: usize| {
            let mut root = Node::leaf(format!("svc-{g}-0"));
            for k in 1..120 {
                root.stages.push(vec![Node::leaf(format!("svc-{g}-{k}"))]);
            }
            root
        };
        let ids: Vec<String> = (0..400).map(|g| format!("graph-{g:04}")).collect();
        let state = State {
            version: STATE_VERSION,
            catalog: ids.iter().enumerate().map(|(g, id)| (id.clone(), tree(g))).collect(),
            // The weight grows with the index: the last graphs matter most.
            long_run: LongRun {
                weights: ids.iter().enumerate().map(|(g, id)| (id.clone(), g as f64)).collect(),
                requests: 1.0,
            },
            ..State::default()
        };
        assert!(serde_json::to_string(&state).unwrap().len() > MAX_BYTES);
        let text = encode(&state);
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let back: State = serde_json::from_str(&text).unwrap();
        assert!(!back.catalog.is_empty() && back.catalog.len() < 400);
        assert!(back.catalog.contains_key("graph-0399") && !back.catalog.contains_key("graph-0000"));
        assert!(back.catalog.keys().all(|id| back.long_run.weights.contains_key(id)));
    }
}
