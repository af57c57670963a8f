//! Trained graph-mix models for the online loop (`--predictor-model NAMESPACE/NAME=PATH`).
//!
//! A model is the attention LSTM that `derm train` wrote for one application (its weights and
//! metadata sidecar). It needs libtorch, so it loads only in a derm-adapter built with the
//! `lstm` feature (`hack/with-libtorch.sh cargo build --release -p derm-adapter --features
//! lstm`); the default build refuses the flag with that instruction. The online loop hedges a
//! model against the trend forecast ([`crate::online::Hedge`]); a model trained on another application's
//! graphs is scored badly and not used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use derm_core::predict::Predictor;

/// One `--predictor-model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelArg {
    pub namespace: String,
    pub name: String,
    pub path: PathBuf,
}

/// Parses `NAMESPACE/NAME=PATH`.
pub fn parse(value: &str) -> Result<ModelArg, String> {
    let bad = || format!("expected NAMESPACE/NAME=PATH (a DermApp and a model file from derm train), got {value:?}");
    let (app, path) = value.split_once('=').ok_or_else(bad)?;
    let (namespace, name) = app.split_once('/').ok_or_else(bad)?;
    if namespace.is_empty() || name.is_empty() || path.is_empty() {
        return Err(bad());
    }
    Ok(ModelArg { namespace: namespace.into(), name: name.into(), path: path.into() })
}

/// Models by DermApp (namespace, name).
#[derive(Clone, Default)]
pub struct Models(pub BTreeMap<(String, String), Arc<dyn Predictor>>);

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, m)| (k, m.name()))).finish()
    }
}

/// Loads every model named on the command line.
pub fn load_all(args: &[ModelArg]) -> anyhow::Result<Models> {
    let mut out = BTreeMap::new();
    for a in args {
        let model = load(&a.path)?;
        tracing::info!(app = %a.name, namespace = %a.namespace, model = %a.path.display(), "predictor model loaded");
        out.insert((a.namespace.clone(), a.name.clone()), model);
    }
    Ok(Models(out))
}

/// The attention LSTM in `path`, on the CPU.
#[cfg(feature = "lstm")]
pub fn load(path: &Path) -> anyhow::Result<Arc<dyn Predictor>> {
    let model = derm_core::predict::lstm::Lstm::load(path, false)
        .map_err(|e| anyhow::anyhow!("--predictor-model {}: {e}", path.display()))?;
    // The loop plans LAG windows ahead of traced windows and one ahead of counted ones
    // (`spec.callCounts`); the hedge scores the model at the app's horizon either way.
    let horizon = model.meta().map_or(1, |m| m.horizon);
    if horizon != crate::online::LAG && horizon != 1 {
        tracing::warn!(
            model = %path.display(),
            horizon,
            "the model predicts {horizon} window(s) ahead, the loop plans {} ahead (1 with spec.callCounts): \
             retrain with derm train --horizon {} (or 1)",
            crate::online::LAG,
            crate::online::LAG
        );
    }
    Ok(Arc::new(model))
}

/// Without libtorch no model can be loaded: say how to get a build that can.
#[cfg(not(feature = "lstm"))]
pub fn load(path: &Path) -> anyhow::Result<Arc<dyn Predictor>> {
    anyhow::bail!(
        "--predictor-model {}: this derm-adapter was built without the `lstm` feature (libtorch); \
         build it with `hack/with-libtorch.sh cargo build --release -p derm-adapter --features lstm`",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_the_app_and_the_file() {
        let a = parse("shop/ticket=/models/ticket.ot").expect("valid");
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("shop", "ticket"));
        assert_eq!(a.path, PathBuf::from("/models/ticket.ot"));
        for bad in ["ticket=/m.ot", "shop/ticket", "/ticket=m.ot", "shop/=m.ot", "shop/ticket="] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("NAMESPACE/NAME=PATH"), "{e}");
        }
    }

    #[cfg(not(feature = "lstm"))]
    #[test]
    fn without_libtorch_the_flag_says_how_to_build() {
        let e = load(Path::new("m.ot")).err().expect("refused").to_string();
        assert!(e.contains("--features lstm") && e.contains("m.ot"), "{e}");
    }

    /// A model from `derm train`'s code path beats the trend where the mix switches after load
    /// spikes, so the online loop uses it (libtorch: `make unit-lstm`).
    #[cfg(feature = "lstm")]
    #[test]
    fn a_trained_lstm_is_loaded_and_chosen_over_the_trend() {
        use derm_core::graph::Window;
        use derm_core::predict::lstm::{Config, Lstm};
        let series: Vec<Window> = (0..240i64)
            .map(|t| {
                let b = if t % 4 == 1 { 0.9 } else { 0.1 };
                Window {
                    start_s: 30 * t,
                    duration_s: 30,
                    load_rps: if t % 4 == 0 { 200.0 } else { 50.0 },
                    requests: 100,
                    graph_mix: BTreeMap::from([("a".to_owned(), 1.0 - b), ("b".to_owned(), b)]),
                    arg_mix: BTreeMap::new(),
                    containers: BTreeMap::new(),
                    calls_rps: BTreeMap::new(),
                }
            })
            .collect();
        let config = Config {
            window: 3,
            epochs: 60,
            batch: 32,
            learning_rate: 5e-3,
            patience: 60,
            cuda: false,
            // The window the loop plans for.
            horizon: crate::online::LAG,
            ..Config::default()
        };
        let mut lstm = Lstm::new(config).expect("config");
        lstm.fit(&series[..200]).expect("trains");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.ot");
        lstm.save(&path).expect("saves");

        let models = load_all(&[parse(&format!("shop/ticket={}", path.display())).expect("valid")]).expect("loads");
        let model = models.0[&("shop".to_owned(), "ticket".to_owned())].clone();
        let choice = crate::online::Hedge::new(Some(model)).predict(&series, 20, crate::online::LAG).expect("predicts");
        assert_eq!(choice.predictor, "lstm", "{choice:?}");
        assert!(choice.recent_tv.is_some_and(|tv| tv < 0.1), "{choice:?}");
        // The newest window is t = 239; the planned one, t = 241, is a spike of b.
        assert!(choice.mix["b"] > 0.7, "{choice:?}");
    }
}
