//! SAM's ViT image encoder (ViT-B/L/H, or any smaller configuration): patch embedding, absolute
//! positions, windowed and global attention blocks with decomposed relative positions, and the
//! convolutional neck. Frozen in F-LMM, where it runs candle's fused (non-differentiable) LayerNorm and
//! softmax for speed; loaded through [`TensorSource::Trainable`] it runs the gradient-checked `flmm-nn`
//! versions instead (pretraining the toy refiner). Every other op of the forward is differentiable in
//! both modes.

use candle_core::Tensor;
use flmm_nn::patch_conv::conv2d_patches;

use crate::error::HeadError;
use crate::sam::parts::{Linear, TensorSource};
use crate::sam::weights::SamWeights;

/// ViT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitConfig {
    /// Input side (1024 in SAM).
    pub img_size: usize,
    /// Patch side (16).
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Blocks with global attention; the others attend within windows.
    pub global_blocks: Vec<usize>,
    /// Window side.
    pub window: usize,
    /// Output channels of the neck (256).
    pub out_chans: usize,
}

impl VitConfig {
    /// SAM ViT-B.
    pub fn vit_b() -> Self {
        Self { img_size: 1024, patch_size: 16, embed_dim: 768, depth: 12, heads: 12, global_blocks: vec![2, 5, 8, 11], window: 14, out_chans: 256 }
    }
    /// SAM ViT-L.
    pub fn vit_l() -> Self {
        Self { embed_dim: 1024, depth: 24, heads: 16, global_blocks: vec![5, 11, 17, 23], ..Self::vit_b() }
    }
    /// SAM ViT-H.
    pub fn vit_h() -> Self {
        Self { embed_dim: 1280, depth: 32, heads: 16, global_blocks: vec![7, 15, 23, 31], ..Self::vit_b() }
    }

    /// Token grid side.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Reads the configuration off checkpoint shapes under `prefix` (e.g. `image_encoder`).
    pub fn detect(w: &SamWeights, prefix: &str) -> Result<Self, HeadError> {
        let bad = |message: String| HeadError::Checkpoint { path: w.source().to_path_buf(), message };
        let shape = |key: String| w.shape_of(&key).ok_or_else(|| bad(format!("missing key {key}")));
        let patch = shape(format!("{prefix}.patch_embed.proj.weight"))?;
        let pos = shape(format!("{prefix}.pos_embed"))?;
        if patch.len() != 4 || patch[1] != 3 || pos.len() != 4 {
            return Err(bad(format!("{prefix}.patch_embed.proj.weight {patch:?} / pos_embed {pos:?} are not a SAM ViT")));
        }
        let (embed_dim, patch_size, grid) = (patch[0], patch[2], pos[1]);
        let depth = (0..).take_while(|i| w.contains(&format!("{prefix}.blocks.{i}.norm1.weight"))).count();
        if depth == 0 {
            return Err(bad(format!("no {prefix}.blocks.0.* keys")));
        }
        let mut global_blocks = Vec::new();
        let mut window = 0;
        let mut head_dim = 0;
        for i in 0..depth {
            let rel = shape(format!("{prefix}.blocks.{i}.attn.rel_pos_h"))?;
            let side = rel[0].div_ceil(2);
            head_dim = rel[1];
            if side == grid {
                global_blocks.push(i);
            } else {
                window = side;
            }
        }
        if head_dim == 0 || embed_dim % head_dim != 0 {
            return Err(bad(format!("relative position width {head_dim} does not divide the embedding {embed_dim}")));
        }
        let out_chans = shape(format!("{prefix}.neck.0.weight"))?[0];
        Ok(Self { img_size: grid * patch_size, patch_size, embed_dim, depth, heads: embed_dim / head_dim, global_blocks, window, out_chans })
    }
}

/// Which implementations of LayerNorm and softmax the forward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ops {
    /// candle's fused kernels: fast, no gradients (frozen encoder).
    Fused,
    /// `flmm-nn`'s compositions of differentiable primitives (trainable encoder).
    Differentiable,
}

impl Ops {
    /// LayerNorm over the last dimension of `x`.
    fn layer_norm(self, x: &Tensor, (weight, bias): &(Tensor, Tensor), eps: f64) -> Result<Tensor, HeadError> {
        Ok(match self {
            Ops::Fused => candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32)?,
            Ops::Differentiable => flmm_nn::norm::layer_norm(x, weight, bias, eps)?,
        })
    }

    /// Softmax over the last dimension of `x`.
    fn softmax(self, x: &Tensor) -> Result<Tensor, HeadError> {
        Ok(match self {
            Ops::Fused => candle_nn::ops::softmax_last_dim(x)?,
            Ops::Differentiable => flmm_nn::softmax::softmax_last_dim(x)?,
        })
    }

    /// SAM's LayerNorm2d (eps 1e-6) on `[N, C, H, W]`.
    fn channel_norm(self, x: &Tensor, norm: &(Tensor, Tensor)) -> Result<Tensor, HeadError> {
        let y = self.layer_norm(&x.permute((0, 2, 3, 1))?, norm, 1e-6)?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

/// LayerNorm epsilon of the blocks.
const BLOCK_EPS: f64 = 1e-6;

struct Block {
    norm1: (Tensor, Tensor),
    qkv: Linear,
    proj: Linear,
    rel_h: Tensor,
    rel_w: Tensor,
    norm2: (Tensor, Tensor),
    lin1: Linear,
    lin2: Linear,
    window: usize,
}

/// The encoder.
pub struct ImageEncoderVit {
    config: VitConfig,
    ops: Ops,
    patch_weight: Tensor,
    patch_bias: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    neck_conv1: Tensor,
    neck_norm1: (Tensor, Tensor),
    neck_conv2: Tensor,
    neck_norm2: (Tensor, Tensor),
}

/// Most bytes of attention scores computed at once (global attention over 64×64 tokens is 64 MiB per head).
const SCORE_CHUNK_BYTES: usize = 256 << 20;

impl ImageEncoderVit {
    /// Loads `prefix.*` (usually `image_encoder`). Through [`TensorSource::Frozen`] the forward uses
    /// candle's fused LayerNorm and softmax; through [`TensorSource::Trainable`] every tensor is
    /// registered in the store under its key and the forward is differentiable end to end.
    pub fn load(src: &mut TensorSource, prefix: &str, config: &VitConfig) -> Result<Self, HeadError> {
        let ops = if src.is_trainable() { Ops::Differentiable } else { Ops::Fused };
        let d = config.embed_dim;
        let p = config.patch_size;
        let g = config.grid();
        let dh = d / config.heads;
        let mut blocks = Vec::with_capacity(config.depth);
        for i in 0..config.depth {
            let b = format!("{prefix}.blocks.{i}");
            let window = if config.global_blocks.contains(&i) { 0 } else { config.window };
            let side = if window == 0 { g } else { window };
            blocks.push(Block {
                norm1: src.norm(&format!("{b}.norm1"), d)?,
                qkv: src.linear(&format!("{b}.attn.qkv"), d, 3 * d)?,
                proj: src.linear(&format!("{b}.attn.proj"), d, d)?,
                rel_h: src.get(&format!("{b}.attn.rel_pos_h"), &[2 * side - 1, dh])?,
                rel_w: src.get(&format!("{b}.attn.rel_pos_w"), &[2 * side - 1, dh])?,
                norm2: src.norm(&format!("{b}.norm2"), d)?,
                lin1: src.linear(&format!("{b}.mlp.lin1"), d, 4 * d)?,
                lin2: src.linear(&format!("{b}.mlp.lin2"), 4 * d, d)?,
                window,
            });
        }
        let o = config.out_chans;
        Ok(Self {
            config: config.clone(),
            ops,
            patch_weight: src.get(&format!("{prefix}.patch_embed.proj.weight"), &[d, 3, p, p])?,
            patch_bias: src.get(&format!("{prefix}.patch_embed.proj.bias"), &[d])?,
            pos_embed: src.get(&format!("{prefix}.pos_embed"), &[1, g, g, d])?,
            blocks,
            neck_conv1: src.get(&format!("{prefix}.neck.0.weight"), &[o, d, 1, 1])?,
            neck_norm1: src.norm(&format!("{prefix}.neck.1"), o)?,
            neck_conv2: src.get(&format!("{prefix}.neck.2.weight"), &[o, o, 3, 3])?,
            neck_norm2: src.norm(&format!("{prefix}.neck.3"), o)?,
        })
    }

    /// The patch-embedding weight and the absolute positions: enough to tell encoders apart.
    pub fn fingerprint_tensors(&self) -> Vec<&Tensor> {
        vec![&self.patch_weight, &self.pos_embed]
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// `[1, 3, S, S]` normalized, padded image → `[1, out_chans, S/patch, S/patch]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let x = conv2d_patches(x, &self.patch_weight, Some(&self.patch_bias))?.permute((0, 2, 3, 1))?;
        let mut x = x.broadcast_add(&self.pos_embed)?.contiguous()?; // [1, g, g, d]
        for block in &self.blocks {
            x = self.block(block, &x)?;
        }
        let x = x.permute((0, 3, 1, 2))?.contiguous()?;
        let x = flmm_nn::conv::conv2d(&x, &self.neck_conv1, None, 0)?;
        let x = self.ops.channel_norm(&x, &self.neck_norm1)?;
        let x = flmm_nn::conv::conv2d(&x, &self.neck_conv2, None, 1)?;
        self.ops.channel_norm(&x, &self.neck_norm2)
    }

    fn block(&self, b: &Block, x: &Tensor) -> Result<Tensor, HeadError> {
        let (_, h, w, _) = x.dims4()?;
        let y = self.ops.layer_norm(x, &b.norm1, BLOCK_EPS)?;
        let y = if b.window > 0 {
            let (windows, hp, wp) = window_partition(&y, b.window)?;
            let out = self.attention(b, &windows)?;
            window_unpartition(&out, b.window, (hp, wp), (h, w))?
        } else {
            self.attention(b, &y)?
        };
        let x = (x + y)?;
        let m = b.lin2.forward(&flmm_nn::act::gelu(&b.lin1.forward(&self.ops.layer_norm(&x, &b.norm2, BLOCK_EPS)?)?)?)?;
        Ok((x + m)?)
    }

    /// Attention with decomposed relative positions over `[B, h, w, d]` (windows or the whole grid).
    fn attention(&self, b: &Block, x: &Tensor) -> Result<Tensor, HeadError> {
        let (bsz, h, w, d) = x.dims4()?;
        let heads = self.config.heads;
        let dh = d / heads;
        let n = h * w;
        let qkv = b.qkv.forward(&x.reshape((bsz, n, d))?)?.reshape((bsz, n, 3, heads, dh))?.permute((2, 0, 3, 1, 4))?;
        let qkv = qkv.reshape((3, bsz * heads, n, dh))?;
        let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
        let rh = relative_table(&b.rel_h, h)?; // [h, h, dh]
        let rw = relative_table(&b.rel_w, w)?; // [w, w, dh]
        let scale = (dh as f64).powf(-0.5);
        let total = bsz * heads;
        let chunk = (SCORE_CHUNK_BYTES / (4 * n * n)).clamp(1, total);
        let mut outs = Vec::with_capacity(total.div_ceil(chunk));
        let mut start = 0;
        while start < total {
            let m = chunk.min(total - start);
            let qc = q.narrow(0, start, m)?;
            let kc = k.narrow(0, start, m)?;
            let vc = v.narrow(0, start, m)?;
            let attn = ((&qc * scale)?.matmul(&kc.t()?)?).reshape((m, h, w, h, w))?;
            let rq = qc.reshape((m, h, w, dh))?;
            // rel_h[b, y, x, ky] = Σ_c q[b, y, x, c] · Rh[y, ky, c]
            let rel_h = rq.permute((1, 0, 2, 3))?.reshape((h, m * w, dh))?.matmul(&rh.transpose(1, 2)?)?;
            let rel_h = rel_h.reshape((h, m, w, h))?.permute((1, 0, 2, 3))?;
            // rel_w[b, y, x, kx] = Σ_c q[b, y, x, c] · Rw[x, kx, c]
            let rel_w = rq.permute((2, 0, 1, 3))?.reshape((w, m * h, dh))?.matmul(&rw.transpose(1, 2)?)?;
            let rel_w = rel_w.reshape((w, m, h, w))?.permute((1, 2, 0, 3))?;
            let attn = attn.broadcast_add(&rel_h.unsqueeze(4)?)?.broadcast_add(&rel_w.unsqueeze(3)?)?;
            let attn = self.ops.softmax(&attn.reshape((m, n, n))?)?;
            outs.push(attn.matmul(&vc)?);
            start += m;
        }
        let o = Tensor::cat(&outs, 0)?; // [B·heads, n, dh]
        let o = o.reshape((bsz, heads, h, w, dh))?.permute((0, 2, 3, 1, 4))?.reshape((bsz, h, w, d))?;
        b.proj.forward(&o)
    }
}

/// `[2·size − 1, dh]` → `[size, size, dh]` with entry `(q, k)` = row `q − k + size − 1`.
fn relative_table(rel: &Tensor, size: usize) -> Result<Tensor, HeadError> {
    if rel.dim(0)? != 2 * size - 1 {
        return Err(HeadError::InvalidInput(format!(
            "relative positions for {} cells, attention over {size}; resizing them is not supported",
            rel.dim(0)?.div_ceil(2)
        )));
    }
    let idx: Vec<u32> = (0..size).flat_map(|q| (0..size).map(move |k| (q + size - 1 - k) as u32)).collect();
    let idx = Tensor::from_vec(idx, size * size, rel.device())?;
    Ok(rel.index_select(&idx, 0)?.reshape((size, size, rel.dim(1)?))?)
}

/// `[1, H, W, C]` → windows `[n, ws, ws, C]` after zero-padding H and W to multiples of `ws`.
fn window_partition(x: &Tensor, ws: usize) -> Result<(Tensor, usize, usize), HeadError> {
    let (b, h, w, c) = x.dims4()?;
    let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let x = x.pad_with_zeros(1, 0, hp - h)?.pad_with_zeros(2, 0, wp - w)?;
    let windows = x
        .reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))?;
    Ok((windows, hp, wp))
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(windows: &Tensor, ws: usize, (hp, wp): (usize, usize), (h, w): (usize, usize)) -> Result<Tensor, HeadError> {
    let c = windows.dim(3)?;
    let b = windows.dim(0)? / ((hp / ws) * (wp / ws));
    let x = windows.reshape((b, hp / ws, wp / ws, ws, ws, c))?.permute((0, 1, 3, 2, 4, 5))?.reshape((b, hp, wp, c))?;
    Ok(x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()?)
}
