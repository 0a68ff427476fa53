//! AdamW's update and the gradient norm as single passes over CPU f32 buffers.
//!
//! Composed from candle ops, one AdamW step runs fourteen element-wise passes per parameter, each
//! writing a fresh tensor (for the U-Net head's 7.4 M parameters, ~29 MB apiece), and the gradient
//! norm widens every gradient to f64 and squares it before summing. Here the moments and the parameter
//! are updated in place (three passes, no allocation) with the same f32 arithmetic in the same order
//! as the composed step, so both give the same bits (tested), and the squared norm is one read.

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::fused::slice;

/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// The scalars of one AdamW step, shared by the composed and the in-place update.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepScalars {
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// `1 / sqrt(1 − β₂ᵗ)`: the second moment's bias correction, as a factor.
    pub inv_bias2_sqrt: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// `1 − lr · weight_decay`: the decoupled decay's factor.
    pub decay: f64,
    /// `lr / (1 − β₁ᵗ)`: the bias-corrected step size.
    pub step_size: f64,
}

/// Whether every tensor is a contiguous f32 CPU tensor (the in-place update's inputs).
pub(super) fn applies(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// `x · mul + add` in f32, as candle's affine op computes `tensor * scalar` and `tensor + scalar`.
fn affine(x: f32, mul: f64, add: f64) -> f32 {
    x * mul as f32 + add as f32
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("in-place AdamW needs a contiguous f32 tensor"),
    }
}

/// `m ← β·m + (1 − β)·g` (or `g²` for the second moment).
struct MomentUpdate {
    beta: f64,
    squared: bool,
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "flmm-adamw-moment"
    }
    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, g: &CpuStorage, g_l: &Layout) -> Result<()> {
        let (moment, grad) = (slice_mut(dst, dst_l)?, slice::<f32>(g, g_l)?);
        let (beta, squared) = (self.beta, self.squared);
        moment.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).for_each(|(ms, gs)| {
            for (m, &g) in ms.iter_mut().zip(gs) {
                let g = if squared { g * g } else { g };
                *m = affine(*m, beta, 0.0) + affine(g, 1.0 - beta, 0.0);
            }
        });
        Ok(())
    }
}

/// `p ← p·decay − step_size · m / (sqrt(v) · inv_bias2_sqrt + eps)`.
struct ParameterUpdate(StepScalars);

impl InplaceOp3 for ParameterUpdate {
    fn name(&self) -> &'static str {
        "flmm-adamw-parameter"
    }
    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, m: &CpuStorage, m_l: &Layout, v: &CpuStorage, v_l: &Layout) -> Result<()> {
        let (param, m, v) = (slice_mut(dst, dst_l)?, slice::<f32>(m, m_l)?, slice::<f32>(v, v_l)?);
        let s = self.0;
        param.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(ps, (ms, vs))| {
            for ((p, &m), &v) in ps.iter_mut().zip(ms).zip(vs) {
                let denom = affine(affine(v.sqrt(), s.inv_bias2_sqrt, 0.0), 1.0, s.eps);
                *p = affine(*p, s.decay, 0.0) - affine(m / denom, s.step_size, 0.0);
            }
        });
        Ok(())
    }
}

/// One AdamW update of `param` and its moments `exp_avg`, `exp_avg_sq` from `grad`, in place. All four
/// must pass [`applies`]; the moments must not share storage with anything else.
pub(super) fn adamw(param: &Tensor, exp_avg: &Tensor, exp_avg_sq: &Tensor, grad: &Tensor, s: StepScalars) -> Result<()> {
    exp_avg.inplace_op2(grad, &MomentUpdate { beta: s.beta1, squared: false })?;
    exp_avg_sq.inplace_op2(grad, &MomentUpdate { beta: s.beta2, squared: true })?;
    param.inplace_op3(exp_avg, exp_avg_sq, &ParameterUpdate(s))
}

/// `Σ g²` of a contiguous f32 CPU tensor in f64, summed in fixed chunks (no value depends on the thread
/// count); `None` for any other tensor.
pub(super) fn sum_of_squares(g: &Tensor) -> Option<f64> {
    if !applies(&[g]) {
        return None;
    }
    let (storage, layout) = g.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { return None };
    let values = slice::<f32>(cpu, layout).ok()?;
    let partial: Vec<f64> = values.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum()).collect();
    Some(partial.iter().sum())
}
