//! The attention LSTM of the paper on libtorch (tch): from the last `l` windows'
//! `(argument mix, graph mix, normalised load)` to the next window's graph mix.
//!
//! Training minimises the cross-entropy between the predicted and the observed mix (the KL
//! divergence up to a constant) with Adam, on mini-batches in a seeded order; the last
//! `validation` fraction of every series (by time, never shuffled in) picks the epoch to keep
//! and stops training after `patience` epochs without improvement. A model file is the weights
//! (`model.ot`, libtorch format) plus a JSON sidecar (`model.json`, [`Meta`]).
//!
//! - [`features`]: catalog, input and target encoding, the sidecar.
//! - [`net`]: the network.

pub mod features;
pub mod net;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor, nn, nn::OptimizerConfig};

pub use features::{Meta, OTHER};
use net::Net;

use super::{Error, Predictor, usable};
use crate::graph::Window;

/// Training settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Windows of history per prediction (l).
    pub window: usize,
    /// The window predicted: 1 is the next one; 2 the one after (for a caller whose newest
    /// window is one interval old when it plans).
    pub horizon: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Fraction of each series, at its end, held out for validation.
    pub validation: f64,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    pub attention: bool,
    /// Correct a learned blend of the recent mixes instead of predicting from scratch.
    pub anchor: bool,
    pub seed: u64,
    /// Use CUDA when available (else CPU).
    pub cuda: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 5,
            horizon: 1,
            epochs: 30,
            batch: 128,
            learning_rate: 2e-3,
            validation: 0.1,
            patience: 5,
            attention: true,
            anchor: true,
            seed: 1,
            cuda: true,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        let bad = |field, value: String, expected| Err(Error::Invalid { field, value, expected });
        if !(1..=256).contains(&self.window) {
            return bad("window", self.window.to_string(), "1 to 256");
        }
        if !(1..=64).contains(&self.horizon) {
            return bad("horizon", self.horizon.to_string(), "1 to 64");
        }
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "at least 1");
        }
        if self.batch == 0 {
            return bad("batch", "0".into(), "at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", self.learning_rate.to_string(), "a number > 0");
        }
        if !(self.validation > 0.0 && self.validation < 0.5) {
            return bad("validation", self.validation.to_string(), "a fraction in (0, 0.5)");
        }
        Ok(())
    }
}

/// Progress of one epoch.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
}

/// A trained (or loaded) model.
#[derive(Debug)]
pub struct Lstm {
    config: Config,
    meta: Option<Meta>,
    /// libtorch tensors are `Send` but not `Sync`; the lock makes the predictor shareable.
    trained: Option<Mutex<Trained>>,
}

#[derive(Debug)]
struct Trained {
    store: nn::VarStore,
    net: Net,
}

/// The epoch with the lowest validation loss so far: its weights are restored at the end.
struct Best {
    loss: f64,
    accuracy: f64,
    weights: Vec<(String, Tensor)>,
}

/// Inputs `[n, l, d]` and targets `[n, g + 1]` of the samples of a set of series.
struct Samples {
    x: Vec<f32>,
    y: Vec<f32>,
    n: usize,
}

impl Samples {
    fn new() -> Self {
        Samples { x: Vec::new(), y: Vec::new(), n: 0 }
    }

    fn push(&mut self, meta: &Meta, history: &[&Window], next: &Window) {
        for w in history {
            meta.encode(w, &mut self.x);
        }
        meta.target(next, &mut self.y);
        self.n += 1;
    }

    fn tensors(&self, meta: &Meta, device: Device) -> (Tensor, Tensor) {
        let (l, d, g) = (meta.window as i64, meta.input_dim() as i64, meta.output_dim() as i64);
        let x = Tensor::from_slice(&self.x).view([self.n as i64, l, d]).to_device(device);
        let y = Tensor::from_slice(&self.y).view([self.n as i64, g]).to_device(device);
        (x, y)
    }
}

fn model_err(path: &Path) -> impl Fn(tch::TchError) -> Error + '_ {
    move |e| Error::Model { path: path.display().to_string(), detail: e.to_string() }
}

fn lock(m: &Mutex<Trained>) -> Result<std::sync::MutexGuard<'_, Trained>, Error> {
    m.lock().map_err(|_| Error::Model { path: "(in memory)".into(), detail: "a previous use panicked".into() })
}

/// Cross-entropy of soft targets: `-sum y log p`, mean over the batch.
fn loss(logp: &Tensor, y: &Tensor) -> Tensor {
    -(y * logp).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float)
}

/// Mean `1 - TV` between `exp(logp)` and `y`.
fn accuracy(logp: &Tensor, y: &Tensor) -> f64 {
    let tv = (logp.exp() - y).abs().sum_dim_intlist(1, false, Kind::Float) * 0.5;
    1.0 - tv.mean(Kind::Float).double_value(&[])
}

impl Lstm {
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        Ok(Lstm { config, meta: None, trained: None })
    }

    /// The sidecar path next to a weights file: `model.ot` -> `model.json`.
    pub fn sidecar(weights: &Path) -> PathBuf {
        weights.with_extension("json")
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    fn device(&self) -> Device {
        if self.config.cuda { Device::cuda_if_available() } else { Device::Cpu }
    }

    /// Train on several series (e.g. one per windows.json); no sample spans two series.
    pub fn fit_series(&mut self, series: &[&[Window]], progress: &mut dyn FnMut(Epoch)) -> Result<(), Error> {
        let l = self.config.window;
        let mut checked = Vec::with_capacity(series.len());
        for s in series {
            let ws = usable(s, "lstm: fit")?;
            checked.push(ws);
        }
        let owned: Vec<Vec<Window>> = checked.iter().map(|ws| ws.iter().map(|w| (*w).clone()).collect()).collect();
        let slices: Vec<&[Window]> = owned.iter().map(Vec::as_slice).collect();
        let (graphs, args, load_scale) = Meta::catalog(&slices);
        let mut meta = Meta {
            version: features::FORMAT_VERSION,
            graphs,
            args,
            load_scale,
            window: l,
            horizon: self.config.horizon,
            attention: self.config.attention,
            anchor: self.config.anchor,
            encoder_hidden: 128,
            encoder_layers: 2,
            decoder_hidden: 32,
            validation_accuracy: 0.0,
            samples: 0,
        };
        let (mut train, mut val) = (Samples::new(), Samples::new());
        // The target is `horizon` windows after the history's last.
        let ahead = self.config.horizon - 1;
        for ws in &checked {
            if ws.len() <= l + ahead {
                continue;
            }
            let n = ws.len() - l - ahead;
            let n_val = ((n as f64 * self.config.validation).ceil() as usize).min(n.saturating_sub(1));
            for t in l..ws.len() - ahead {
                let into = if t - l >= n - n_val { &mut val } else { &mut train };
                into.push(&meta, &ws[t - l..t], ws[t + ahead]);
            }
        }
        let got = checked.iter().map(Vec::len).max().unwrap_or(0);
        if train.n == 0 || val.n == 0 {
            return Err(Error::TooShort { what: "lstm: fit", got, need: l + ahead + 3 });
        }
        meta.samples = train.n + val.n;

        tch::manual_seed(self.config.seed as i64);
        let device = self.device();
        let store = nn::VarStore::new(device);
        let net = Net::new(&store.root(), &meta);
        let no_path = Path::new("(training)");
        let mut opt = nn::Adam::default().build(&store, self.config.learning_rate).map_err(model_err(no_path))?;
        let (x, y) = train.tensors(&meta, device);
        let (vx, vy) = val.tensors(&meta, device);
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        let mut order: Vec<i64> = (0..train.n as i64).collect();
        let mut best: Option<Best> = None;
        let mut since_best = 0;
        for epoch in 1..=self.config.epochs {
            order.shuffle(&mut rng);
            let mut total = 0.0;
            for chunk in order.chunks(self.config.batch) {
                let idx = Tensor::from_slice(chunk).to_device(device);
                let (bx, by) = (x.index_select(0, &idx), y.index_select(0, &idx));
                let l = loss(&net.forward(&bx), &by);
                opt.backward_step(&l);
                total += l.double_value(&[]) * chunk.len() as f64;
            }
            let (vloss, vacc) = tch::no_grad(|| {
                let logp = net.forward(&vx);
                (loss(&logp, &vy).double_value(&[]), accuracy(&logp, &vy))
            });
            progress(Epoch {
                epoch,
                train_loss: total / train.n as f64,
                validation_loss: vloss,
                validation_accuracy: vacc,
            });
            if !vloss.is_finite() {
                return Err(Error::Model {
                    path: no_path.display().to_string(),
                    detail: format!("validation loss became {vloss} at epoch {epoch}"),
                });
            }
            if best.as_ref().is_none_or(|b| vloss < b.loss) {
                let weights = store.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
                best = Some(Best { loss: vloss, accuracy: vacc, weights });
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= self.config.patience {
                    break;
                }
            }
        }
        if let Some(best) = best {
            let vars = store.variables();
            tch::no_grad(|| {
                for (k, w) in &best.weights {
                    if let Some(v) = vars.get(k) {
                        v.shallow_clone().copy_(w);
                    }
                }
            });
            meta.validation_accuracy = best.accuracy;
        }
        self.meta = Some(meta);
        self.trained = Some(Mutex::new(Trained { store, net }));
        Ok(())
    }

    /// Write `weights` (libtorch) and its JSON sidecar.
    pub fn save(&self, weights: &Path) -> Result<(), Error> {
        let (Some(meta), Some(trained)) = (&self.meta, &self.trained) else {
            return Err(Error::NotFitted { what: "lstm: save" });
        };
        lock(trained)?.store.save(weights).map_err(model_err(weights))?;
        let sidecar = Self::sidecar(weights);
        let text = serde_json::to_string_pretty(meta)
            .map_err(|e| Error::Model { path: sidecar.display().to_string(), detail: e.to_string() })?;
        std::fs::write(&sidecar, text)
            .map_err(|e| Error::Model { path: sidecar.display().to_string(), detail: e.to_string() })
    }

    /// Read a model written by [`Lstm::save`]; weights that do not fit the sidecar are refused.
    pub fn load(weights: &Path, cuda: bool) -> Result<Self, Error> {
        let sidecar = Self::sidecar(weights);
        let sidecar_name = sidecar.display().to_string();
        let text = std::fs::read_to_string(&sidecar).map_err(|e| Error::Model {
            path: sidecar_name.clone(),
            detail: format!("cannot read the metadata sidecar: {e}"),
        })?;
        let meta: Meta = serde_json::from_str(&text)
            .map_err(|e| Error::Model { path: sidecar_name.clone(), detail: format!("invalid metadata: {e}") })?;
        meta.validate(&sidecar_name)?;
        let config = Config {
            window: meta.window,
            horizon: meta.horizon,
            attention: meta.attention,
            anchor: meta.anchor,
            cuda,
            ..Config::default()
        };
        let device = if cuda { Device::cuda_if_available() } else { Device::Cpu };
        let mut store = nn::VarStore::new(device);
        let net = Net::new(&store.root(), &meta);
        store.load(weights).map_err(model_err(weights))?;
        Ok(Lstm { config, meta: Some(meta), trained: Some(Mutex::new(Trained { store, net })) })
    }
}

impl Predictor for Lstm {
    fn name(&self) -> &str {
        if self.config.attention { "lstm" } else { "lstm-noattn" }
    }

    fn fit(&mut self, history: &[Window]) -> Result<(), Error> {
        self.fit_series(&[history], &mut |_| ())
    }

    fn predict(&self, recent: &[Window]) -> Result<BTreeMap<String, f64>, Error> {
        let (Some(meta), Some(trained)) = (&self.meta, &self.trained) else {
            return Err(Error::NotFitted { what: "lstm: predict" });
        };
        let ws = usable(recent, "lstm: predict")?;
        if ws.len() < meta.window {
            return Err(Error::TooShort { what: "lstm: predict", got: ws.len(), need: meta.window });
        }
        let mut x = Vec::with_capacity(meta.window * meta.input_dim());
        for w in &ws[ws.len() - meta.window..] {
            meta.encode(w, &mut x);
        }
        let trained = lock(trained)?;
        let input = Tensor::from_slice(&x)
            .view([1, meta.window as i64, meta.input_dim() as i64])
            .to_device(trained.store.device());
        let probs = tch::no_grad(|| trained.net.forward(&input).exp().to_device(Device::Cpu));
        let probs: Vec<f32> = Vec::<f32>::try_from(probs.view([-1]))
            .map_err(|e| Error::Model { path: "(inference)".into(), detail: e.to_string() })?;
        Ok(super::normalise(meta.decode(&probs)))
    }
}

#[cfg(test)]
mod tests;
