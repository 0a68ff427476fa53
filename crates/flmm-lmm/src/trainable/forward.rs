//! The differentiable forward pass of [`TrainableLlava`]: CLIP tower → projector → image features
//! spliced at `<image>` → LLaMA decoder → next-token cross-entropy on the target tokens.
//!
//! Every function takes the weights as a name → tensor map, so a finite-difference check can substitute
//! any of them.

use std::collections::HashMap;

use candle_core::{Tensor, D};
use flmm_nn::norm::layer_norm;
use flmm_nn::softmax::softmax_last_dim;

use super::init::{DECODER, LM_HEAD, PROJECTOR, VISION};
use super::TrainableLlava;
use crate::capture::mask_rows;
use crate::clip::unfold_patches;
use crate::error::{LmmError, Result};
use crate::layers::{activate, RmsNorm, Rotary};

/// Weights by transformers key.
pub type Tensors = HashMap<String, Tensor>;

/// One training sequence: token ids with exactly one `<image>` token, and per token whether it is a
/// target of the next-token loss (answer tokens and their end-of-turn token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Token ids (BOS first).
    pub input_ids: Vec<u32>,
    /// Same length: `true` where the token is predicted from the tokens before it.
    pub targets: Vec<bool>,
    /// Number of target tokens of each turn, in order (they sum to the number of `true` targets).
    pub turn_targets: Vec<usize>,
}

/// The loss of one sequence.
pub struct SequenceLoss {
    /// Mean cross-entropy over the target tokens (scalar).
    pub loss: Tensor,
    /// Number of target tokens.
    pub tokens: usize,
    /// Per target token, in order: whether the model ranks it first (greedy-correct given the tokens
    /// before it).
    pub hits: Vec<bool>,
}

impl SequenceLoss {
    /// Number of greedy-correct target tokens.
    pub fn correct(&self) -> usize {
        self.hits.iter().filter(|&&h| h).count()
    }
}

fn get<'a>(w: &'a Tensors, key: &str) -> Result<&'a Tensor> {
    w.get(key).ok_or_else(|| LmmError::BadText(format!("trainable model has no parameter {key}")))
}

fn linear(w: &Tensors, prefix: &str, x: &Tensor, bias: bool) -> Result<Tensor> {
    let y = x.matmul(&get(w, &format!("{prefix}.weight"))?.t()?)?;
    Ok(if bias { y.broadcast_add(get(w, &format!("{prefix}.bias"))?)? } else { y })
}

fn norm(w: &Tensors, prefix: &str, x: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(layer_norm(x, get(w, &format!("{prefix}.weight"))?, get(w, &format!("{prefix}.bias"))?, eps)?)
}

/// Attention of `q [H, n, dh]` over `k, v [H, n, dh]` with an additive mask `[n, n]` (or none).
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scale = (q.dim(D::Minus1)? as f64).powf(-0.5);
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    Ok(softmax_last_dim(&scores)?.matmul(v)?)
}

/// `[n, heads·dh]` → `[heads, n, dh]`.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, width) = x.dims2()?;
    Ok(x.reshape((n, heads, width / heads))?.transpose(0, 1)?.contiguous()?)
}

/// `[heads, n, dh]` → `[n, heads·dh]`.
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (heads, n, dh) = x.dims3()?;
    Ok(x.transpose(0, 1)?.reshape((n, heads * dh))?)
}

impl TrainableLlava {
    /// The vision tower's patch tokens `[g², d_vision]` of `pixel_values [1, 3, S, S]` (the hidden state
    /// LLaVA reads, CLS dropped), before the projector.
    pub fn vision_tokens(&self, w: &Tensors, pixel_values: &Tensor) -> Result<Tensor> {
        let v = &self.config.vision;
        let dtype = get(w, &format!("{DECODER}.embed_tokens.weight"))?.dtype();
        let e = format!("{VISION}.embeddings");
        let patch = get(w, &format!("{e}.patch_embedding.weight"))?;
        let d = v.hidden_size;
        let patches = unfold_patches(&pixel_values.to_dtype(dtype)?, v.patch_size)?.matmul(&patch.reshape((d, ()))?.t()?)?;
        let cls = get(w, &format!("{e}.class_embedding"))?.unsqueeze(0)?;
        let x = Tensor::cat(&[&cls, &patches], 0)?.broadcast_add(get(w, &format!("{e}.position_embedding.weight"))?)?;
        let eps = v.layer_norm_eps;
        let mut x = norm(w, &format!("{VISION}.pre_layrnorm"), &x, eps)?;
        for i in 0..self.config.vision_layers_to_run() {
            let l = format!("{VISION}.encoder.layers.{i}");
            let h = norm(w, &format!("{l}.layer_norm1"), &x, eps)?;
            let heads = v.num_attention_heads;
            let q = split_heads(&linear(w, &format!("{l}.self_attn.q_proj"), &h, true)?, heads)?;
            let k = split_heads(&linear(w, &format!("{l}.self_attn.k_proj"), &h, true)?, heads)?;
            let vv = split_heads(&linear(w, &format!("{l}.self_attn.v_proj"), &h, true)?, heads)?;
            let o = merge_heads(&attend(&q, &k, &vv, None)?)?;
            x = (x + linear(w, &format!("{l}.self_attn.out_proj"), &o, true)?)?;
            let h = norm(w, &format!("{l}.layer_norm2"), &x, eps)?;
            let h = activate(&linear(w, &format!("{l}.mlp.fc1"), &h, true)?, v.hidden_act)?;
            x = (x + linear(w, &format!("{l}.mlp.fc2"), &h, true)?)?;
        }
        Ok(x.narrow(0, 1, x.dim(0)? - 1)?) // drop CLS
    }

    /// Projected image features `[g², d_text]` of `pixel_values [1, 3, S, S]`.
    pub fn image_features(&self, w: &Tensors, pixel_values: &Tensor) -> Result<Tensor> {
        let tokens = self.vision_tokens(w, pixel_values)?;
        let h = activate(&linear(w, &format!("{PROJECTOR}.linear_1"), &tokens, true)?, self.config.projector_act)?;
        linear(w, &format!("{PROJECTOR}.linear_2"), &h, true)
    }

    /// Decoder input `[T, d]`: token embeddings with the image features in place of the `<image>` token.
    /// Also returns, per input token, its position in that sequence.
    pub fn embed(&self, w: &Tensors, image_features: &Tensor, input_ids: &[u32]) -> Result<(Tensor, Vec<usize>)> {
        let image_token = self.config.image_token_index;
        let at: Vec<usize> = input_ids.iter().enumerate().filter(|(_, &t)| t == image_token).map(|(i, _)| i).collect();
        if at.len() != 1 {
            return Err(LmmError::BadText(format!("expected exactly one <image> token, found {}", at.len())));
        }
        let vocab = self.config.text.vocab_size;
        if let Some(bad) = input_ids.iter().find(|&&t| t as usize >= vocab && t != image_token) {
            return Err(LmmError::BadText(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        let table = get(w, &format!("{DECODER}.embed_tokens.weight"))?;
        let device = table.device();
        let lookup = |ids: &[u32]| -> Result<Tensor> {
            Ok(table.index_select(&Tensor::from_vec(ids.to_vec(), ids.len(), device)?, 0)?)
        };
        let p = at[0];
        let k = image_features.dim(0)?;
        let mut parts = Vec::new();
        if p > 0 {
            parts.push(lookup(&input_ids[..p])?);
        }
        parts.push(image_features.clone());
        if p + 1 < input_ids.len() {
            parts.push(lookup(&input_ids[p + 1..])?);
        }
        let positions = (0..input_ids.len()).map(|i| if i < p { i } else { i + k - 1 }).collect();
        Ok((Tensor::cat(&parts, 0)?, positions))
    }

    /// Final-norm hidden states `[T, d]` of the decoder over `x [T, d]` (causal attention).
    pub fn decode(&self, w: &Tensors, x: &Tensor) -> Result<Tensor> {
        let t = &self.config.text;
        let n = x.dim(0)?;
        let dtype = x.dtype();
        let positions: Vec<usize> = (0..n).collect();
        let mask = mask_rows(&positions, n, None, x.device())?.to_dtype(dtype)?;
        let (cos, sin) = Rotary::new(t.head_dim(), t.rope_theta).tables(0, n, x.device())?;
        let rep = t.num_attention_heads / t.num_key_value_heads;
        let expand = |y: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            let (hkv, len, dh) = y.dims3()?;
            Ok(y.unsqueeze(1)?.expand((hkv, rep, len, dh))?.reshape((hkv * rep, len, dh))?)
        };
        let rms = |key: String, y: &Tensor| -> Result<Tensor> {
            Ok(candle_core::Module::forward(&RmsNorm::new(get(w, &key)?.clone(), t.rms_norm_eps), y)?)
        };
        let mut x = x.clone();
        for i in 0..t.num_hidden_layers {
            let l = format!("{DECODER}.layers.{i}");
            let h = rms(format!("{l}.input_layernorm.weight"), &x)?;
            let q = split_heads(&linear(w, &format!("{l}.self_attn.q_proj"), &h, false)?, t.num_attention_heads)?;
            let k = split_heads(&linear(w, &format!("{l}.self_attn.k_proj"), &h, false)?, t.num_key_value_heads)?;
            let v = split_heads(&linear(w, &format!("{l}.self_attn.v_proj"), &h, false)?, t.num_key_value_heads)?;
            let q = Rotary::apply(&q, &cos, &sin)?;
            let k = expand(Rotary::apply(&k, &cos, &sin)?)?;
            let o = merge_heads(&attend(&q, &k, &expand(v)?, Some(&mask))?)?;
            x = (x + linear(w, &format!("{l}.self_attn.o_proj"), &o, false)?)?;
            let h = rms(format!("{l}.post_attention_layernorm.weight"), &x)?;
            let gate = linear(w, &format!("{l}.mlp.gate_proj"), &h, false)?.silu()?;
            let up = linear(w, &format!("{l}.mlp.up_proj"), &h, false)?;
            x = (x + linear(w, &format!("{l}.mlp.down_proj"), &(gate * up)?, false)?)?;
        }
        rms(format!("{DECODER}.norm.weight"), &x)
    }

    fn lm_head<'a>(&self, w: &'a Tensors) -> Result<&'a Tensor> {
        if self.config.text.tie_word_embeddings {
            get(w, &format!("{DECODER}.embed_tokens.weight"))
        } else {
            get(w, LM_HEAD)
        }
    }

    /// Logits `[T, V]` at every position of the expanded sequence (for tests and inspection).
    pub fn logits(&self, pixel_values: &Tensor, input_ids: &[u32]) -> Result<Tensor> {
        let w = self.tensors();
        let (x, _) = self.embed(&w, &self.image_features(&w, pixel_values)?, input_ids)?;
        Ok(self.decode(&w, &x)?.matmul(&self.lm_head(&w)?.t()?)?)
    }

    /// The next-token loss of `conversation` on `pixel_values [1, 3, S, S]`.
    pub fn loss(&self, pixel_values: &Tensor, conversation: &Conversation) -> Result<SequenceLoss> {
        self.loss_with(&self.tensors(), pixel_values, conversation)
    }

    /// [`TrainableLlava::loss`] with the weights given explicitly.
    pub fn loss_with(&self, w: &Tensors, pixel_values: &Tensor, conversation: &Conversation) -> Result<SequenceLoss> {
        let ids = &conversation.input_ids;
        if conversation.targets.len() != ids.len() {
            return Err(LmmError::BadText("targets and input_ids differ in length".into()));
        }
        let (x, positions) = self.embed(w, &self.image_features(w, pixel_values)?, ids)?;
        // A target token at input index i is predicted from the sequence position just before it.
        let picked: Vec<(u32, u32)> = (1..ids.len())
            .filter(|&i| conversation.targets[i])
            .map(|i| ((positions[i] - 1) as u32, ids[i]))
            .collect();
        if picked.is_empty() {
            return Err(LmmError::BadText("the conversation has no target tokens".into()));
        }
        let device = x.device().clone();
        let rows = Tensor::from_vec(picked.iter().map(|p| p.0).collect::<Vec<_>>(), picked.len(), &device)?;
        let labels: Vec<u32> = picked.iter().map(|p| p.1).collect();
        let hidden = self.decode(w, &x)?.index_select(&rows, 0)?;
        let logits = hidden.matmul(&self.lm_head(w)?.t()?)?; // [n, V]
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
        let label_t = Tensor::from_vec(labels.clone(), (labels.len(), 1), &device)?;
        let chosen = logits.gather(&label_t, 1)?;
        let loss = (lse - chosen)?.mean_all()?;
        let best: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        let hits = best.iter().zip(&labels).map(|(a, b)| a == b).collect();
        Ok(SequenceLoss { loss, tokens: labels.len(), hits })
    }
}
