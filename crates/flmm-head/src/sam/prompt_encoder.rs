//! SAM's prompt encoder: points and box corners as random-Fourier positional encodings plus learned
//! type embeddings (sparse), the mask prompt downscaled by two patch convolutions (dense). Trainable.

use candle_core::{Device, Tensor};
use flmm_nn::act::gelu;
use flmm_nn::norm::layer_norm_2d;
use flmm_nn::patch_conv::conv2d_patches;

use crate::error::HeadError;
use crate::sam::parts::TensorSource;

/// A point prompt in the encoder's input frame (pixels of the resized, padded image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointPrompt {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
    /// 1 foreground, 0 background, -1 padding.
    pub label: i32,
}

/// The prompts of one mask.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    /// Points.
    pub points: Vec<PointPrompt>,
    /// A box `[x0, y0, x1, y1]` in the input frame.
    pub bbox: Option<[f32; 4]>,
    /// A mask prompt `[1, 1, 4h, 4w]` of logits (may carry gradients).
    pub mask: Option<Tensor>,
}

/// Prompt encoder tensors (official key names under `prompt_encoder.`).
pub struct PromptEncoder {
    embed_dim: usize,
    embedding_size: (usize, usize),
    input_size: (usize, usize),
    /// A variable only so a head file can overwrite it in place; never registered for training.
    gaussian: candle_core::Var,
    point_embeddings: Vec<Tensor>,
    not_a_point: Tensor,
    no_mask: Tensor,
    downscale: [(Tensor, Tensor); 5],
}

impl PromptEncoder {
    /// Loads `prefix.*` (usually `prompt_encoder`) for image embeddings of `embedding_size` from inputs
    /// of `input_size`; `mask_in_chans` is 16 in every SAM.
    pub fn load(
        src: &mut TensorSource,
        prefix: &str,
        embed_dim: usize,
        embedding_size: (usize, usize),
        input_size: (usize, usize),
        mask_in_chans: usize,
    ) -> Result<Self, HeadError> {
        let gaussian = src.buffer(&format!("{prefix}.pe_layer.positional_encoding_gaussian_matrix"), &[2, embed_dim / 2])?;
        let gaussian = candle_core::Var::from_tensor(&gaussian)?;
        let point_embeddings = (0..4)
            .map(|i| src.get(&format!("{prefix}.point_embeddings.{i}.weight"), &[1, embed_dim]))
            .collect::<Result<Vec<_>, _>>()?;
        let not_a_point = src.get(&format!("{prefix}.not_a_point_embed.weight"), &[1, embed_dim])?;
        let no_mask = src.get(&format!("{prefix}.no_mask_embed.weight"), &[1, embed_dim])?;
        let q = mask_in_chans / 4;
        let md = format!("{prefix}.mask_downscaling");
        let mut pair = |i: usize, w: &[usize], b: usize| -> Result<(Tensor, Tensor), HeadError> {
            Ok((src.get(&format!("{md}.{i}.weight"), w)?, src.get(&format!("{md}.{i}.bias"), &[b])?))
        };
        let downscale = [
            pair(0, &[q, 1, 2, 2], q)?,
            pair(1, &[q], q)?,
            pair(3, &[mask_in_chans, q, 2, 2], mask_in_chans)?,
            pair(4, &[mask_in_chans], mask_in_chans)?,
            pair(6, &[embed_dim, mask_in_chans, 1, 1], embed_dim)?,
        ];
        Ok(Self { embed_dim, embedding_size, input_size, gaussian, point_embeddings, not_a_point, no_mask, downscale })
    }

    /// The random Fourier projection `[2, C/2]` (a buffer, saved with heads).
    pub fn gaussian(&self) -> &Tensor {
        self.gaussian.as_tensor()
    }

    /// Overwrites the random Fourier projection (head files carry it as a buffer).
    pub fn set_gaussian(&self, value: &Tensor) -> Result<(), HeadError> {
        if value.dims() != self.gaussian.dims() {
            return Err(HeadError::InvalidInput(format!("positional encoding {:?}, expected {:?}", value.dims(), self.gaussian.dims())));
        }
        Ok(self.gaussian.set(&value.to_dtype(self.gaussian.dtype())?)?)
    }

    /// Size of the image embedding `(h, w)`; mask prompts are `4h × 4w`.
    pub fn embedding_size(&self) -> (usize, usize) {
        self.embedding_size
    }

    /// `[n, 2]` coordinates already divided by the frame size → `[n, C]` Fourier features.
    fn fourier(&self, unit_coords: &Tensor) -> Result<Tensor, HeadError> {
        let c = ((unit_coords.to_dtype(self.gaussian.dtype())? * 2.0)? - 1.0)?.matmul(self.gaussian.as_tensor())?;
        let c = (c * (2.0 * std::f64::consts::PI))?;
        Ok(Tensor::cat(&[&c.sin()?, &c.cos()?], 1)?)
    }

    /// Encodes pixel coordinates `(x, y)` of the input frame (`+0.5` centres them as SAM does).
    fn encode_coords(&self, coords: &[(f32, f32)], device: &Device) -> Result<Tensor, HeadError> {
        let (h, w) = self.input_size;
        let v: Vec<f32> = coords.iter().flat_map(|&(x, y)| [(x + 0.5) / w as f32, (y + 0.5) / h as f32]).collect();
        self.fourier(&Tensor::from_vec(v, (coords.len(), 2), device)?)
    }

    /// The positional encoding of every image-embedding cell, `[1, C, h, w]`.
    pub fn dense_pe(&self) -> Result<Tensor, HeadError> {
        let (h, w) = self.embedding_size;
        let mut v = Vec::with_capacity(h * w * 2);
        for i in 0..h {
            for j in 0..w {
                v.push((j as f32 + 0.5) / w as f32);
                v.push((i as f32 + 0.5) / h as f32);
            }
        }
        let pe = self.fourier(&Tensor::from_vec(v, (h * w, 2), self.gaussian.device())?)?;
        Ok(pe.reshape((h, w, self.embed_dim))?.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }

    /// `(sparse [1, n, C], dense [1, C, h, w])`. Points are padded with one "not a point" when no box is
    /// given, as SAM does.
    pub fn forward(&self, prompts: &Prompts) -> Result<(Tensor, Tensor), HeadError> {
        let device = self.gaussian.device();
        let mut sparse = Vec::new();
        if !prompts.points.is_empty() {
            let mut points = prompts.points.clone();
            if prompts.bbox.is_none() {
                points.push(PointPrompt { x: 0.0, y: 0.0, label: -1 });
            }
            let pe = self.encode_coords(&points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>(), device)?;
            let mut rows = Vec::with_capacity(points.len());
            for (i, p) in points.iter().enumerate() {
                let row = pe.narrow(0, i, 1)?;
                rows.push(match p.label {
                    -1 => self.not_a_point.clone(),
                    0 => (row + &self.point_embeddings[0])?,
                    1 => (row + &self.point_embeddings[1])?,
                    other => return Err(HeadError::InvalidInput(format!("point label {other} (expected 1, 0 or -1)"))),
                });
            }
            sparse.push(Tensor::cat(&rows, 0)?);
        }
        if let Some([x0, y0, x1, y1]) = prompts.bbox {
            let corners = self.encode_coords(&[(x0, y0), (x1, y1)], device)?;
            let tl = (corners.narrow(0, 0, 1)? + &self.point_embeddings[2])?;
            let br = (corners.narrow(0, 1, 1)? + &self.point_embeddings[3])?;
            sparse.push(Tensor::cat(&[&tl, &br], 0)?);
        }
        let sparse = if sparse.is_empty() {
            Tensor::zeros((1, 0, self.embed_dim), self.no_mask.dtype(), device)?
        } else {
            Tensor::cat(&sparse, 0)?.unsqueeze(0)?
        };
        let (h, w) = self.embedding_size;
        let dense = match &prompts.mask {
            Some(mask) => self.downscale_mask(mask)?,
            None => self.no_mask.reshape((1, self.embed_dim, 1, 1))?.broadcast_as((1, self.embed_dim, h, w))?.contiguous()?,
        };
        Ok((sparse, dense))
    }

    /// `[1, 1, 4h, 4w]` → `[1, C, h, w]`: conv 2×2/2, LayerNorm2d, GELU, conv 2×2/2, LayerNorm2d, GELU, conv 1×1.
    fn downscale_mask(&self, mask: &Tensor) -> Result<Tensor, HeadError> {
        let (h, w) = self.embedding_size;
        if mask.dims() != [1, 1, 4 * h, 4 * w] {
            return Err(HeadError::InvalidInput(format!("mask prompt {:?}, expected [1, 1, {}, {}]", mask.dims(), 4 * h, 4 * w)));
        }
        let [c0, n1, c3, n4, c6] = &self.downscale;
        let x = conv2d_patches(mask, &c0.0, Some(&c0.1))?;
        let x = gelu(&layer_norm_2d(&x, &n1.0, &n1.1, 1e-6)?)?;
        let x = conv2d_patches(&x, &c3.0, Some(&c3.1))?;
        let x = gelu(&layer_norm_2d(&x, &n4.0, &n4.1, 1e-6)?)?;
        Ok(conv2d_patches(&x, &c6.0, Some(&c6.1))?)
    }
}
