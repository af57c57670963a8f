//! `derm predict`: the next window's graph mix from a trained model, or (`--evaluate`) the
//! accuracy table of the LSTM and the baselines on a time split of windows.json files, for
//! one history length or (`--sweep-window`, [`sweep`]) several.

mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::train::LstmArgs;
use crate::graph::Window;
use crate::pipeline::WindowsFile;
use crate::predict::evaluate::{self, Row};
use crate::predict::{Arima, Error, Ewma, Last, LoadMix, MovingAverage, Predictor, Trend};

/// Why LSTM commands fail in a build without libtorch.
pub(crate) const NO_LSTM: &str = "this derm was built without the `lstm` feature (libtorch); build it with \
     `hack/with-libtorch.sh cargo build --release -p derm-core --features lstm`";

/// Model names of `--models`.
const MODELS: [&str; 8] = ["lstm", "lstm-noattn", "arima", "trend", "loadmix", "ewma", "ma", "last"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// windows.json files (time order within each file).
    #[arg(long, num_args = 1.., required = true)]
    windows: Vec<PathBuf>,
    /// Weights file from `derm train` (its `.json` sidecar next to it).
    #[arg(long, required_unless_present = "evaluate")]
    model: Option<PathBuf>,
    /// Compare predictors: fit on the first --train-fraction of each file, score the rest
    /// --horizon windows ahead (the LSTMs are trained for that horizon).
    #[arg(long)]
    evaluate: bool,
    /// Predictors to compare.
    #[arg(long, value_delimiter = ',', default_value = "lstm,lstm-noattn,arima,trend,ewma,ma,last", value_parser = MODELS)]
    models: Vec<String>,
    #[arg(long, default_value_t = 0.7)]
    train_fraction: f64,
    /// A scored window whose mix is more than this TV distance from the previous window's
    /// counts as a mix change (reported separately).
    #[arg(long, default_value_t = crate::predict::metrics::CHANGED_TV)]
    changed_tv: f64,
    /// Windows over which the recent prediction error is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    recent: u64,
    /// With --evaluate: truth.json files (`derm simulate --windows-only` writes one next to
    /// its windows.json), one per --windows file in the same order; adds a `truth` row, the
    /// mixes the windows were drawn from scored as a prediction (the sampling-noise ceiling).
    #[arg(long, num_args = 1.., requires = "evaluate")]
    truth: Vec<PathBuf>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    json: bool,
    /// With --evaluate: repeat it for each history length l (`1..10` or `1,2,5`), the LSTMs
    /// trained with `--window l`, the moving average over l windows and ARIMA of order l;
    /// one accuracy table, models by l.
    #[arg(long, requires = "evaluate", value_parser = sweep::parse_lengths)]
    sweep_window: Option<sweep::Lengths>,
    #[command(flatten)]
    lstm: LstmArgs,
}

/// Read windows.json files, naming the file in errors; each must hold at least one window.
pub(crate) fn read_windows(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<Window>>> {
    paths
        .iter()
        .map(|p| {
            let file: WindowsFile = super::read_json(p)?;
            if file.windows.is_empty() {
                anyhow::bail!("{}: no windows", p.display());
            }
            if file.windows.windows(2).any(|w| w[1].start_s < w[0].start_s) {
                anyhow::bail!("{}: windows are not in time order", p.display());
            }
            Ok(file.windows)
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let series = read_windows(&args.windows)?;
    if let Some(lengths) = &args.sweep_window {
        return sweep::run(&args, &series, lengths);
    }
    if args.evaluate {
        return evaluate_all(&args, &series);
    }
    let path = args.model.as_deref().context("--model is required without --evaluate")?;
    let last = series.last().map(Vec::as_slice).unwrap_or_default();
    predict(path, last, &args)
}

#[cfg(not(feature = "lstm"))]
fn predict(_: &Path, _: &[Window], _: &Args) -> anyhow::Result<()> {
    anyhow::bail!("{NO_LSTM}")
}

#[cfg(feature = "lstm")]
fn predict(path: &Path, windows: &[Window], args: &Args) -> anyhow::Result<()> {
    use crate::predict::{lstm::Lstm, metrics};
    /// A share of requests in unseen graphs above this is reported as a reason to retrain.
    const OTHER_WARN: f64 = 0.1;
    tch::set_num_threads(args.lstm.threads);
    let model = Lstm::load(path, !args.lstm.cpu)?;
    let meta = model.meta().context("model without metadata")?;
    let recent_windows = &windows[windows.len().saturating_sub(args.recent as usize + meta.window)..];
    let other = meta.check_catalog(recent_windows)?;
    if other > OTHER_WARN {
        eprintln!(
            "warning: {:.1}% of recent requests are in graphs the model never saw (predicted as `other`); \
             retrain with derm train",
            100.0 * other
        );
    }
    let next = model.predict(windows)?;
    let started = std::time::Instant::now();
    let recent_tv = metrics::recent_error(&model, recent_windows, args.recent as usize, meta.window, meta.horizon);
    // One prediction per recent window that has a full history before it.
    let steps = recent_windows.len().saturating_sub(meta.window).clamp(1, args.recent as usize);
    let predict_us = 1e6 * started.elapsed().as_secs_f64() / steps as f64;
    let out = serde_json::json!({
        "model": path.display().to_string(),
        "next": next,
        "unseen_share": other,
        "recent_tv": recent_tv,
        "recent_windows": args.recent,
        "predict_us": predict_us,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// A baseline by name; `window` sets the moving average's span and ARIMA's order (default
/// 5 and 3).
fn baseline(name: &str, horizon: usize, window: Option<usize>) -> Result<Box<dyn Predictor>, Error> {
    Ok(match name {
        "arima" => Box::new(Arima::new(window.unwrap_or(3))?),
        "trend" => Box::new(Trend::ahead(horizon)?),
        "loadmix" => Box::new(LoadMix::ahead(horizon)?),
        "ewma" => Box::new(Ewma::new(0.5)?),
        "ma" => Box::new(MovingAverage::new(window.unwrap_or(5))?),
        _ => Box::new(Last),
    })
}

/// One model's row: an LSTM trained with `lstm`, or a baseline (`window`: see [`baseline`]).
/// `None`: an LSTM in a build without libtorch.
fn model_row(
    args: &Args,
    lstm: &LstmArgs,
    series: &[Vec<Window>],
    name: &str,
    window: Option<usize>,
) -> anyhow::Result<Option<Row>> {
    Ok(match name {
        "lstm" | "lstm-noattn" => lstm_row(args, lstm, series, name == "lstm")?,
        _ => {
            let ahead = args.lstm.horizon as usize;
            let mut make = || baseline(name, ahead, window);
            Some(evaluate::evaluate(&mut make, series, args.train_fraction, args.changed_tv, ahead)?)
        }
    })
}

/// `--models` without repeats, in order.
fn model_names(args: &Args) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for m in &args.models {
        if !names.contains(&m.as_str()) {
            names.push(m);
        }
    }
    names
}

fn evaluate_all(args: &Args, series: &[Vec<Window>]) -> anyhow::Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut noise_ceiling = None;
    if !args.truth.is_empty() {
        if args.truth.len() != series.len() {
            anyhow::bail!(
                "--truth: {} files for {} --windows files (one per windows file, in the same order)",
                args.truth.len(),
                series.len()
            );
        }
        let truth = read_windows(&args.truth)?;
        let ahead = args.lstm.horizon as usize;
        let mut next = truth.iter();
        let mut make = || -> Result<Box<dyn Predictor>, Error> {
            let t = next.next().map(Vec::as_slice).unwrap_or_default();
            Ok(Box::new(evaluate::Known::new(t, ahead)))
        };
        rows.push(evaluate::evaluate(&mut make, series, args.train_fraction, args.changed_tv, ahead)?);
        let ceiling = evaluate::noise_ceiling(series, &truth, args.train_fraction)?;
        notes.push(format!(
            "sampling noise: no predictor's expected accuracy on these windows exceeds {:.2}% (binomial counts around the truth)",
            100.0 * ceiling
        ));
        noise_ceiling = Some(ceiling);
    }
    for name in model_names(args) {
        let Some(row) = model_row(args, &args.lstm, series, name, None)? else {
            notes.push(format!("{name}: {NO_LSTM}"));
            continue;
        };
        if !row.fitted.is_empty() {
            notes.push(format!("{name}: fitted {}", row.fitted.join("; ")));
        }
        rows.push(row);
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    if args.json {
        let models: BTreeMap<&str, serde_json::Value> = rows
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    serde_json::json!({
                        "accuracy": r.all.accuracy,
                        "kl": r.all.kl,
                        "windows": r.all.windows,
                        "changed": r.changed,
                        "predict_us": r.predict_us,
                    }),
                )
            })
            .collect();
        let out = serde_json::json!({
            "models": models,
            "train_fraction": args.train_fraction,
            "changed_tv": args.changed_tv,
            "notes": notes,
            "noise_ceiling": noise_ceiling,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", evaluate::markdown(&rows));
    }
    Ok(())
}

#[cfg(not(feature = "lstm"))]
fn lstm_row(_: &Args, _: &LstmArgs, _: &[Vec<Window>], _: bool) -> anyhow::Result<Option<Row>> {
    Ok(None)
}

#[cfg(feature = "lstm")]
fn lstm_row(args: &Args, lstm: &LstmArgs, series: &[Vec<Window>], attention: bool) -> anyhow::Result<Option<Row>> {
    let started = std::time::Instant::now();
    let mut make = || -> Result<Box<dyn Predictor>, Error> {
        // `evaluate` hands each series' training range to `fit`; train here with progress.
        Ok(Box::new(Trained { args: lstm.clone(), attention, model: None }))
    };
    let row = evaluate::evaluate(&mut make, series, args.train_fraction, args.changed_tv, lstm.horizon as usize)?;
    eprintln!("{}: trained and scored in {:.1} s", row.name, started.elapsed().as_secs_f64());
    Ok(Some(row))
}

/// An LSTM that trains with the CLI's progress bar when `evaluate` fits it.
#[cfg(feature = "lstm")]
struct Trained {
    args: LstmArgs,
    attention: bool,
    model: Option<crate::predict::lstm::Lstm>,
}

#[cfg(feature = "lstm")]
impl std::fmt::Debug for Trained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trained").field("attention", &self.attention).finish_non_exhaustive()
    }
}

#[cfg(feature = "lstm")]
impl Predictor for Trained {
    fn name(&self) -> &str {
        if self.attention { "lstm" } else { "lstm-noattn" }
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        let series = vec![history.to_vec()];
        let model = super::train::fit(&series, &self.args, self.attention)
            .map_err(|e| Error::Model { path: "(training)".into(), detail: format!("{e:#}") })?;
        self.model = Some(model);
        Ok(())
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        self.model.as_ref().ok_or(Error::NotFitted { what: "lstm: predict" })?.predict(recent)
    }
}
