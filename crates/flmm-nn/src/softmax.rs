//! Softmax with a backward pass (candle's fused `softmax_last_dim` has none).

use candle_core::{Result, Tensor, D};

/// Softmax along the last dimension: `exp(x − max) / Σ exp(x − max)`. On the CPU in f32 / f64 one
/// custom op with its own backward ([`crate::fused`]); elsewhere composed from candle primitives.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if crate::fused::applies(x) {
        crate::fused::softmax(x)
    } else {
        softmax_composed(x)
    }
}

/// The composed softmax. The max is detached: it cancels exactly in the result, so its gradient
/// contribution is zero.
fn softmax_composed(x: &Tensor) -> Result<Tensor> {
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
        for f in [softmax_last_dim, softmax_composed] {
            let r = check(|t| weighted_sum(&f(&t[0])?, 12), std::slice::from_ref(&x), 1e-6, 24).unwrap();
            assert!(r.max_error < 1e-8, "{r:?}");
        }
    }

    #[test]
    fn fused_equals_composed_with_gradients() {
        let x = sample(&[3, 5, 7], -4.0, 4.0, 13).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let x = candle_core::Var::from_tensor(&x.transpose(1, 2).unwrap()).unwrap(); // non-contiguous view
        let w = sample(&[3, 7, 5], -1.0, 1.0, 14).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let mut outs = Vec::new();
        for f in [softmax_last_dim, softmax_composed] {
            let y = f(x.as_tensor()).unwrap();
            let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            outs.push((y, g.get(x.as_tensor()).unwrap().clone()));
        }
        for (a, b) in [(&outs[0].0, &outs[1].0), (&outs[0].1, &outs[1].1)] {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-6, "max |Δ| {d}");
        }
    }
}
