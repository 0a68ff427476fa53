//! Greedy decoding with a KV cache. Every generated token also yields its attention row to the image
//! tokens (per layer and head) and its hidden state at every layer: the inputs of grounded conversation
//! and visual chain-of-thought.

use candle_core::{DType, Tensor};

use crate::capture::{Capture, CaptureSink, RowCapture};
use crate::decoder::{ForwardRequest, KvCache};
use crate::error::Result;
use crate::llava::{Expanded, LlavaModel};

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Upper bound on new tokens.
    pub max_new_tokens: usize,
    /// Stop after emitting this token (typically `</s>`).
    pub eos_token_id: Option<u32>,
    /// Layers/heads kept in each token's attention row.
    pub capture: Capture,
}

/// One generated token.
pub struct GeneratedToken {
    /// Token id.
    pub id: u32,
    /// Attention of this token (as a query) to the image tokens, `[channels, n_image_tokens]` f32.
    pub attention: Tensor,
    /// Hidden states `[L + 1, d]` (transformers' convention) f32.
    pub hidden: Tensor,
}

/// Index of the first maximum (ties go to the lowest id, like `torch.argmax`).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

impl LlavaModel {
    /// Greedy decoding after the expanded prompt.
    pub fn generate(&self, prompt: &Expanded, opts: &GenerateOptions) -> Result<Vec<GeneratedToken>> {
        let text = self.decoder().config();
        let layers = opts.capture.layer_list(text.num_hidden_layers)?;
        let heads = opts.capture.head_list(text.num_attention_heads)?;
        let mut cache = KvCache::default();
        let t = prompt.embeds.dim(0)?;
        let out = self.decoder().forward(
            &prompt.embeds,
            &mut cache,
            ForwardRequest { logit_positions: vec![t - 1], ..Default::default() },
        )?;
        let mut logits = out.logits.expect("requested").get(0)?.to_vec1::<f32>()?;
        let mut tokens = Vec::new();
        while tokens.len() < opts.max_new_tokens {
            let id = argmax(&logits);
            let pos = cache.len();
            let request = RowCapture {
                groups: vec![vec![pos]],
                keys: prompt.image_positions.clone(),
                layers: layers.clone(),
                heads: heads.clone(),
                merge: opts.capture.merge,
            };
            let out = self.decoder().forward(
                &self.decoder().embed_tokens(&[id])?,
                &mut cache,
                ForwardRequest {
                    hidden_positions: vec![pos],
                    logit_positions: vec![pos],
                    capture: Some(CaptureSink::new(request, self.device())?),
                },
            )?;
            tokens.push(GeneratedToken {
                id,
                attention: out.captured.expect("requested").get(0)?,
                hidden: out.hidden.expect("requested").squeeze(1)?.to_dtype(DType::F32)?,
            });
            if Some(id) == opts.eos_token_id {
                break;
            }
            logits = out.logits.expect("requested").get(0)?.to_vec1::<f32>()?;
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn argmax_prefers_the_first_maximum() {
        assert_eq!(super::argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
        assert_eq!(super::argmax(&[3.0]), 0);
    }
}

