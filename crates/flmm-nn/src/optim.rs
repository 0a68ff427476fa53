//! AdamW, the F-LMM learning-rate schedule and global-norm gradient clipping.
//!
//! The optimizer keeps its moments as plain tensors so a checkpoint can save and restore them exactly.

use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// AdamW hyper-parameters (PyTorch defaults except the F-LMM weight decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to every trainable parameter (F-LMM has no per-parameter overrides).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW as `torch.optim.AdamW` (non-amsgrad): decay, moment update, bias-corrected step.
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Completed optimizer steps.
    pub step: u64,
    /// First moments, one per parameter, same order as the parameters.
    pub exp_avg: Vec<Tensor>,
    /// Second moments.
    pub exp_avg_sq: Vec<Tensor>,
}

impl AdamW {
    /// Fresh state (zero moments) for `params`.
    pub fn new(config: AdamWConfig, params: &[Var]) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            config,
            step: 0,
            exp_avg: params.iter().map(zeros).collect::<Result<_>>()?,
            exp_avg_sq: params.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// One update with learning rate `lr` (the schedule's value) and the given gradients
    /// (`None` = the parameter got no gradient and is left alone, as PyTorch does).
    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let g = g.to_dtype(DType::F32)?;
            let m = ((&self.exp_avg[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.exp_avg_sq[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let decayed = (p.as_tensor() * (1.0 - lr * c.weight_decay))?;
            let update = (m.div(&denom)? * (lr / bias1))?;
            p.set(&(decayed - update)?)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(())
    }
}

/// F-LMM's schedule: linear warm-up from `start_factor` over the first `warmup_fraction` of the
/// iterations, then cosine annealing to 0 (mmengine `LinearLR` + `CosineAnnealingLR`, closed forms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Total optimizer steps.
    pub total_steps: u64,
    /// Fraction of the steps spent warming up (0.03 in every F-LMM config).
    pub warmup_fraction: f64,
    /// Warm-up start factor (1e-5).
    pub start_factor: f64,
}

impl Schedule {
    /// Number of warm-up steps: `floor(warmup_fraction · total_steps)` as mmengine converts epochs to iterations.
    pub fn warmup_steps(&self) -> u64 {
        (self.warmup_fraction * self.total_steps as f64).floor() as u64
    }

    /// Learning rate used for the optimizer step with 0-based index `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let warm = self.warmup_steps();
        if step < warm {
            let f = self.start_factor + (1.0 - self.start_factor) * step as f64 / warm as f64;
            return self.base_lr * f;
        }
        let span = self.total_steps.saturating_sub(warm).max(1) as f64;
        let progress = ((step - warm) as f64 / span).min(1.0);
        self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Scales gradients in place so their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (`coef = max_norm / (norm + 1e-6)`, clamped to 1). Returns the norm
/// before clipping (non-finite when any gradient is).
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        sq += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_first_step_moves_by_lr_in_gradient_sign() {
        let p = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), std::slice::from_ref(&p)).unwrap();
        let g = Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&p), &[Some(g)], 0.1).unwrap();
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        // decay: p·(1 − 0.1·0.01); then m̂/(√v̂+eps) = sign(g) on the first step.
        let expected = [1.0 * 0.999 - 0.1, -2.0 * 0.999 + 0.1];
        for (a, b) in v.iter().zip(expected) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn schedule_warms_up_then_anneals_to_zero() {
        let s = Schedule { base_lr: 1e-4, total_steps: 1000, warmup_fraction: 0.03, start_factor: 1e-5 };
        assert_eq!(s.warmup_steps(), 30);
        assert!((s.lr(0) - 1e-9).abs() < 1e-15);
        assert!((s.lr(15) - 1e-4 * (1e-5 + (1.0 - 1e-5) * 0.5)).abs() < 1e-15);
        assert!((s.lr(30) - 1e-4).abs() < 1e-15);
        assert!((s.lr(30 + 485) - 0.5e-4).abs() < 1e-12);
        assert!(s.lr(999) < 1e-9 && s.lr(999) > 0.0);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_leaves_small_gradients() {
        let mut grads = vec![Some(Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()), None];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let v: Vec<f32> = grads[0].as_ref().unwrap().to_vec1().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut small = vec![Some(Tensor::new(&[0.3f32], &Device::Cpu).unwrap())];
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].as_ref().unwrap().to_vec1::<f32>().unwrap(), vec![0.3]);
    }
}
