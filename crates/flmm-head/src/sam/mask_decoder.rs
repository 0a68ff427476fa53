//! SAM's mask decoder: a two-way transformer between prompt tokens and image cells, then upscaling
//! and hypernetwork MLPs that turn mask tokens into mask logits. Trainable: every op here has a
//! gradient-checked backward (`flmm-nn`).

use candle_core::{Tensor, D};
use flmm_nn::act::{gelu, relu};
use flmm_nn::norm::{layer_norm, layer_norm_2d};
use flmm_nn::patch_conv::conv_transpose2d_patches;
use flmm_nn::softmax::softmax_last_dim;

use crate::error::HeadError;
use crate::sam::parts::{mlp, Linear, TensorSource};

/// Multi-head attention with an optional internal downsampling of the width.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(src: &mut TensorSource, prefix: &str, dim: usize, heads: usize, downsample: usize) -> Result<Self, HeadError> {
        let inner = dim / downsample;
        Ok(Self {
            q: src.linear(&format!("{prefix}.q_proj"), dim, inner)?,
            k: src.linear(&format!("{prefix}.k_proj"), dim, inner)?,
            v: src.linear(&format!("{prefix}.v_proj"), dim, inner)?,
            out: src.linear(&format!("{prefix}.out_proj"), inner, dim)?,
            heads,
        })
    }

    /// `q [B, Nq, C]`, `k`, `v [B, Nk, C]` → `[B, Nq, C]`.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor, HeadError> {
        let split = |x: Tensor| -> Result<Tensor, HeadError> {
            let (b, n, c) = x.dims3()?;
            Ok(x.reshape((b, n, self.heads, c / self.heads))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(self.q.forward(q)?)?;
        let k = split(self.k.forward(k)?)?;
        let v = split(self.v.forward(v)?)?;
        let dh = q.dim(D::Minus1)?;
        let attn = softmax_last_dim(&(q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?)?;
        let o = attn.matmul(&v)?; // [B, heads, Nq, dh]
        let (b, h, n, dh) = o.dims4()?;
        self.out.forward(&o.transpose(1, 2)?.reshape((b, n, h * dh))?)
    }
}

struct Block {
    self_attn: Attention,
    norms: [(Tensor, Tensor); 4],
    to_image: Attention,
    mlp: [Linear; 2],
    to_token: Attention,
    skip_first_pe: bool,
}

/// Mask decoder hyper-parameters (SAM: 256, 2 blocks, 8 heads, MLP 2048, 3 multimask outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskDecoderConfig {
    /// Token / image width.
    pub dim: usize,
    /// Two-way blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub mlp_dim: usize,
    /// Extra mask outputs (mask tokens = this + 1).
    pub multimask_outputs: usize,
}

impl Default for MaskDecoderConfig {
    fn default() -> Self {
        Self { dim: 256, depth: 2, heads: 8, mlp_dim: 2048, multimask_outputs: 3 }
    }
}

impl MaskDecoderConfig {
    /// Reads width, depth, MLP width and mask-token count off checkpoint shapes under `prefix`; the
    /// head count is not visible in shapes: it is the file's `<prefix>.num_heads` metadata when present
    /// (written by [`crate::sam::Sam::save_file`]), SAM's 8 otherwise.
    pub fn detect(w: &crate::sam::SamWeights, prefix: &str) -> Result<Self, HeadError> {
        let bad = |message: String| HeadError::Checkpoint { path: w.source().to_path_buf(), message };
        let shape = |key: String| w.shape_of(&key).ok_or_else(|| bad(format!("missing key {key}")));
        let tokens = shape(format!("{prefix}.mask_tokens.weight"))?;
        let lin1 = shape(format!("{prefix}.transformer.layers.0.mlp.lin1.weight"))?;
        let depth = (0..).take_while(|i| w.contains(&format!("{prefix}.transformer.layers.{i}.norm1.weight"))).count();
        if tokens.len() != 2 || tokens[0] < 1 || lin1.len() != 2 {
            return Err(bad(format!("{prefix}.mask_tokens.weight {tokens:?} is not a SAM mask decoder")));
        }
        let heads = match w.metadata(&heads_metadata_key(prefix)) {
            Some(v) => v.parse().map_err(|_| bad(format!("{} = {v:?} is not a head count", heads_metadata_key(prefix))))?,
            None => 8,
        };
        // Cross-attention runs at half the width, so the heads must divide that too.
        if heads == 0 || tokens[1] % (2 * heads) != 0 {
            return Err(bad(format!("{heads} attention heads do not divide the mask decoder's width {} and its half", tokens[1])));
        }
        Ok(Self { dim: tokens[1], depth, heads, mlp_dim: lin1[0], multimask_outputs: tokens[0] - 1 })
    }
}

/// The metadata key recording the head count of the mask decoder under `prefix`.
pub fn heads_metadata_key(prefix: &str) -> String {
    format!("{prefix}.num_heads")
}

/// The decoder.
pub struct MaskDecoder {
    config: MaskDecoderConfig,
    blocks: Vec<Block>,
    final_attn: Attention,
    final_norm: (Tensor, Tensor),
    iou_token: Tensor,
    mask_tokens: Tensor,
    upscale: [(Tensor, Tensor); 3],
    hypernetworks: Vec<[Linear; 3]>,
    iou_head: [Linear; 3],
}

/// Output of [`MaskDecoder::forward`].
pub struct DecodedMasks {
    /// `[B, m, 4h, 4w]` low-resolution mask logits (m = 1, or the multimask outputs).
    pub masks: Tensor,
    /// `[B, m]` predicted IoU.
    pub iou: Tensor,
}

impl MaskDecoder {
    /// Loads `prefix.*` (usually `mask_decoder`).
    pub fn load(src: &mut TensorSource, prefix: &str, config: MaskDecoderConfig) -> Result<Self, HeadError> {
        let c = config.dim;
        let t = format!("{prefix}.transformer");
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let l = format!("{t}.layers.{i}");
            blocks.push(Block {
                self_attn: Attention::load(src, &format!("{l}.self_attn"), c, config.heads, 1)?,
                norms: [src.norm(&format!("{l}.norm1"), c)?, src.norm(&format!("{l}.norm2"), c)?, src.norm(&format!("{l}.norm3"), c)?, src.norm(&format!("{l}.norm4"), c)?],
                to_image: Attention::load(src, &format!("{l}.cross_attn_token_to_image"), c, config.heads, 2)?,
                mlp: [src.linear(&format!("{l}.mlp.lin1"), c, config.mlp_dim)?, src.linear(&format!("{l}.mlp.lin2"), config.mlp_dim, c)?],
                to_token: Attention::load(src, &format!("{l}.cross_attn_image_to_token"), c, config.heads, 2)?,
                skip_first_pe: i == 0,
            });
        }
        let final_attn = Attention::load(src, &format!("{t}.final_attn_token_to_image"), c, config.heads, 2)?;
        let final_norm = src.norm(&format!("{t}.norm_final_attn"), c)?;
        let tokens = config.multimask_outputs + 1;
        let iou_token = src.get(&format!("{prefix}.iou_token.weight"), &[1, c])?;
        let mask_tokens = src.get(&format!("{prefix}.mask_tokens.weight"), &[tokens, c])?;
        let up = format!("{prefix}.output_upscaling");
        let (c4, c8) = (c / 4, c / 8);
        let mut pair = |i: usize, w: &[usize], b: usize| -> Result<(Tensor, Tensor), HeadError> {
            Ok((src.get(&format!("{up}.{i}.weight"), w)?, src.get(&format!("{up}.{i}.bias"), &[b])?))
        };
        let upscale = [pair(0, &[c, c4, 2, 2], c4)?, pair(1, &[c4], c4)?, pair(3, &[c4, c8, 2, 2], c8)?];
        let mut three = |p: String, out: usize| -> Result<[Linear; 3], HeadError> {
            Ok([src.linear(&format!("{p}.layers.0"), c, c)?, src.linear(&format!("{p}.layers.1"), c, c)?, src.linear(&format!("{p}.layers.2"), c, out)?])
        };
        let hypernetworks = (0..tokens)
            .map(|i| three(format!("{prefix}.output_hypernetworks_mlps.{i}"), c8))
            .collect::<Result<Vec<_>, _>>()?;
        let iou_head = three(format!("{prefix}.iou_prediction_head"), tokens)?;
        Ok(Self { config, blocks, final_attn, final_norm, iou_token, mask_tokens, upscale, hypernetworks, iou_head })
    }

    /// Token / image width.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &MaskDecoderConfig {
        &self.config
    }

    /// Decodes masks for `B` prompt sets on one image: `image [1, C, h, w]`, `image_pe [1, C, h, w]`,
    /// `sparse [B, n, C]` (the same token count `n` for all), `dense [B, C, h, w]`.
    pub fn forward(&self, image: &Tensor, image_pe: &Tensor, sparse: &Tensor, dense: &Tensor, multimask: bool) -> Result<DecodedMasks, HeadError> {
        let c = self.config.dim;
        let b = sparse.dim(0)?;
        let output_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?;
        let output_tokens = output_tokens.unsqueeze(0)?.broadcast_as((b, output_tokens.dim(0)?, c))?.contiguous()?;
        let tokens = Tensor::cat(&[&output_tokens, &sparse.to_dtype(output_tokens.dtype())?], 1)?;
        let src = image.broadcast_add(dense)?;
        let (_, _, h, w) = src.dims4()?;
        let (queries, keys) = self.transformer(&src, image_pe, &tokens)?;
        let iou_out = queries.narrow(1, 0, 1)?.squeeze(1)?;
        let n_masks = self.config.multimask_outputs + 1;
        let mask_out = queries.narrow(1, 1, n_masks)?;
        let src = keys.transpose(1, 2)?.reshape((b, c, h, w))?;
        let [(w0, b0), (n1w, n1b), (w3, b3)] = &self.upscale;
        let up = conv_transpose2d_patches(&src, w0, Some(b0))?;
        let up = gelu(&layer_norm_2d(&up, n1w, n1b, 1e-6)?)?;
        let up = gelu(&conv_transpose2d_patches(&up, w3, Some(b3))?)?; // [B, C/8, 4h, 4w]
        let hyper: Vec<Tensor> = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, m)| mlp(m, &mask_out.narrow(1, i, 1)?.squeeze(1)?))
            .collect::<Result<_, _>>()?;
        let hyper = Tensor::stack(&hyper, 1)?; // [B, n_masks, C/8]
        let (_, cu, hu, wu) = up.dims4()?;
        let masks = hyper.matmul(&up.reshape((b, cu, hu * wu))?)?.reshape((b, n_masks, hu, wu))?;
        let iou = mlp(&self.iou_head, &iou_out)?;
        let (start, count) = if multimask { (1, n_masks - 1) } else { (0, 1) };
        Ok(DecodedMasks { masks: masks.narrow(1, start, count)?, iou: iou.narrow(1, start, count)? })
    }

    /// The two-way transformer over `image [B, C, h, w]` (positions `image_pe [1, C, h, w]`) and
    /// `tokens [B, N, C]`: `(queries [B, N, C], keys [B, hw, C])`.
    fn transformer(&self, image: &Tensor, image_pe: &Tensor, tokens: &Tensor) -> Result<(Tensor, Tensor), HeadError> {
        let flat = |x: &Tensor| -> Result<Tensor, HeadError> { Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?) };
        let mut keys = flat(image)?;
        let key_pe = flat(image_pe)?;
        let query_pe = tokens;
        let mut queries = tokens.clone();
        let ln = |x: &Tensor, n: &(Tensor, Tensor)| -> Result<Tensor, HeadError> { Ok(layer_norm(x, &n.0, &n.1, 1e-5)?) };
        for b in &self.blocks {
            queries = if b.skip_first_pe {
                b.self_attn.forward(&queries, &queries, &queries)?
            } else {
                let q = (&queries + query_pe)?;
                (&queries + b.self_attn.forward(&q, &q, &queries)?)?
            };
            queries = ln(&queries, &b.norms[0])?;
            let q = (&queries + query_pe)?;
            let k = keys.broadcast_add(&key_pe)?;
            queries = ln(&(&queries + b.to_image.forward(&q, &k, &keys)?)?, &b.norms[1])?;
            let hidden = relu(&b.mlp[0].forward(&queries)?)?;
            queries = ln(&(&queries + b.mlp[1].forward(&hidden)?)?, &b.norms[2])?;
            let q = (&queries + query_pe)?;
            let k = keys.broadcast_add(&key_pe)?;
            keys = ln(&(&keys + b.to_token.forward(&k, &q, &queries)?)?, &b.norms[3])?;
        }
        let q = (&queries + query_pe)?;
        let k = keys.broadcast_add(&key_pe)?;
        let queries = (&queries + self.final_attn.forward(&q, &k, &keys)?)?;
        Ok((layer_norm(&queries, &self.final_norm.0, &self.final_norm.1, 1e-5)?, keys))
    }
}
