//! 2×2 max-pooling with a correct backward (candle's `max_pool2d` backward scales by 0.25).

use candle_core::{Result, Tensor};

/// `MaxPool2d(kernel 2, stride 2)` on `[N, C, H, W]`, floor mode (an odd last row/column is dropped).
///
/// The gradient goes to one element per window, the first maximum in raster order, as PyTorch's.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    if ho == 0 || wo == 0 {
        candle_core::bail!("max_pool2x2: input {h}x{w} is smaller than the 2x2 window");
    }
    let x = x.narrow(2, 0, ho * 2)?.narrow(3, 0, wo * 2)?;
    let windows = x
        .reshape((n, c, ho, 2, wo, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, 4))?;
    let first_max = windows.detach().argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};
    use candle_core::{Device, Var};

    #[test]
    fn picks_the_window_maximum() {
        let x = Tensor::arange(0f32, 20.0, &Device::Cpu).unwrap().reshape((1, 1, 4, 5)).unwrap();
        let y: Vec<Vec<f32>> = max_pool2x2(&x).unwrap().squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![6.0, 8.0], vec![16.0, 18.0]]);
    }

    #[test]
    fn ties_send_the_whole_gradient_to_the_first_maximum() {
        let x = Var::new(&[[[[1.0f64, 1.0], [1.0, 1.0]]]], &Device::Cpu).unwrap();
        let g = max_pool2x2(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = sample(&[2, 3, 6, 4], -1.0, 1.0, 21).unwrap();
        let r = check(|t| weighted_sum(&max_pool2x2(&t[0])?, 22), &[x], 1e-7, 40).unwrap();
        assert!(r.max_error < 1e-7, "{r:?}");
    }
}
