//! The model's view of a window: `s_t = (argument mix, graph mix, normalised load)` over the
//! catalog fixed at training time, each mix with a trailing "other" slot for classes the
//! training windows never showed. [`Meta`] is the JSON sidecar of a model file.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::super::Error;
use crate::graph::Window;

pub use crate::predict::OTHER;

/// Version of the sidecar format; a model with another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Everything besides the weights that a model file needs to be used again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    /// Output order: one slot per graph id, then "other".
    pub graphs: Vec<String>,
    /// Argument classes in input order, then an "other" slot.
    pub args: Vec<String>,
    /// Loads are divided by this (the largest training load), so inputs sit in [0, ~1].
    pub load_scale: f64,
    /// Windows of history per prediction (l).
    pub window: usize,
    /// The window predicted after the history's last (1: the next).
    #[serde(default = "one")]
    pub horizon: usize,
    pub attention: bool,
    /// The output corrects a learned blend of the input windows' mixes (see `net`); models
    /// written before it existed have none.
    #[serde(default)]
    pub anchor: bool,
    pub encoder_hidden: i64,
    pub encoder_layers: i64,
    pub decoder_hidden: i64,
    /// Accuracy (1 - TV) on the validation range at the kept epoch.
    pub validation_accuracy: f64,
    /// Training samples (windows with a full history before them).
    pub samples: usize,
}

fn one() -> usize {
    1
}

impl Meta {
    /// Catalog from training windows: every graph id and argument class seen, sorted.
    pub fn catalog(series: &[&[Window]]) -> (Vec<String>, Vec<String>, f64) {
        let mut graphs = BTreeSet::new();
        let mut args = BTreeSet::new();
        let mut load: f64 = 0.0;
        for w in series.iter().flat_map(|s| s.iter()) {
            graphs.extend(w.graph_mix.keys().cloned());
            args.extend(w.arg_mix.keys().cloned());
            load = load.max(w.load_rps);
        }
        (graphs.into_iter().collect(), args.into_iter().collect(), if load > 0.0 { load } else { 1.0 })
    }

    /// Input features per window.
    pub fn input_dim(&self) -> usize {
        self.args.len() + 1 + self.graphs.len() + 1 + 1
    }

    /// Position of the graph mix within one window's input features.
    pub fn graph_offset(&self) -> usize {
        self.args.len() + 1
    }

    /// Output classes (graphs and "other").
    pub fn output_dim(&self) -> usize {
        self.graphs.len() + 1
    }

    /// Append `s_t` of one window to `out`.
    pub fn encode(&self, w: &Window, out: &mut Vec<f32>) {
        Self::slots(&self.args, &w.arg_mix, out);
        Self::slots(&self.graphs, &w.graph_mix, out);
        out.push((w.load_rps / self.load_scale) as f32);
    }

    /// The graph mix as a target distribution over the output classes.
    pub fn target(&self, w: &Window, out: &mut Vec<f32>) {
        Self::slots(&self.graphs, &w.graph_mix, out);
    }

    /// Output probabilities back to graph ids (zeros dropped).
    pub fn decode(&self, probs: &[f32]) -> BTreeMap<String, f64> {
        self.graphs
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(OTHER))
            .zip(probs)
            .filter(|(_, p)| **p > 0.0)
            .map(|(g, p)| (g.to_owned(), f64::from(*p)))
            .collect()
    }

    /// Share of the windows' requests in graphs the model never saw.
    pub fn unseen_share(&self, windows: &[Window]) -> f64 {
        let known: BTreeSet<&str> = self.graphs.iter().map(String::as_str).collect();
        let (mut unseen, mut total) = (0.0, 0.0);
        for w in windows {
            let n = w.requests.max(1) as f64;
            for (g, s) in &w.graph_mix {
                total += n * s;
                if !known.contains(g.as_str()) {
                    unseen += n * s;
                }
            }
        }
        if total > 0.0 { unseen / total } else { 0.0 }
    }

    /// Refuse windows from another application: none of their graphs in the catalog.
    pub fn check_catalog(&self, windows: &[Window]) -> Result<f64, Error> {
        let share = self.unseen_share(windows);
        if share >= 1.0 - 1e-12 {
            return Err(Error::Catalog {
                detail: format!(
                    "none of the windows' graphs is among the model's {} graphs (first: {})",
                    self.graphs.len(),
                    self.graphs.first().map_or("none", String::as_str)
                ),
            });
        }
        Ok(share)
    }

    /// A sidecar that fits the network it describes.
    pub fn validate(&self, path: &str) -> Result<(), Error> {
        let bad = |detail: String| Error::Model { path: path.to_owned(), detail };
        if self.version != FORMAT_VERSION {
            return Err(bad(format!("metadata version {} (this derm reads {FORMAT_VERSION})", self.version)));
        }
        if self.graphs.is_empty() {
            return Err(bad("metadata lists no graphs".into()));
        }
        if self.horizon == 0 || self.window == 0 || !(self.load_scale.is_finite() && self.load_scale > 0.0) {
            return Err(bad(format!(
                "metadata window {} / horizon {} / load_scale {} out of range",
                self.window, self.horizon, self.load_scale
            )));
        }
        if [self.encoder_hidden, self.encoder_layers, self.decoder_hidden].iter().any(|x| !(1..=4096).contains(x)) {
            return Err(bad("metadata layer sizes out of range".into()));
        }
        Ok(())
    }

    fn slots(keys: &[String], mix: &BTreeMap<String, f64>, out: &mut Vec<f32>) {
        let start = out.len();
        out.extend(std::iter::repeat_n(0.0f32, keys.len() + 1));
        for (k, s) in mix {
            let i = keys.binary_search(k).unwrap_or(keys.len());
            out[start + i] += *s as f32;
        }
        let total: f32 = out[start..].iter().sum();
        if total > 0.0 {
            out[start..].iter_mut().for_each(|x| *x /= total);
        }
    }
}
