//! Softmax with a backward pass (candle's fused `softmax_last_dim` has none).

use candle_core::{Result, Tensor, D};

/// Softmax along the last dimension: `exp(x − max) / Σ exp(x − max)`.
///
/// The max is detached: it cancels exactly in the result, so its gradient contribution is zero.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    #[test]
    fn rows_sum_to_one_even_for_huge_logits() {
        let x = Tensor::new(&[[1000.0f32, 1000.0, -1000.0], [0.0, 0.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = softmax_last_dim(&x).unwrap().to_vec2().unwrap();
        assert_eq!(y[0], vec![0.5, 0.5, 0.0]);
        assert!((y[1][0] - 1.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = sample(&[4, 6], -3.0, 3.0, 11).unwrap();
        let r = check(|t| weighted_sum(&softmax_last_dim(&t[0])?, 12), &[x], 1e-6, 24).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
    }
}
