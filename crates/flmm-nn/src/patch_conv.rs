//! Convolutions whose kernel equals their stride (non-overlapping patches), as reshapes and one matmul,
//! so autograd differentiates them exactly: SAM's patch embedding and mask downscaling (`Conv2d`,
//! k = s = 2 or 16) and its output upscaling (`ConvTranspose2d`, k = s = 2).

use candle_core::{bail, Result, Tensor};

/// `Conv2d(kernel = stride = k, padding 0)`: `x [N, Ci, H, W]` (H, W multiples of k), `w [Co, Ci, k, k]`.
pub fn conv2d_patches(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, ci, h, wd) = x.dims4()?;
    let (co, wci, k, k2) = w.dims4()?;
    if wci != ci || k != k2 || k == 0 || h % k != 0 || wd % k != 0 {
        bail!("conv2d_patches: input {:?} and kernel {:?} do not tile", x.dims(), w.dims());
    }
    let (gh, gw) = (h / k, wd / k);
    let patches = x
        .reshape((n, ci, gh, k, gw, k))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((n * gh * gw, ci * k * k))?;
    let mut y = patches.matmul(&w.reshape((co, ci * k * k))?.t()?)?; // [n·gh·gw, co]
    if let Some(b) = bias {
        y = crate::fused::add_bias(&y, b)?;
    }
    y.reshape((n, gh, gw, co))?.permute((0, 3, 1, 2))?.contiguous()
}

/// `ConvTranspose2d(kernel = stride = k, padding 0)`: `x [N, Ci, H, W]`, `w [Ci, Co, k, k]` (PyTorch's
/// transposed-convolution layout) → `[N, Co, H·k, W·k]`.
pub fn conv_transpose2d_patches(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, ci, h, wd) = x.dims4()?;
    let (wci, co, k, k2) = w.dims4()?;
    if wci != ci || k != k2 || k == 0 {
        bail!("conv_transpose2d_patches: input {:?} and kernel {:?} do not match", x.dims(), w.dims());
    }
    let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * wd, ci))?;
    let mut y = rows.matmul(&w.reshape((ci, co * k * k))?)?; // [n·h·w, co·k·k]
    if let Some(b) = bias {
        // Column (o, ky, kx) gets b[o]; added before the permute, so the bias gradient is a column sum.
        y = crate::fused::add_bias(&y, &b.reshape((co, 1))?.broadcast_as((co, k * k))?.reshape(co * k * k)?)?;
    }
    y.reshape((n, h, wd, co, k, k))?.permute((0, 3, 1, 4, 2, 5))?.reshape((n, co, h * k, wd * k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn patch_conv_equals_strided_conv() {
        let x = sample(&[2, 3, 8, 6], -1.0, 1.0, 1).unwrap();
        let w = sample(&[5, 3, 2, 2], -1.0, 1.0, 2).unwrap();
        let b = sample(&[5], -1.0, 1.0, 3).unwrap();
        let want = x.conv2d(&w, 0, 2, 1, 1).unwrap().broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&conv2d_patches(&x, &w, Some(&b)).unwrap(), &want) < 1e-12);
    }

    #[test]
    fn patch_transpose_equals_strided_transpose() {
        let x = sample(&[2, 4, 3, 5], -1.0, 1.0, 4).unwrap();
        let w = sample(&[4, 3, 2, 2], -1.0, 1.0, 5).unwrap();
        let want = x.conv_transpose2d(&w, 0, 0, 2, 1).unwrap();
        assert!(max_diff(&conv_transpose2d_patches(&x, &w, None).unwrap(), &want) < 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = sample(&[1, 2, 4, 4], -1.0, 1.0, 6).unwrap();
        let w = sample(&[3, 2, 2, 2], -1.0, 1.0, 7).unwrap();
        let b = sample(&[3], -1.0, 1.0, 8).unwrap();
        let r = check(|t| weighted_sum(&conv2d_patches(&t[0], &t[1], Some(&t[2]))?, 9), &[x.clone(), w, b.clone()], 1e-6, 24).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
        let wt = sample(&[2, 3, 2, 2], -1.0, 1.0, 10).unwrap();
        let r = check(|t| weighted_sum(&conv_transpose2d_patches(&t[0], &t[1], Some(&t[2]))?, 11), &[x, wt, b], 1e-6, 24).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let x = sample(&[1, 2, 5, 4], -1.0, 1.0, 1).unwrap();
        assert!(conv2d_patches(&x, &sample(&[3, 2, 2, 2], -1.0, 1.0, 2).unwrap(), None).is_err());
    }
}
