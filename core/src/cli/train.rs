//! `derm train`: fit the attention LSTM graph-mix predictor on windows.json files and write
//! `model.ot` with its `model.json` sidecar. Needs the `lstm` feature (libtorch).

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// windows.json files (from `derm profile` or `derm simulate --windows-only`); each is
    /// one time series, no sample spans two files.
    #[arg(long, num_args = 1.., required = true)]
    windows: Vec<PathBuf>,
    #[command(flatten)]
    lstm: LstmArgs,
    /// Weights file; the metadata sidecar goes next to it with extension `.json`.
    #[arg(long, short = 'o')]
    out: PathBuf,
}

/// Settings of LSTM training, shared with `derm predict --evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LstmArgs {
    /// Maximum epochs (early stopping may end sooner).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// Windows of history per prediction (l).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub window: u64,
    /// Which window to predict after the history's last: 1 the next; 2 for a loop whose
    /// newest window is one interval old when it plans (`derm simulate`'s profile-based
    /// policies ingest sampled traces one interval late).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub horizon: u64,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 5)]
    pub patience: u64,
    /// Train the ablation without attention.
    #[arg(long)]
    pub no_attention: bool,
    /// Predict the mix from scratch instead of correcting a learned blend of the recent
    /// windows' mixes (the network before session 5).
    #[arg(long)]
    pub no_anchor: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stay on the CPU even when CUDA is available.
    #[arg(long)]
    pub cpu: bool,
    /// libtorch CPU threads. 1 by default: this model's operations are small, and on a busy
    /// machine two threads spinning for each other made training and inference 10 to 50
    /// times slower than one (README, Graph-mix prediction).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub threads: i32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let series = super::predict::read_windows(&args.windows)?;
    imp::train(&series, &args.lstm, &args.out)
}

#[cfg(not(feature = "lstm"))]
mod imp {
    pub(super) fn train(
        _: &[Vec<crate::graph::Window>],
        _: &super::LstmArgs,
        _: &std::path::Path,
    ) -> anyhow::Result<()> {
        anyhow::bail!("{}", super::super::predict::NO_LSTM)
    }
}

#[cfg(feature = "lstm")]
mod imp {
    use std::path::Path;
    use std::time::Instant;

    use indicatif::{ProgressBar, ProgressStyle};

    use super::LstmArgs;
    use crate::graph::Window;
    use crate::predict::lstm::{Config, Lstm};

    impl LstmArgs {
        pub(crate) fn config(&self, attention: bool) -> Config {
            Config {
                window: self.window as usize,
                horizon: self.horizon as usize,
                epochs: self.epochs as usize,
                batch: self.batch as usize,
                learning_rate: self.learning_rate,
                patience: self.patience as usize,
                attention,
                anchor: !self.no_anchor,
                seed: self.seed,
                cuda: !self.cpu,
                ..Config::default()
            }
        }
    }

    /// Fit with a progress bar (epoch, train and validation loss).
    pub(crate) fn fit(series: &[Vec<Window>], args: &LstmArgs, attention: bool) -> anyhow::Result<Lstm> {
        tch::set_num_threads(args.threads);
        let mut model = Lstm::new(args.config(attention))?;
        let bar = ProgressBar::new(args.epochs);
        bar.set_style(
            ProgressStyle::with_template("{spinner} training {prefix} [{bar:30}] epoch {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(if attention { "lstm" } else { "lstm-noattn" });
        let slices: Vec<&[Window]> = series.iter().map(Vec::as_slice).collect();
        model.fit_series(&slices, &mut |e| {
            bar.set_position(e.epoch as u64);
            bar.set_message(format!(
                "train loss {:.4}, validation loss {:.4}, validation accuracy {:.2}%",
                e.train_loss,
                e.validation_loss,
                100.0 * e.validation_accuracy
            ));
        })?;
        bar.finish_and_clear();
        Ok(model)
    }

    pub(super) fn train(series: &[Vec<Window>], args: &LstmArgs, out: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        let model = fit(series, args, !args.no_attention)?;
        let secs = started.elapsed().as_secs_f64();
        model.save(out)?;
        if let Some(meta) = model.meta() {
            eprintln!(
                "trained on {} samples ({} graphs, {} argument classes, window {}) in {secs:.1} s on {:?}",
                meta.samples,
                meta.graphs.len(),
                meta.args.len(),
                meta.window,
                if args.cpu { tch::Device::Cpu } else { tch::Device::cuda_if_available() }
            );
            println!("validation accuracy: {:.2}%", 100.0 * meta.validation_accuracy);
        }
        eprintln!("wrote {} and {}", out.display(), Lstm::sidecar(out).display());
        Ok(())
    }
}

#[cfg(feature = "lstm")]
pub(crate) use imp::fit;
