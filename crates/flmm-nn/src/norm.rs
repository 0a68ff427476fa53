//! GroupNorm and LayerNorm composed from differentiable primitives (candle's fused norms drop
//! gradients). Statistics are computed in f32 or wider even when the input is bf16, as PyTorch's
//! autocast does for normalization layers.

use candle_core::{DType, Result, Tensor, D};

fn stats_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// `GroupNorm(num_groups, eps)` over `x: [N, C, *]` with per-channel affine `weight`, `bias: [C]`.
///
/// Mean and biased variance are taken over each group's channels and all spatial positions,
/// exactly as `torch.nn.GroupNorm`. On the CPU one custom op with its own backward
/// ([`crate::fused_group_norm`]); elsewhere composed.
pub fn group_norm(x: &Tensor, num_groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    group_norm_then(x, num_groups, weight, bias, eps, false)
}

/// [`group_norm`] followed by ReLU (mmseg's `ConvModule` norm and activation), one op on the CPU.
pub fn group_norm_relu(x: &Tensor, num_groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    group_norm_then(x, num_groups, weight, bias, eps, true)
}

fn group_norm_then(x: &Tensor, num_groups: usize, weight: &Tensor, bias: &Tensor, eps: f64, relu: bool) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 || !dims[1].is_multiple_of(num_groups) {
        candle_core::bail!("group_norm: {num_groups} groups do not divide the channels of {dims:?}");
    }
    let in_dtype = x.dtype();
    let xs = x.to_dtype(stats_dtype(in_dtype))?;
    if crate::fused::applies(&xs) {
        let (w, b) = (weight.to_dtype(xs.dtype())?, bias.to_dtype(xs.dtype())?);
        return crate::fused_group_norm::group_norm(&xs, num_groups, &w, &b, eps, relu)?.to_dtype(in_dtype);
    }
    let y = group_norm_composed(x, num_groups, weight, bias, eps)?;
    if relu {
        crate::act::relu(&y)
    } else {
        Ok(y)
    }
}

/// The composed GroupNorm (statistics in f32 or wider).
fn group_norm_composed(x: &Tensor, num_groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    let in_dtype = x.dtype();
    let xs = x.to_dtype(stats_dtype(in_dtype))?.reshape((n, num_groups, ()))?;
    let normalized = standardize_last_dim(&xs, eps)?.reshape(dims.as_slice())?;
    let mut affine_shape = vec![1usize; dims.len()];
    affine_shape[1] = c;
    let w = weight.to_dtype(normalized.dtype())?.reshape(affine_shape.as_slice())?;
    let b = bias.to_dtype(normalized.dtype())?.reshape(affine_shape.as_slice())?;
    normalized.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(in_dtype)
}

/// `LayerNorm` over the last dimension with affine `weight`, `bias: [D]`, as `torch.nn.LayerNorm`. On
/// the CPU one custom op with its own backward ([`crate::fused`]); elsewhere composed.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let in_dtype = x.dtype();
    let xs = x.to_dtype(stats_dtype(in_dtype))?;
    if crate::fused::applies(&xs) {
        return crate::fused::layer_norm(&xs, &weight.to_dtype(xs.dtype())?, &bias.to_dtype(xs.dtype())?, eps)?.to_dtype(in_dtype);
    }
    layer_norm_composed(x, weight, bias, eps)
}

/// The composed LayerNorm (statistics in f32 or wider).
fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let in_dtype = x.dtype();
    let normalized = standardize_last_dim(&x.to_dtype(stats_dtype(in_dtype))?, eps)?;
    let w = weight.to_dtype(normalized.dtype())?;
    let b = bias.to_dtype(normalized.dtype())?;
    normalized.broadcast_mul(&w)?.broadcast_add(&b)?.to_dtype(in_dtype)
}

/// SAM's `LayerNorm2d`: normalizes `x [N, C, H, W]` over channels at every pixel, affine `[C]`.
pub fn layer_norm_2d(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    layer_norm(&x.permute((0, 2, 3, 1))?, weight, bias, eps)?.permute((0, 3, 1, 2))
}

/// `(x − mean) / sqrt(var + eps)` along the last dimension, biased variance.
fn standardize_last_dim(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    #[test]
    fn group_norm_normalizes_each_group() {
        let x = sample(&[2, 4, 3, 5], -2.0, 3.0, 1).unwrap();
        let ones = Tensor::ones(4, DType::F64, x.device()).unwrap();
        let zeros = Tensor::zeros(4, DType::F64, x.device()).unwrap();
        let y = group_norm(&x, 2, &ones, &zeros, 0.0).unwrap();
        let g = y.reshape((2, 2, 30)).unwrap();
        let mean: Vec<Vec<f64>> = g.mean(2).unwrap().to_vec2().unwrap();
        let var: Vec<Vec<f64>> = g.sqr().unwrap().mean(2).unwrap().to_vec2().unwrap();
        for (m, v) in mean.iter().flatten().zip(var.iter().flatten()) {
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-12, "mean {m} var {v}");
        }
    }

    #[test]
    fn group_norm_gradients_match_finite_differences() {
        let x = sample(&[2, 4, 3, 3], -1.0, 1.0, 2).unwrap();
        let w = sample(&[4], 0.5, 1.5, 3).unwrap();
        let b = sample(&[4], -0.5, 0.5, 4).unwrap();
        for f in [group_norm, group_norm_relu, group_norm_composed] {
            for groups in [1, 2] {
                let r = check(|t| weighted_sum(&f(&t[0], groups, &t[1], &t[2], 1e-5)?, 5), &[x.clone(), w.clone(), b.clone()], 1e-6, 30)
                    .unwrap();
                assert!(r.max_error < 1e-7, "groups {groups}: {r:?}");
            }
        }
    }

    #[test]
    fn layer_norm_gradients_match_finite_differences() {
        let x = sample(&[3, 2, 8], -1.0, 1.0, 6).unwrap();
        let w = sample(&[8], 0.5, 1.5, 7).unwrap();
        let b = sample(&[8], -0.5, 0.5, 8).unwrap();
        for f in [layer_norm, layer_norm_composed] {
            let r = check(|t| weighted_sum(&f(&t[0], &t[1], &t[2], 1e-6)?, 9), &[x.clone(), w.clone(), b.clone()], 1e-6, 30).unwrap();
            assert!(r.max_error < 1e-7, "{r:?}");
        }
    }

    type Norm = dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

    /// The fused `norm` and its `composed` twin agree in value and in every gradient, in f32 and bf16,
    /// on a non-contiguous input of `shape` (last-but-first dims swapped) with affine parameters `[affine]`.
    fn assert_fused_equals_composed(shape: [usize; 3], affine: usize, fused: &Norm, composed: &Norm) {
        for dtype in [DType::F32, DType::BF16] {
            let x = sample(&[shape[1], shape[0], shape[2]], -2.0, 2.0, 21).unwrap().to_dtype(dtype).unwrap();
            let x = candle_core::Var::from_tensor(&x.transpose(0, 1).unwrap()).unwrap(); // non-contiguous view
            let w = candle_core::Var::from_tensor(&sample(&[affine], 0.5, 1.5, 22).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
            let b = candle_core::Var::from_tensor(&sample(&[affine], -0.5, 0.5, 23).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
            let probe = sample(&shape, -1.0, 1.0, 24).unwrap().to_dtype(dtype).unwrap();
            let mut outs = Vec::new();
            for f in [fused, composed] {
                let y = f(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
                assert_eq!(y.dtype(), dtype);
                let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
                let grads: Vec<Tensor> = [x.as_tensor(), w.as_tensor(), b.as_tensor()].iter().map(|v| g.get(v).unwrap().to_dtype(DType::F32).unwrap()).collect();
                outs.push((y.to_dtype(DType::F32).unwrap(), grads));
            }
            let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff(&outs[0].0, &outs[1].0) < tol, "{dtype:?} forward");
            for (a, b) in outs[0].1.iter().zip(&outs[1].1) {
                assert!(diff(a, b) < tol, "{dtype:?} gradient: max |Δ| {}", diff(a, b));
            }
        }
    }

    #[test]
    fn fused_layer_norm_equals_composed_in_f32_and_bf16() {
        assert_fused_equals_composed([4, 6, 9], 9, &|x, w, b| layer_norm(x, w, b, 1e-5), &|x, w, b| layer_norm_composed(x, w, b, 1e-5));
    }

    #[test]
    fn fused_group_norm_equals_composed_in_f32_and_bf16() {
        for groups in [1, 3] {
            let fused = move |x: &Tensor, w: &Tensor, b: &Tensor| group_norm(x, groups, w, b, 1e-5);
            let composed = move |x: &Tensor, w: &Tensor, b: &Tensor| group_norm_composed(x, groups, w, b, 1e-5);
            assert_fused_equals_composed([2, 6, 9], 6, &fused, &composed);
        }
    }

    #[test]
    fn fused_group_norm_relu_equals_composed_in_f32_and_bf16() {
        for groups in [1, 3] {
            let fused = move |x: &Tensor, w: &Tensor, b: &Tensor| group_norm_relu(x, groups, w, b, 1e-5);
            let composed = move |x: &Tensor, w: &Tensor, b: &Tensor| crate::act::relu(&group_norm_composed(x, groups, w, b, 1e-5)?);
            assert_fused_equals_composed([2, 6, 9], 6, &fused, &composed);
        }
    }

    #[test]
    fn layer_norm_2d_normalizes_channels_and_has_gradients() {
        let x = sample(&[1, 3, 2, 4], -2.0, 2.0, 31).unwrap();
        let w = sample(&[3], 0.5, 1.5, 32).unwrap();
        let b = sample(&[3], -0.5, 0.5, 33).unwrap();
        let ones = Tensor::ones(3, DType::F64, x.device()).unwrap();
        let zeros = Tensor::zeros(3, DType::F64, x.device()).unwrap();
        let y = layer_norm_2d(&x, &ones, &zeros, 1e-6).unwrap();
        let channel_mean = y.mean(1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(channel_mean < 1e-12);
        let r = check(|t| weighted_sum(&layer_norm_2d(&t[0], &t[1], &t[2], 1e-6)?, 34), &[x, w, b], 1e-6, 24).unwrap();
        assert!(r.max_error < 1e-7, "{r:?}");
    }
}
