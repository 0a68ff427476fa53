//! Activations with PyTorch's gradient conventions.

use candle_core::{Result, Tensor};

/// ReLU whose gradient is 0 at exactly 0, as PyTorch's (candle's own passes 1 there).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let mask = x.gt(0.0)?.to_dtype(x.dtype())?;
    x * mask
}

/// Logistic sigmoid composed from primitives (differentiable), stable for large |x|.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    // 1 / (1 + exp(-x)); exp(-x) overflows to inf for x << 0 giving exactly 0, which is the right limit.
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Exact (erf) GELU, as `torch.nn.GELU()`; candle's `gelu_erf` carries a correct backward (tested below).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    #[test]
    fn relu_gradient_matches_finite_differences() {
        // Values away from the kink at 0, where finite differences are undefined.
        let v: Vec<f64> = (0..21).map(|i| if i % 2 == 0 { 0.1 + i as f64 * 0.05 } else { -0.2 - i as f64 * 0.03 }).collect();
        let x = Tensor::from_vec(v, (3, 7), &candle_core::Device::Cpu).unwrap();
        let r = check(|t| weighted_sum(&relu(&t[0])?, 3), &[x], 1e-6, 50).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
    }

    #[test]
    fn relu_gradient_is_zero_at_zero() {
        let x = candle_core::Var::new(&[0.0f64, 1.0, -1.0], &candle_core::Device::Cpu).unwrap();
        let g = relu(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = g.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn sigmoid_is_finite_and_differentiable() {
        let x = Tensor::new(&[-200.0f32, 0.0, 200.0], &candle_core::Device::Cpu).unwrap();
        let y: Vec<f32> = sigmoid(&x).unwrap().to_vec1().unwrap();
        assert_eq!(y, vec![0.0, 0.5, 1.0]);
        let x = sample(&[10], -4.0, 4.0, 5).unwrap();
        let r = check(|t| weighted_sum(&sigmoid(&t[0])?, 6), &[x], 1e-6, 10).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
    }

    #[test]
    fn gelu_gradient_matches_finite_differences() {
        let x = crate::gradcheck::sample(&[4, 6], -3.0, 3.0, 4).unwrap();
        let r = check(|t| weighted_sum(&gelu(&t[0])?, 5), &[x], 1e-6, 24).unwrap();
        // candle's erf is accurate to ~1e-7 even in f64 (measured error 1.1e-7 here), which the finite
        // differences of the forward inherit; far below f32 resolution for training.
        assert!(r.max_error < 1e-6, "{r:?}");
    }
}
