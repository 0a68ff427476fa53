//! CLIP vision tower (transformers' `CLIPVisionModel` without the final LayerNorm), run up to the hidden
//! state LLaVA selects.

use candle_core::{Module, Tensor};

use crate::config::VisionConfig;
use crate::error::Result;
use crate::layers::activate;
use crate::model_dir::Weights;

struct ClipLayer {
    ln1: candle_nn::LayerNorm,
    q: candle_nn::Linear,
    k: candle_nn::Linear,
    v: candle_nn::Linear,
    out: candle_nn::Linear,
    ln2: candle_nn::LayerNorm,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

/// The vision transformer.
pub struct ClipVision {
    config: VisionConfig,
    patch_weight: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: candle_nn::LayerNorm,
    layers: Vec<ClipLayer>,
}

impl ClipVision {
    /// Loads the first `layers_to_run` blocks under `prefix` (e.g. `vision_tower.vision_model`).
    pub fn load(w: &Weights, prefix: &str, config: &VisionConfig, layers_to_run: usize) -> Result<Self> {
        let d = config.hidden_size;
        let p = config.patch_size;
        let e = format!("{prefix}.embeddings");
        let patch_weight = w.get(&format!("{e}.patch_embedding.weight"), &[d, 3, p, p])?.reshape((d, 3 * p * p))?;
        let class_embedding = w.get(&format!("{e}.class_embedding"), &[d])?;
        let positions = config.grid() * config.grid() + 1;
        let position_embedding = w.get(&format!("{e}.position_embedding.weight"), &[positions, d])?;
        let pre_norm = w.layer_norm(&format!("{prefix}.pre_layrnorm"), d, config.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(layers_to_run);
        for i in 0..layers_to_run {
            let l = format!("{prefix}.encoder.layers.{i}");
            let eps = config.layer_norm_eps;
            let m = config.intermediate_size;
            layers.push(ClipLayer {
                ln1: w.layer_norm(&format!("{l}.layer_norm1"), d, eps)?,
                q: w.linear(&format!("{l}.self_attn.q_proj"), d, d, true)?,
                k: w.linear(&format!("{l}.self_attn.k_proj"), d, d, true)?,
                v: w.linear(&format!("{l}.self_attn.v_proj"), d, d, true)?,
                out: w.linear(&format!("{l}.self_attn.out_proj"), d, d, true)?,
                ln2: w.layer_norm(&format!("{l}.layer_norm2"), d, eps)?,
                fc1: w.linear(&format!("{l}.mlp.fc1"), d, m, true)?,
                fc2: w.linear(&format!("{l}.mlp.fc2"), m, d, true)?,
            });
        }
        Ok(Self { config: config.clone(), patch_weight, class_embedding, position_embedding, pre_norm, layers })
    }

    /// `pixel_values [n, 3, S, S]` → hidden state after the loaded blocks, `[n, 1 + g², d]` (CLS first).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let x = self.embed(&pixel_values.to_dtype(self.patch_weight.dtype())?)?;
        let mut x = self.pre_norm.forward(&x)?;
        for layer in &self.layers {
            x = self.block(layer, &x)?;
        }
        Ok(x)
    }

    /// Patch embedding (a stride-p convolution, computed as one matmul over unfolded patches) + CLS +
    /// learned positions.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, _, s, _) = pixels.dims4()?;
        let g = s / self.config.patch_size;
        let d = self.config.hidden_size;
        let patches = unfold_patches(pixels, self.config.patch_size)?;
        let patches = patches.matmul(&self.patch_weight.t()?)?.reshape((n, g * g, d))?;
        let cls = self.class_embedding.reshape((1, 1, d))?.expand((n, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        Ok(x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?)
    }

    fn block(&self, l: &ClipLayer, x: &Tensor) -> Result<Tensor> {
        let (n, t, d) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let dh = d / heads;
        let h = l.ln1.forward(x)?;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((n, t, heads, dh))?.transpose(1, 2)?.contiguous()
        };
        let q = split((l.q.forward(&h)? * (dh as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(&h)?)?;
        let v = split(l.v.forward(&h)?)?;
        let attn = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let o = attn.matmul(&v)?.transpose(1, 2)?.reshape((n, t, d))?;
        let x = (x + l.out.forward(&o)?)?;
        let h = l.ln2.forward(&x)?;
        let h = l.fc2.forward(&activate(&l.fc1.forward(&h)?, self.config.hidden_act)?)?;
        Ok((x + h)?)
    }
}

/// `[n, 3, S, S]` → `[n·g², 3·p·p]`: the non-overlapping `p × p` patches in raster order, each flattened
/// as (channel, row, column) — the layout of a `[d, 3, p, p]` convolution weight, so a stride-`p`
/// convolution is one matmul with the weight reshaped to `[d, 3·p·p]`.
pub fn unfold_patches(pixels: &Tensor, p: usize) -> candle_core::Result<Tensor> {
    let (n, c, s, _) = pixels.dims4()?;
    let g = s / p;
    pixels.reshape((n, c, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.contiguous()?.reshape((n * g * g, c * p * p))
}

/// Drops the CLS token when asked (`vision_feature_select_strategy = "default"`).
pub fn select_features(hidden: &Tensor, drop_cls: bool) -> Result<Tensor> {
    if drop_cls {
        let t = hidden.dim(1)?;
        Ok(hidden.narrow(1, 1, t - 1)?)
    } else {
        Ok(hidden.clone())
    }
}

