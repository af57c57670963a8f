//! Windows sampled straight from a scenario's ground truth, without the event simulation:
//! each second, a Poisson number of sampled requests at the pattern's rate times the sampling
//! probability, each with a type, an argument and the graph that type takes at that load. The
//! result has the shape `derm profile` writes (load, graph mix, argument mix), fast enough for
//! the tens of thousands of windows that training the graph-mix predictor needs. Containers and
//! per-service calls stay empty: they come only from traces.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};

use super::{Error, Pattern, Scenario};
use crate::graph::Window;

/// `count` consecutive windows of `window_s` seconds from scenario time 0, sampling
/// probability `sampling` in (0, 1].
pub fn sample(
    scenario: &Scenario,
    pattern: &Pattern,
    count: usize,
    window_s: u32,
    sampling: f64,
    seed: u64,
) -> Result<Vec<Window>, Error> {
    check_window(window_s)?;
    if !(sampling > 0.0 && sampling <= 1.0) {
        return Err(Error::Invalid { field: "--sampling".into(), value: sampling.to_string(), expected: "(0, 1]" });
    }
    pattern.validate()?;
    let app = &scenario.app;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let start = k as f64 * f64::from(window_s);
        let mut graphs = vec![0u64; app.graphs.len()];
        let mut args: BTreeMap<String, u64> = BTreeMap::new();
        let mut n = 0u64;
        for s in 0..window_s {
            let t = start + f64::from(s) + 0.5;
            let rps = pattern.rps(t);
            let mean = rps * sampling;
            if mean <= 0.0 {
                continue;
            }
            let arrivals = Poisson::new(mean).map(|p| p.sample(&mut rng) as u64).unwrap_or(0);
            let weights = app.type_weights(t, rps);
            let total: f64 = weights.iter().sum();
            if total <= 0.0 {
                continue;
            }
            let arg_weights: Vec<Option<Vec<f64>>> =
                app.types.iter().map(|ty| ty.argument.as_ref().map(|a| a.weights(t))).collect();
            for _ in 0..arrivals {
                let ty = pick(&weights, total, &mut rng);
                let arg = arg_weights[ty].as_ref().map_or(0, |w| pick(w, 1.0, &mut rng));
                graphs[app.graph_of(ty, arg, rps)] += 1;
                for tag in &scenario.arg_tags {
                    let class = match &app.types[ty].argument {
                        Some(a) if a.tag == *tag => format!("{tag}={}", a.values[arg]),
                        _ => format!("{tag}=none"),
                    };
                    *args.entry(class).or_insert(0) += 1;
                }
                n += 1;
            }
        }
        let share = |c: u64| if n > 0 { c as f64 / n as f64 } else { 0.0 };
        out.push(Window {
            start_s: start as i64,
            duration_s: window_s,
            load_rps: n as f64 / sampling / f64::from(window_s),
            requests: n,
            graph_mix: app
                .ids
                .iter()
                .zip(&graphs)
                .filter(|(_, c)| **c > 0)
                .map(|(id, c)| (id.clone(), share(*c)))
                .collect(),
            arg_mix: args.into_iter().map(|(class, c)| (class, share(c))).collect(),
            containers: BTreeMap::new(),
            calls_rps: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// The distributions [`sample`] draws its windows from: for each of the same `count` windows,
/// the scenario's true graph mix averaged over the window by load ([`super::App::mean_mix`],
/// per second as [`sample`] draws), and the true mean load. Argument mixes, counts and
/// per-service fields stay empty. Scoring these as a prediction of the sampled windows
/// measures the sampling noise that no predictor can remove (`derm predict --truth`).
pub fn truth(scenario: &Scenario, pattern: &Pattern, count: usize, window_s: u32) -> Result<Vec<Window>, Error> {
    check_window(window_s)?;
    pattern.validate()?;
    let app = &scenario.app;
    let out = (0..count).map(|k| {
        let (from, to) = (k as f64 * f64::from(window_s), (k + 1) as f64 * f64::from(window_s));
        let graph_mix = app.mean_mix_by_id(pattern, from, to);
        let load = (0..window_s).map(|s| pattern.rps(from + f64::from(s) + 0.5)).sum::<f64>() / f64::from(window_s);
        Window {
            start_s: from as i64,
            duration_s: window_s,
            load_rps: load,
            requests: 0,
            graph_mix,
            arg_mix: BTreeMap::new(),
            containers: BTreeMap::new(),
            calls_rps: BTreeMap::new(),
        }
    });
    Ok(out.collect())
}

/// Windows must last at least a second.
fn check_window(window_s: u32) -> Result<(), Error> {
    if window_s == 0 {
        return Err(Error::Invalid { field: "--interval-s".into(), value: "0".into(), expected: "at least 1" });
    }
    Ok(())
}

/// An index drawn with probability `weights[i] / total`.
fn pick(weights: &[f64], total: f64, rng: &mut impl Rng) -> usize {
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_true_mix_and_load() {
        let scenario = Scenario::named("trainticket").unwrap_or_else(|e| panic!("{e}"));
        let pattern = scenario.pattern.clone();
        let ws = sample(&scenario, &pattern, 40, 30, 1.0, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws.len(), 40);
        for w in &ws {
            let sum: f64 = w.graph_mix.values().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{sum}");
            assert!((w.arg_mix.values().sum::<f64>() - 1.0).abs() < 1e-9);
            let t = w.start_s as f64 + 15.0;
            let truth_rps = pattern.rps(t);
            assert!((w.load_rps - truth_rps).abs() < 0.1 * truth_rps + 5.0, "{} vs {truth_rps}", w.load_rps);
            // Sampled mix within a few points of the true mix, averaged over the window by load.
            let truth = scenario.app.mean_mix(&pattern, w.start_s as f64, w.start_s as f64 + 30.0);
            let tv: f64 = 0.5
                * scenario
                    .app
                    .ids
                    .iter()
                    .zip(&truth)
                    .map(|(id, p)| (w.graph_mix.get(id).copied().unwrap_or(0.0) - p).abs())
                    .sum::<f64>();
            assert!(tv < 0.08, "window {}: TV {tv} from the true mix", w.start_s);
        }
        let same = sample(&scenario, &pattern, 40, 30, 1.0, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws, same, "seeded");
    }

    #[test]
    fn truth_is_what_the_windows_are_drawn_from() {
        let scenario = Scenario::named("trainticket").unwrap_or_else(|e| panic!("{e}"));
        let pattern = scenario.pattern.clone();
        let truth = super::truth(&scenario, &pattern, 4, 30).unwrap_or_else(|e| panic!("{e}"));
        // Traced in full over a long window the sample converges on the truth.
        let long = sample(&scenario, &pattern, 1, 600, 1.0, 3).unwrap_or_else(|e| panic!("{e}"));
        let long_truth = super::truth(&scenario, &pattern, 1, 600).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((truth.len(), truth[3].start_s), (4, 90));
        for w in &truth {
            assert!((w.graph_mix.values().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!((w.load_rps - pattern.rps(w.start_s as f64 + 15.0)).abs() < 0.05 * w.load_rps);
        }
        let tv = crate::predict::metrics::tv(&long[0].graph_mix, &long_truth[0].graph_mix);
        // About 100,000 requests over 20 graphs: a multinomial's TV is near 0.01.
        assert!(tv < 0.02, "TV {tv}");
        assert!(super::truth(&scenario, &pattern, 1, 0).unwrap_err().to_string().contains("--interval-s"));
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let scenario = Scenario::named("alibaba").unwrap_or_else(|e| panic!("{e}"));
        let p = scenario.pattern.clone();
        assert!(sample(&scenario, &p, 1, 0, 0.1, 1).unwrap_err().to_string().contains("--interval-s"));
        assert!(sample(&scenario, &p, 1, 30, 0.0, 1).unwrap_err().to_string().contains("--sampling"));
    }
}
