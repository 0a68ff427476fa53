//! Row-wise ops over the last dimension as CPU custom ops with their own backward: softmax,
//! LayerNorm, and adding a bias. Composed from candle primitives (the other devices' path), softmax
//! and LayerNorm run a dozen full-size element-wise ops per direction, and every broadcast parameter
//! (bias, affine weight) has its gradient summed over the leading dimensions on candle's slow,
//! single-threaded generic reduction: together the bulk of a small model's training step on CPU.
//! Values are processed in f64 whatever the storage (f32 or f64).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Whether the fused kernels apply to `x`: a CPU tensor of f32 or f64.
pub(crate) fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("fused op needs a contiguous input"),
    }
}

macro_rules! dispatch {
    ($storage:expr, $f:ident, $($args:expr),*) => {
        match $storage {
            CpuStorage::F32(_) => $f::<f32>($($args),*),
            CpuStorage::F64(_) => $f::<f64>($($args),*),
            other => candle_core::bail!("fused op: unsupported dtype {:?}", candle_core::backend::BackendStorage::dtype(other)),
        }
    };
}
pub(crate) use dispatch;

/// Rows of at least this many values are worth a parallel split on their own.
const ROWS_PER_TASK_VALUES: usize = 1 << 14;

fn rows_per_task(d: usize) -> usize {
    (ROWS_PER_TASK_VALUES / d.max(1)).max(1)
}

/// `softmax(x)` along the last dimension of a contiguous CPU tensor.
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

/// `exp(x)` for a value of dtype `T`: single precision for f32 and narrower (the result is stored at that
/// precision anyway; f64 `exp` was ~12 % of a toy-VLM training step), double for f64 (gradient checks).
fn exp_at_precision<T: WithDType>(x: f64) -> f64 {
    if T::DTYPE == candle_core::DType::F64 {
        x.exp()
    } else {
        (x as f32).exp() as f64
    }
}

fn softmax_fwd<T: WithDType>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s, l)?;
    let d = l.dims().last().copied().unwrap_or(1);
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(d * rows_per_task(d)).zip(x.par_chunks(d * rows_per_task(d))).for_each(|(ys, xs)| {
        for (yr, xr) in ys.chunks_mut(d).zip(xs.chunks(d)) {
            let max = xr.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (o, v) in yr.iter_mut().zip(xr) {
                let e = exp_at_precision::<T>(v.to_f64() - max);
                sum += e;
                *o = T::from_f64(e);
            }
            for o in yr.iter_mut() {
                *o = T::from_f64(o.to_f64() / sum);
            }
        }
    });
    Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "flmm-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, softmax_fwd, s, l)
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

/// `dx = y ⊙ (g − Σ g ⊙ y)` per row, from `(y, g)`.
struct SoftmaxGrad;

fn softmax_grad<T: WithDType>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
    let (y, g) = (slice::<T>(s1, l1)?, slice::<T>(s2, l2)?);
    let d = l1.dims().last().copied().unwrap_or(1);
    let mut dx = vec![T::zero(); y.len()];
    let chunk = d * rows_per_task(d);
    dx.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(dxs, (ys, gs))| {
        for ((dr, yr), gr) in dxs.chunks_mut(d).zip(ys.chunks(d)).zip(gs.chunks(d)) {
            let dot: f64 = yr.iter().zip(gr).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
            for ((o, a), b) in dr.iter_mut().zip(yr).zip(gr) {
                *o = T::from_f64(a.to_f64() * (b.to_f64() - dot));
            }
        }
    });
    Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "flmm-softmax-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, softmax_grad, s1, l1, s2, l2)
    }
}

/// `LayerNorm` over the last dimension of a CPU tensor with affine `weight`, `bias: [D]` (same dtype).
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LayerNorm { eps })
}

struct LayerNorm {
    eps: f64,
}

/// Mean and `1 / sqrt(var + eps)` (biased variance) of one row.
fn row_stats<T: WithDType>(row: &[T], eps: f64) -> (f64, f64) {
    let n = row.len() as f64;
    let mean = row.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = row.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn layer_norm_fwd<T: WithDType>(x: (&CpuStorage, &Layout), w: (&CpuStorage, &Layout), b: (&CpuStorage, &Layout), eps: f64) -> Result<(CpuStorage, Shape)> {
    let (xs, ws, bs) = (slice::<T>(x.0, x.1)?, slice::<T>(w.0, w.1)?, slice::<T>(b.0, b.1)?);
    let d = ws.len();
    if x.1.dims().last() != Some(&d) || bs.len() != d {
        candle_core::bail!("layer_norm: input {:?} with weight [{d}] and bias [{}]", x.1.dims(), bs.len());
    }
    let mut y = vec![T::zero(); xs.len()];
    let chunk = d * rows_per_task(d);
    y.par_chunks_mut(chunk).zip(xs.par_chunks(chunk)).for_each(|(ys, xc)| {
        for (yr, xr) in ys.chunks_mut(d).zip(xc.chunks(d)) {
            let (mean, rstd) = row_stats(xr, eps);
            for (((o, v), wv), bv) in yr.iter_mut().zip(xr).zip(ws).zip(bs) {
                *o = T::from_f64((v.to_f64() - mean) * rstd * wv.to_f64() + bv.to_f64());
            }
        }
    });
    Ok((T::to_cpu_storage_owned(y), x.1.shape().clone()))
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "flmm-layer-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, layer_norm_fwd, (s1, l1), (s2, l2), (s3, l3), self.eps)
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let rows = x.elem_count() / d;
        let packed = x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(d)?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// LayerNorm's backward from `(x, weight, grad)`, packed as `[rows + 2, D]`: the input gradient's rows,
/// then the weight gradient, then the bias gradient.
struct LayerNormGrad {
    eps: f64,
}

fn layer_norm_grad<T: WithDType>(x: (&CpuStorage, &Layout), w: (&CpuStorage, &Layout), g: (&CpuStorage, &Layout), eps: f64) -> Result<(CpuStorage, Shape)> {
    let (xs, ws, gs) = (slice::<T>(x.0, x.1)?, slice::<T>(w.0, w.1)?, slice::<T>(g.0, g.1)?);
    let d = ws.len();
    let rows = xs.len() / d;
    let mut out = vec![T::zero(); (rows + 2) * d];
    let (dx, affine) = out.split_at_mut(rows * d);
    let chunk = d * rows_per_task(d);
    // Each task writes its rows of dx and returns its partial sums of dw and db.
    let partials: Vec<Vec<f64>> = dx
        .par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk)))
        .map(|(dxs, (xc, gc))| {
            let mut acc = vec![0f64; 2 * d];
            let mut xhat = vec![0f64; d];
            for ((dr, xr), gr) in dxs.chunks_mut(d).zip(xc.chunks(d)).zip(gc.chunks(d)) {
                let (mean, rstd) = row_stats(xr, eps);
                let (mut mean_gw, mut mean_gw_xhat) = (0.0, 0.0);
                for (k, (v, gv)) in xr.iter().zip(gr).enumerate() {
                    xhat[k] = (v.to_f64() - mean) * rstd;
                    let gw = gv.to_f64() * ws[k].to_f64();
                    mean_gw += gw;
                    mean_gw_xhat += gw * xhat[k];
                    acc[k] += gv.to_f64() * xhat[k];
                    acc[d + k] += gv.to_f64();
                }
                mean_gw /= d as f64;
                mean_gw_xhat /= d as f64;
                for (k, o) in dr.iter_mut().enumerate() {
                    let gw = gr[k].to_f64() * ws[k].to_f64();
                    *o = T::from_f64(rstd * (gw - mean_gw - xhat[k] * mean_gw_xhat));
                }
            }
            acc
        })
        .collect();
    for (k, o) in affine.iter_mut().enumerate() {
        *o = T::from_f64(partials.iter().map(|p| p[k]).sum());
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from((rows + 2, d))))
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "flmm-layer-norm-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, layer_norm_grad, (s1, l1), (s2, l2), (s3, l3), self.eps)
    }
}

/// `x + bias` with `bias: [N]` added along the last dimension of `x [.., N]`; on CPU f32 / f64 the
/// bias gradient is a parallel column sum, elsewhere candle's broadcast add.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if applies(x) && bias.dtype() == x.dtype() {
        x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
    } else {
        x.broadcast_add(bias)
    }
}

struct AddBias;

fn add_bias_fwd<T: WithDType>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
    let (x, b) = (slice::<T>(s1, l1)?, slice::<T>(s2, l2)?);
    let n = b.len();
    if l1.dims().last() != Some(&n) {
        candle_core::bail!("add_bias: input {:?} and bias [{n}]", l1.dims());
    }
    let mut y = x.to_vec();
    y.par_chunks_mut(n * rows_per_task(n)).for_each(|rows| {
        for row in rows.chunks_mut(n) {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += *bv;
            }
        }
    });
    Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "flmm-add-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, add_bias_fwd, s1, l1, s2, l2)
    }
    fn bwd(&self, _x: &Tensor, bias: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad.contiguous()?.apply_op1_no_bwd(&ColumnSum { n: bias.elem_count() })?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// Sums a contiguous `[.., n]` tensor over everything but its last dimension → `[n]`.
struct ColumnSum {
    n: usize,
}

fn column_sum<T: WithDType>(s: &CpuStorage, l: &Layout, n: usize) -> Result<(CpuStorage, Shape)> {
    let g = slice::<T>(s, l)?;
    let partials: Vec<Vec<f64>> = g
        .par_chunks(n * rows_per_task(n))
        .map(|rows| {
            let mut acc = vec![0f64; n];
            for row in rows.chunks(n) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v.to_f64();
                }
            }
            acc
        })
        .collect();
    let sums: Vec<T> = (0..n).map(|k| T::from_f64(partials.iter().map(|p| p[k]).sum())).collect();
    Ok((T::to_cpu_storage_owned(sums), Shape::from(n)))
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "flmm-column-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, column_sum, s, l, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    #[test]
    fn add_bias_matches_broadcast_add_and_its_gradients() {
        let x = sample(&[3, 4, 5], -1.0, 1.0, 61).unwrap();
        let b = sample(&[5], -1.0, 1.0, 62).unwrap();
        let d = (add_bias(&x, &b).unwrap() - x.broadcast_add(&b).unwrap()).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert_eq!(d, 0.0);
        let r = check(|t| weighted_sum(&add_bias(&t[0], &t[1])?, 63), &[x, b], 1e-6, 20).unwrap();
        assert!(r.max_error < 1e-9, "{r:?}");
    }
}
