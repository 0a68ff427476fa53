//! The two mask losses of F-LMM, exactly as mmdet computes them (spec §4).

use candle_core::{Result, Tensor};

/// `torch.finfo(torch.float32).eps`, added to every `avg_factor` by mmdet's `weight_reduce_loss`.
pub const F32_EPS: f64 = f32::EPSILON as f64;

/// Element-wise binary cross-entropy with logits, `max(x, 0) − x·t + log(1 + exp(−|x|))`.
///
/// Finite for any finite logit (candle's `bce_with_logit` overflows for |x| ≳ 30 in f32).
pub fn bce_with_logits_elementwise(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(logits.dtype())?;
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - (logits * targets)?)? + softplus_neg_abs
}

/// mmdet `CrossEntropyLoss(use_sigmoid=True, reduction='mean')`: the sum over all elements divided by
/// `numel + ε32`.
pub fn bce_with_logits_mean(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let n = logits.elem_count() as f64;
    bce_with_logits_elementwise(logits, targets)?.sum_all()?.affine(1.0 / (n + F32_EPS), 0.0)
}

/// mmdet `DiceLoss(use_sigmoid=True, naive_dice=True, eps=1.0, reduction='mean')` on `[N, ...]` logits:
/// `Σ_k (1 − (2a_k + 1) / (b_k + c_k + 1)) / (N + ε32)` with `a = Σ p·t, b = Σ p, c = Σ t`, `p = σ(logit)`.
pub fn dice_loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let n = logits.dims().first().copied().unwrap_or(1);
    let p = crate::act::sigmoid(&logits.flatten_from(1)?)?;
    let t = targets.to_dtype(p.dtype())?.flatten_from(1)?;
    let a = (&p * &t)?.sum(1)?;
    let b = p.sum(1)?;
    let c = t.sum(1)?;
    let d = ((a * 2.0)? + 1.0)?.div(&((b + c)? + 1.0)?)?;
    d.neg()?.affine(1.0, 1.0)?.sum_all()?.affine(1.0 / (n as f64 + F32_EPS), 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample};
    use candle_core::Device;

    #[test]
    fn bce_is_finite_for_huge_logits() {
        let x = Tensor::new(&[-500.0f32, -100.0, 100.0, 500.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let l: Vec<f32> = bce_with_logits_elementwise(&x, &t).unwrap().to_vec1().unwrap();
        assert_eq!(l, vec![500.0, 0.0, 0.0, 500.0]);
        let x = candle_core::Var::new(&[-500.0f32, 500.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0], &Device::Cpu).unwrap();
        let g = bce_with_logits_mean(x.as_tensor(), &t).unwrap().backward().unwrap();
        let g: Vec<f32> = g.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = sample(&[3, 16], -6.0, 6.0, 51).unwrap();
        let t = sample(&[3, 16], 0.0, 1.0, 52).unwrap().ge(0.5).unwrap().to_dtype(candle_core::DType::F64).unwrap();
        let r = check(|a| bce_with_logits_mean(&a[0], &t), std::slice::from_ref(&x), 1e-6, 48).unwrap();
        assert!(r.max_error < 1e-8, "bce {r:?}");
        let r = check(|a| dice_loss(&a[0], &t), &[x], 1e-6, 48).unwrap();
        assert!(r.max_error < 1e-8, "dice {r:?}");
    }
}
