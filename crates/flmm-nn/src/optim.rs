//! AdamW, the F-LMM learning-rate schedule and global-norm gradient clipping.
//!
//! The optimizer keeps its moments as plain tensors so a checkpoint can save and restore them exactly.

use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

mod in_place;
use in_place::StepScalars;

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
    /// (`None` = the parameter got no gradient and is left alone, as PyTorch does). On the CPU in f32 the
    /// moments and parameters are updated in place ([`in_place`]); elsewhere by composed tensor ops with
    /// the same arithmetic.
    pub fn step(&mut self, params: &[Var], grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let scalars = StepScalars {
            beta1: c.beta1,
            beta2: c.beta2,
            inv_bias2_sqrt: 1.0 / (1.0 - c.beta2.powi(t)).sqrt(),
            eps: c.eps,
            decay: 1.0 - lr * c.weight_decay,
            step_size: lr / (1.0 - c.beta1.powi(t)),
        };
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let g = g.to_dtype(DType::F32)?;
            let (m, v) = (&self.exp_avg[i], &self.exp_avg_sq[i]);
            if in_place::applies(&[p.as_tensor(), m, v, &g]) {
                in_place::adamw(p.as_tensor(), m, v, &g, scalars)?;
            } else {
                let (m, v) = composed_step(p, m, v, &g, scalars)?;
                self.exp_avg[i] = m;
                self.exp_avg_sq[i] = v;
            }
        }
        Ok(())
    }
}

/// The AdamW update from candle ops: sets `p` and returns the new moments.
fn composed_step(p: &Var, m: &Tensor, v: &Tensor, g: &Tensor, s: StepScalars) -> Result<(Tensor, Tensor)> {
    let m = ((m * s.beta1)? + (g * (1.0 - s.beta1))?)?;
    let v = ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let denom = ((v.sqrt()? * s.inv_bias2_sqrt)? + s.eps)?;
    let decayed = (p.as_tensor() * s.decay)?;
    let update = (m.div(&denom)? * s.step_size)?;
    p.set(&(decayed - update)?)?;
    Ok((m, v))
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
        sq += match in_place::sum_of_squares(g) {
            Some(sum) => sum,
            None => g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?,
        };
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
    fn in_place_update_gives_the_bits_of_the_composed_one() {
        let values = |seed, scale: f64| -> Tensor {
            let t = crate::gradcheck::sample(&[3, 70_001], -scale, scale, seed).unwrap();
            t.to_dtype(DType::F32).unwrap()
        };
        let (fast, slow) = (Var::from_tensor(&values(1, 1.0)).unwrap(), Var::from_tensor(&values(1, 1.0)).unwrap());
        let zeros = || fast.as_tensor().zeros_like().unwrap();
        let (fast_m, fast_v) = (zeros(), zeros());
        let (mut slow_m, mut slow_v) = (zeros(), zeros());
        for t in 1..=4 {
            // Gradients over several orders of magnitude, and a large learning rate with decay.
            let g = (values(10 + t, 1.0) * 10f64.powi(t as i32 - 3)).unwrap();
            let s = StepScalars {
                beta1: 0.9,
                beta2: 0.999,
                inv_bias2_sqrt: 1.0 / (1.0 - 0.999f64.powi(t as i32)).sqrt(),
                eps: 1e-8,
                decay: 1.0 - 0.3 * 0.01,
                step_size: 0.3 / (1.0 - 0.9f64.powi(t as i32)),
            };
            assert!(in_place::applies(&[fast.as_tensor(), &fast_m, &fast_v, &g]));
            in_place::adamw(fast.as_tensor(), &fast_m, &fast_v, &g, s).unwrap();
            (slow_m, slow_v) = composed_step(&slow, &slow_m, &slow_v, &g, s).unwrap();
            for (a, b, what) in [(fast.as_tensor(), slow.as_tensor(), "parameter"), (&fast_m, &slow_m, "first moment"), (&fast_v, &slow_v, "second moment")] {
                let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "step {t}: {what} differs");
            }
        }
    }

    #[test]
    fn gradient_norm_of_f32_tensors_matches_the_f64_sum() {
        let g = crate::gradcheck::sample(&[5, 40_000], -2.0, 2.0, 3).unwrap();
        let want = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        let got = in_place::sum_of_squares(&g.to_dtype(DType::F32).unwrap()).unwrap();
        // The f32 copy rounds each value by ≤ 2⁻²⁴ relative.
        assert!((got - want).abs() / want < 1e-7, "{got} vs {want}");
        assert!(in_place::sum_of_squares(&g).is_none(), "f64 tensors take the composed path");
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
