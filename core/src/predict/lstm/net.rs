//! The network: a 2-layer LSTM encoder over the last `l` windows, attention of the last
//! encoder output over all of them (Luong's general score), a one-step LSTM decoder over
//! `[context, last output]`, and a linear layer to log-probabilities over the graphs. Without
//! attention the decoder sees the last encoder output alone.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use super::features::Meta;

#[derive(Debug)]
pub struct Net {
    encoder: nn::LSTM,
    score: Option<nn::Linear>,
    decoder: nn::LSTM,
    out: nn::Linear,
}

impl Net {
    pub fn new(root: &nn::Path<'_>, meta: &Meta) -> Self {
        let h = meta.encoder_hidden;
        let config = nn::RNNConfig { num_layers: meta.encoder_layers, batch_first: true, ..Default::default() };
        let encoder = nn::lstm(root / "encoder", meta.input_dim() as i64, h, config);
        let score = meta.attention.then(|| nn::linear(root / "attention", h, h, Default::default()));
        let decoder_in = if meta.attention { 2 * h } else { h };
        let decoder = nn::lstm(root / "decoder", decoder_in, meta.decoder_hidden, nn::RNNConfig::default());
        let out = nn::linear(root / "out", meta.decoder_hidden, meta.output_dim() as i64, Default::default());
        Net { encoder, score, decoder, out }
    }

    /// `x`: `[batch, l, input]` -> log-probabilities `[batch, graphs + 1]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (states, _) = self.encoder.seq(x);
        let last = states.select(1, -1);
        let input = match &self.score {
            Some(score) => {
                let query = score.forward(&last).unsqueeze(2);
                let weights = states.bmm(&query).squeeze_dim(2).softmax(1, Kind::Float);
                let context = weights.unsqueeze(1).bmm(&states).squeeze_dim(1);
                Tensor::cat(&[context, last], 1)
            }
            None => last,
        };
        let (decoded, _) = self.decoder.seq(&input.unsqueeze(1));
        self.out.forward(&decoded.squeeze_dim(1)).log_softmax(1, Kind::Float)
    }
}
