//! GroupNorm, optionally followed by ReLU, as one CPU custom op with its own backward. Composed from
//! candle primitives it runs about eight full-size element-wise passes forward (three more for the
//! ReLU) and twice as many backward, each allocating, and sums the affine gradients on candle's
//! single-threaded reduction. Work is split by channel plane (one `[H·W]` slice of one sample), so a
//! single group — the U-Net's `GroupNorm(1, C)` — still runs on every thread. Statistics in f64, as
//! the fused LayerNorm.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::fused::{dispatch, slice};

/// `GroupNorm(groups, eps)` of a CPU f32/f64 tensor `x: [N, C, *]` with affine `weight`, `bias: [C]`,
/// followed by ReLU when `relu`.
pub(crate) fn group_norm(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64, relu: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, GroupNorm { groups, eps, relu })
}

#[derive(Clone, Copy)]
struct GroupNorm {
    groups: usize,
    eps: f64,
    relu: bool,
}

/// Sizes of a `[N, C, S]` input split into groups.
#[derive(Clone, Copy)]
struct Groups {
    channels: usize,
    groups: usize,
    plane: usize,
}

impl Groups {
    fn of(dims: &[usize], groups: usize) -> Self {
        Self { channels: dims[1], groups, plane: dims[2..].iter().product() }
    }
    fn per_group(&self) -> usize {
        self.channels / self.groups
    }
    /// Group (over all samples) of channel plane `p` (planes run sample-major).
    fn group_of(&self, p: usize) -> usize {
        p / self.per_group()
    }
    fn group_len(&self) -> f64 {
        (self.per_group() * self.plane) as f64
    }
}

/// Per group of every sample: mean and `1 / sqrt(var + eps)` (biased variance), two passes in f64.
fn group_stats<T: WithDType>(x: &[T], g: Groups, eps: f64) -> Vec<(f64, f64)> {
    let sums: Vec<f64> = x.par_chunks(g.plane).map(|p| p.iter().map(|v| v.to_f64()).sum()).collect();
    let means: Vec<f64> = sums.chunks(g.per_group()).map(|s| s.iter().sum::<f64>() / g.group_len()).collect();
    let squares: Vec<f64> = x
        .par_chunks(g.plane)
        .enumerate()
        .map(|(p, plane)| {
            let mean = means[g.group_of(p)];
            plane.iter().map(|v| (v.to_f64() - mean).powi(2)).sum()
        })
        .collect();
    squares.chunks(g.per_group()).zip(means).map(|(s, mean)| (mean, 1.0 / (s.iter().sum::<f64>() / g.group_len() + eps).sqrt())).collect()
}

/// Per channel plane `p`: the affine map `x ↦ x·scale + shift` that normalizes and applies the affine
/// parameters, the same arithmetic in forward and backward (so the ReLU's mask agrees bit for bit).
fn plane_affine<T: WithDType>(p: usize, g: Groups, stats: &[(f64, f64)], weight: &[T], bias: &[T]) -> (f64, f64) {
    let (mean, rstd) = stats[g.group_of(p)];
    let c = p % g.channels;
    let scale = rstd * weight[c].to_f64();
    (scale, bias[c].to_f64() - mean * scale)
}

fn check_shapes(dims: &[usize], weight: usize, bias: usize, groups: usize) -> Result<()> {
    if dims.len() < 2 || !dims[1].is_multiple_of(groups) || weight != dims[1] || bias != dims[1] {
        candle_core::bail!("group_norm: {groups} groups, input {dims:?}, weight [{weight}], bias [{bias}]");
    }
    Ok(())
}

fn group_norm_fwd<T: WithDType>(x: (&CpuStorage, &Layout), w: (&CpuStorage, &Layout), b: (&CpuStorage, &Layout), op: &GroupNorm) -> Result<(CpuStorage, Shape)> {
    let (xs, ws, bs) = (slice::<T>(x.0, x.1)?, slice::<T>(w.0, w.1)?, slice::<T>(b.0, b.1)?);
    check_shapes(x.1.dims(), ws.len(), bs.len(), op.groups)?;
    let g = Groups::of(x.1.dims(), op.groups);
    let stats = group_stats(xs, g, op.eps);
    let floor = if op.relu { 0.0 } else { f64::NEG_INFINITY };
    let mut y = vec![T::zero(); xs.len()];
    y.par_chunks_mut(g.plane).zip(xs.par_chunks(g.plane)).enumerate().for_each(|(p, (yp, xp))| {
        let (scale, shift) = plane_affine(p, g, &stats, ws, bs);
        for (o, v) in yp.iter_mut().zip(xp) {
            *o = T::from_f64((v.to_f64() * scale + shift).max(floor));
        }
    });
    Ok((T::to_cpu_storage_owned(y), x.1.shape().clone()))
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        if self.relu {
            "flmm-group-norm-relu"
        } else {
            "flmm-group-norm"
        }
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, group_norm_fwd, (s1, l1), (s2, l2), (s3, l3), self)
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.elem_count(), w.elem_count());
        let affine = Tensor::cat(&[&w.detach().contiguous()?, &b.detach().contiguous()?], 0)?;
        let packed = x.detach().contiguous()?.apply_op3_no_bwd(&affine, &grad.detach().contiguous()?, &GroupNormGrad(*self))?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, c)?;
        let db = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The backward from `(x, [weight; bias], grad)`, packed flat: the input gradient, then the weight
/// gradient `[C]`, then the bias gradient `[C]`.
struct GroupNormGrad(GroupNorm);

fn group_norm_grad<T: WithDType>(x: (&CpuStorage, &Layout), affine: (&CpuStorage, &Layout), gr: (&CpuStorage, &Layout), op: &GroupNorm) -> Result<(CpuStorage, Shape)> {
    let (xs, affine, gs) = (slice::<T>(x.0, x.1)?, slice::<T>(affine.0, affine.1)?, slice::<T>(gr.0, gr.1)?);
    let g = Groups::of(x.1.dims(), op.groups);
    let (ws, bs) = affine.split_at(g.channels);
    let stats = group_stats(xs, g, op.eps);
    // The gradient at the normalized output: `grad`, zeroed where the ReLU clipped.
    let output_grad = |p: usize| {
        let (scale, shift) = plane_affine(p, g, &stats, ws, bs);
        move |v: &T, d: &T| if op.relu && v.to_f64() * scale + shift <= 0.0 { 0.0 } else { d.to_f64() }
    };
    // Per plane: Σ dy and Σ dy·x̂ — the bias and weight gradients' terms, and (times the plane's weight)
    // the group sums of dy·w and dy·w·x̂ the input gradient needs.
    let sums: Vec<(f64, f64)> = xs
        .par_chunks(g.plane)
        .zip(gs.par_chunks(g.plane))
        .enumerate()
        .map(|(p, (xp, gp))| {
            let (mean, rstd) = stats[g.group_of(p)];
            let dy = output_grad(p);
            xp.iter().zip(gp).fold((0.0, 0.0), |(s, sx), (v, d)| {
                let d = dy(v, d);
                (s + d, sx + d * (v.to_f64() - mean) * rstd)
            })
        })
        .collect();
    let group_means: Vec<(f64, f64)> = sums
        .chunks(g.per_group())
        .enumerate()
        .map(|(k, planes)| {
            let first_channel = (k * g.per_group()) % g.channels;
            let (mut gw, mut gwx) = (0.0, 0.0);
            for (i, (s, sx)) in planes.iter().enumerate() {
                let wc = ws[first_channel + i].to_f64();
                gw += wc * s;
                gwx += wc * sx;
            }
            (gw / g.group_len(), gwx / g.group_len())
        })
        .collect();
    let mut out = vec![T::zero(); xs.len() + 2 * g.channels];
    let (dx, affine_grads) = out.split_at_mut(xs.len());
    dx.par_chunks_mut(g.plane).zip(xs.par_chunks(g.plane).zip(gs.par_chunks(g.plane))).enumerate().for_each(|(p, (dp, (xp, gp)))| {
        let (mean, rstd) = stats[g.group_of(p)];
        let (mean_gw, mean_gwx) = group_means[g.group_of(p)];
        let wc = ws[p % g.channels].to_f64();
        let dy = output_grad(p);
        for ((o, v), d) in dp.iter_mut().zip(xp).zip(gp) {
            let xhat = (v.to_f64() - mean) * rstd;
            *o = T::from_f64(rstd * (dy(v, d) * wc - mean_gw - xhat * mean_gwx));
        }
    });
    let (dw, db) = affine_grads.split_at_mut(g.channels);
    for c in 0..g.channels {
        let planes = sums.iter().skip(c).step_by(g.channels);
        let (s, sx) = planes.fold((0.0, 0.0), |(a, b), (s, sx)| (a + s, b + sx));
        dw[c] = T::from_f64(sx);
        db[c] = T::from_f64(s);
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from(xs.len() + 2 * g.channels)))
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "flmm-group-norm-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, group_norm_grad, (s1, l1), (s2, l2), (s3, l3), &self.0)
    }
}
