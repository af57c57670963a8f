//! `derm simulate --predictor lstm` on a short scenario (feature `lstm`): the `derm` policy
//! plans with an attention LSTM trained on windows of another seed, and a model of another
//! application is refused with an error naming `--model`. Without the feature, asking for the
//! LSTM is a clear error.
#[cfg(feature = "lstm")]
mod with_lstm {
    use std::path::Path;

    use derm_core::graph::Window;
    use derm_core::predict::lstm::{Config as LstmConfig, Lstm};
    use derm_core::predict::{OTHER, Predictor as _};
    use derm_core::sim::eval::{self, Config};
    use derm_core::sim::policy::{Name, Policy as _};
    use derm_core::sim::{Scenario, run, windows};

    /// A small model on 300 ground-truth windows of seed 7 (the run below uses seed 1).
    fn train(dir: &Path, rename: bool) -> std::path::PathBuf {
        let scenario = Scenario::named("trainticket").unwrap_or_else(|e| panic!("{e}"));
        let mut ws: Vec<Window> = windows::sample(&scenario, &scenario.pattern, 300, 30, scenario.sampling, 7)
            .unwrap_or_else(|e| panic!("{e}"));
        if rename {
            for w in &mut ws {
                w.graph_mix = w.graph_mix.iter().map(|(g, s)| (format!("foreign-{g}"), *s)).collect();
            }
        }
        let config = LstmConfig { window: 2, epochs: 2, cuda: false, ..LstmConfig::default() };
        let mut model = Lstm::new(config).unwrap_or_else(|e| panic!("{e}"));
        model.fit(&ws).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(if rename { "foreign.ot" } else { "model.ot" });
        model.save(&path).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn small(model: &Path) -> Config {
        Config {
            scenario: "trainticket".into(),
            policies: vec![Name::Derm],
            duration_s: 300.0,
            warmup_s: 60,
            profile_levels: 4,
            profile_level_s: 20,
            refit_every: 2,
            predictor: "lstm".into(),
            model: Some(model.to_owned()),
            ..Config::default()
        }
    }

    #[test]
    fn derm_plans_with_the_lstm_mix() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = train(dir.path(), false);
        let catalog = Lstm::load(&path, false).unwrap_or_else(|e| panic!("{e}")).meta().map(|m| m.graphs.len());
        let config = small(&path);
        let prepared = eval::prepare(&config, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
        let mut policy = prepared.derm_policy_with(Name::Derm, "lstm", Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        let outcome = run::run(&prepared.scenario, &prepared.pattern, &mut policy, &prepared.run, &|_| {}, None);
        let stats = policy.stats();
        assert!(stats.solves > 0, "{stats:?}");
        assert!(outcome.summary.mean_containers > 0.0);
        // The planned mix is the LSTM's: every catalog graph gets a (softmax) share, which no
        // window-based baseline gives to graphs absent from recent windows; "other" is resolved.
        let insight = policy.insight().unwrap_or_else(|| panic!("no plan"));
        assert!(!insight.mix.contains_key(OTHER), "{:?}", insight.mix);
        assert!(Some(insight.mix.len()) >= catalog, "{} graphs planned, catalog {catalog:?}", insight.mix.len());
        assert!((insight.mix.values().sum::<f64>() - 1.0).abs() < 1e-9);

        // The whole evaluation reports the predictor and its model.
        let e = eval::evaluate(&config, &|_| {}, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.report.predictor, "lstm");
        assert_eq!(e.report.model.as_deref(), Some(path.display().to_string().as_str()));
        assert!(e.report.policies["derm"].summary.stats.solves > 0);
    }

    #[test]
    fn lstm_errors_name_the_model_flag() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let foreign = train(dir.path(), true);
        let err = eval::evaluate(&small(&foreign), &|_| {}, None).unwrap_err().to_string();
        assert!(err.contains("--model") && err.contains("catalog"), "{err}");
        let missing = eval::evaluate(&small(&dir.path().join("absent.ot")), &|_| {}, None).unwrap_err().to_string();
        assert!(missing.contains("--model") && missing.contains("absent"), "{missing}");
        let none = Config { model: None, ..small(&foreign) };
        assert!(none.validate().unwrap_err().to_string().contains("--model"));
        let stray = Config { predictor: "ewma".into(), ..small(&foreign) };
        assert!(stray.validate().unwrap_err().to_string().contains("--model"));
    }
}

#[cfg(not(feature = "lstm"))]
#[test]
fn without_the_feature_lstm_is_a_clear_error() {
    use derm_core::sim::eval::Config;
    let config = Config { predictor: "lstm".into(), model: Some("model.ot".into()), ..Config::default() };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("--predictor") && err.contains("`lstm` feature"), "{err}");
}
