//! Small inference-only building blocks shared by the towers and decoders (no gradients needed: the
//! backbone is frozen).

use candle_core::{DType, Module, Tensor, D};

use crate::config::Activation;
use crate::error::Result;

/// Applies an activation function.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Gelu => x.gelu_erf()?,
        Activation::GeluTanh => x.gelu()?,
        Activation::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
        Activation::Silu => candle_nn::ops::silu(x)?,
    })
}

/// RMSNorm as transformers' LLaMA computes it: statistics in f32 (f64 inputs stay f64), normalized value
/// cast back to the input dtype, then multiplied by the weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Wraps a `[d]` weight.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let xf = if dtype == DType::F64 { x.clone() } else { x.to_dtype(DType::F32)? };
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
        normed.broadcast_mul(&self.weight)
    }
}

/// Rotary position embedding tables (LLaMA convention: the two halves of each head are rotated
/// against each other, `x·cos + rotate_half(x)·sin`).
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    /// `inv_freq[i] = theta^(-2i/head_dim)`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        Self { inv_freq }
    }

    /// cos/sin tables `[n, head_dim]` for positions `start..start+n`, in f32 (computed as transformers
    /// does: f32 position × f32 inverse frequency).
    pub fn tables(&self, start: usize, n: usize, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(n * half * 2);
        for p in start..start + n {
            let row: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            angles.extend_from_slice(&row);
            angles.extend_from_slice(&row);
        }
        let angles = Tensor::from_vec(angles, (n, 2 * half), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Rotates `x` `[heads, n, head_dim]` with tables from [`Rotary::tables`] (cast to x's dtype).
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        let cos = cos.to_dtype(dtype)?;
        let sin = sin.to_dtype(dtype)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}
