//! Bilinear and nearest resizing with PyTorch's `F.interpolate` coordinate conventions.
//!
//! Bilinear resizing is separable, so it is computed as two matrix products `Rh · X · Rwᵀ` with small
//! interpolation matrices: exact, fast on candle's GEMM, and differentiable for free.

use candle_core::{DType, Device, Result, Tensor};

/// How output coordinates map to input coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Align {
    /// `align_corners=False`: `src = (dst + 0.5) · scale − 0.5`, clamped at 0. `scale` is `1 / scale_factor`
    /// when the caller gave a scale factor (PyTorch uses the given factor, not `in / out`), else `in / out`.
    HalfPixel {
        /// The user-given scale factor (output / input), if any.
        scale_factor: Option<f64>,
    },
    /// `align_corners=True`: `src = dst · (in − 1) / (out − 1)`.
    Corners,
}

impl Align {
    /// `align_corners=False` with the size-derived scale.
    pub const HALF_PIXEL: Align = Align::HalfPixel { scale_factor: None };
}

/// The `[out, in]` matrix of 1-D linear interpolation weights (rows sum to 1).
pub fn linear_weights(input: usize, output: usize, align: Align) -> Vec<f64> {
    let mut m = vec![0.0; output * input];
    for o in 0..output {
        let src = match align {
            Align::Corners => {
                if output > 1 {
                    o as f64 * (input as f64 - 1.0) / (output as f64 - 1.0)
                } else {
                    0.0
                }
            }
            Align::HalfPixel { scale_factor } => {
                let scale = match scale_factor {
                    Some(s) if s > 0.0 => 1.0 / s,
                    _ => input as f64 / output as f64,
                };
                ((o as f64 + 0.5) * scale - 0.5).max(0.0)
            }
        };
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let frac = src - i0 as f64;
        m[o * input + i0] += 1.0 - frac;
        m[o * input + i1] += frac;
    }
    m
}

fn weight_matrix(input: usize, output: usize, align: Align, dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(linear_weights(input, output, align), (output, input), device)?.to_dtype(dtype)
}

/// Bilinear resize of the last two dimensions of `x: [.., H, W]` to `(out_h, out_w)`.
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize, align_h: Align, align_w: Align) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 2 {
        candle_core::bail!("resize_bilinear needs at least 2 dims, got {:?}", x.shape());
    }
    let (h, w) = (x.dims()[rank - 2], x.dims()[rank - 1]);
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!("resize_bilinear: empty size {h}x{w} -> {out_h}x{out_w}");
    }
    let rw_t = weight_matrix(w, out_w, align_w, x.dtype(), x.device())?.t()?;
    let rh = weight_matrix(h, out_h, align_h, x.dtype(), x.device())?;
    let x = if w == out_w && is_identity(align_w) { x.clone() } else { x.broadcast_matmul(&rw_t)? };
    if h == out_h && is_identity(align_h) {
        Ok(x)
    } else {
        rh.broadcast_matmul(&x)
    }
}

/// Whether the same-size resize is an identity (it is, except for a non-unit user scale factor).
fn is_identity(align: Align) -> bool {
    !matches!(align, Align::HalfPixel { scale_factor: Some(s) } if s != 1.0)
}

/// `F.interpolate(x, size, mode='bilinear', align_corners=False)`.
pub fn resize_bilinear_to(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    resize_bilinear(x, out_h, out_w, Align::HALF_PIXEL, Align::HALF_PIXEL)
}

/// `F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)`: output `floor(size·s)`,
/// coordinates mapped with the given `s`.
pub fn resize_bilinear_by(x: &Tensor, scale: f64) -> Result<Tensor> {
    let rank = x.rank();
    let (h, w) = (x.dims()[rank - 2], x.dims()[rank - 1]);
    let (oh, ow) = ((h as f64 * scale).floor() as usize, (w as f64 * scale).floor() as usize);
    let align = Align::HalfPixel { scale_factor: Some(scale) };
    resize_bilinear(x, oh, ow, align, align)
}

/// PyTorch `mode='nearest'` source index: `floor(dst · in / out)`, clamped.
pub fn nearest_index(dst: usize, input: usize, output: usize) -> usize {
    (((dst as f64) * (input as f64 / output as f64)).floor() as usize).min(input - 1)
}

/// `F.interpolate(mask, size, mode='nearest')` for a row-major `h × w` plane of any copyable value.
pub fn resize_nearest_plane<T: Copy>(plane: &[T], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<T> {
    let cols: Vec<usize> = (0..out_w).map(|x| nearest_index(x, w, out_w)).collect();
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let row = nearest_index(y, h, out_h) * w;
        out.extend(cols.iter().map(|&x| plane[row + x]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    #[test]
    fn upsampling_2x_matches_pytorch_half_pixel_rule() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode='bilinear')
        // = [0, 0.25, 0.75, 1]: endpoints clamp, inner points sit at quarter offsets.
        let x = Tensor::new(&[[[[0.0f32, 1.0]]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = resize_bilinear_to(&x, 1, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn align_corners_keeps_the_endpoints() {
        let x = Tensor::new(&[[[[0.0f32, 3.0]]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = resize_bilinear(&x, 1, 4, Align::Corners, Align::Corners).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn given_scale_factor_is_used_for_coordinates() {
        // 13 rows scaled by 64/17: output floor(48.94) = 48 rows, source step 17/64 (not 13/48).
        let m = linear_weights(13, 48, Align::HalfPixel { scale_factor: Some(64.0 / 17.0) });
        let src_row_47: f64 = (0..13).map(|i| m[47 * 13 + i] * i as f64).sum();
        let expected = (47.5 * 17.0 / 64.0 - 0.5f64).min(12.0);
        assert!((src_row_47 - expected).abs() < 1e-12, "{src_row_47} vs {expected}");
    }

    #[test]
    fn nearest_follows_floor_rule() {
        let plane = [1u8, 2, 3];
        assert_eq!(resize_nearest_plane(&plane, 1, 3, 1, 5), vec![1, 1, 2, 2, 3]);
        assert_eq!(resize_nearest_plane(&plane, 1, 3, 1, 2), vec![1, 2]);
    }

    #[test]
    fn gradient_matches_finite_differences_both_alignments() {
        let x = sample(&[2, 3, 4, 5], -1.0, 1.0, 31).unwrap();
        for align in [Align::HALF_PIXEL, Align::Corners] {
            let r = check(|t| weighted_sum(&resize_bilinear(&t[0], 7, 3, align, align)?, 32), std::slice::from_ref(&x), 1e-6, 40).unwrap();
            assert!(r.max_error < 1e-9, "{align:?}: {r:?}");
        }
    }
}
