//! 2-D convolution as one GEMM per kernel tap, without an im2col matrix.
//!
//! candle's own `conv2d` is ~8× slower than PyTorch on CPU while its GEMM is fast. The input is
//! zero-padded once into planes of `Hp × Wp` (`H + 2·pad` by `W + 2·pad`, plus `k − 1` elements of
//! slack). Computed on the padded width (the last `Wp − Wo` columns of every output row are thrown
//! away), tap `(ky, kx)` of output row `y` reads padded row `y + ky` from column `kx` on: the whole
//! tap is one contiguous run of every plane, starting at `ky·Wp + kx`. So
//! `out[O, Ho·Wp] = Σ_taps W_tap[O, C] · xpad[C, off_tap .. off_tap + Ho·Wp]`, `k²` GEMMs on strided
//! views of the padded input — no `k²`-times larger column matrix to zero, fill and fault in. The
//! backward reads the same views: `dW_tap = g · xpad_tapᵀ` and `dxpad[C, off_tap ..] += W_tapᵀ · g`,
//! with `g` the output gradient widened to `Wp` by zero columns (so the thrown-away columns add
//! nothing). The input gradient is skipped when the input needs none (e.g. the frozen attention fed to
//! the first layer). bf16 runs in f32 (the GEMM has no bf16 kernel); other devices use candle's
//! convolution.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::Mutex;

/// Stride-1 `Conv2d` with square kernel `w: [O, C, k, k]`, zero `padding` on each side, optional `bias: [O]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, wc, kh, kw) = w.dims4()?;
    if wc != c || kh != kw {
        candle_core::bail!("conv2d: weight {:?} does not fit input {:?}", w.shape(), x.shape());
    }
    if h + 2 * padding < kh || wd + 2 * padding < kw {
        candle_core::bail!("conv2d: kernel {kh} larger than padded input {h}x{wd}");
    }
    let plan = Plan { n, c, h, w: wd, o, k: kh, pad: padding };
    let out = if !x.device().is_cpu() {
        x.conv2d(w, padding, 1, 1, 1)?
    } else if x.dtype() == DType::BF16 {
        tap_conv(&x.to_dtype(DType::F32)?, &w.to_dtype(DType::F32)?, plan)?.to_dtype(DType::BF16)?
    } else {
        tap_conv(x, w, plan)?
    };
    match bias {
        Some(b) => out.broadcast_add(&b.reshape((1, o, 1, 1))?),
        None => Ok(out),
    }
}

fn tap_conv(x: &Tensor, w: &Tensor, plan: Plan) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, ConvOp { plan, padded: Mutex::new(None) })
}

/// Sizes of one stride-1 convolution and of its padded layout.
#[derive(Debug, Clone, Copy)]
struct Plan {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    pad: usize,
}

impl Plan {
    fn padded_width(&self) -> usize {
        self.w + 2 * self.pad
    }
    fn out_height(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }
    fn out_width(&self) -> usize {
        self.padded_width() + 1 - self.k
    }
    /// Elements of one padded plane, with the slack the last tap's run reads past the padded rows.
    fn plane(&self) -> usize {
        (self.h + 2 * self.pad) * self.padded_width() + self.k - 1
    }
    /// Output elements of one channel computed on the padded width.
    fn wide(&self) -> usize {
        self.out_height() * self.padded_width()
    }
    /// Where tap `t` (row-major over `k × k`) starts reading in a padded plane.
    fn tap_offset(&self, t: usize) -> usize {
        (t / self.k) * self.padded_width() + t % self.k
    }
    fn taps(&self) -> usize {
        self.k * self.k
    }
}

/// `[N·C, H, W]` → `[N·C, plane]`: each plane zero-padded by `pad` on every side.
fn pad_planes<T: WithDType>(x: &[T], p: Plan) -> Vec<T> {
    let (wp, plane) = (p.padded_width(), p.plane());
    let mut out = vec![T::zero(); p.n * p.c * plane];
    out.par_chunks_mut(plane).zip(x.par_chunks(p.h * p.w)).for_each(|(dst, src)| {
        for (y, row) in src.chunks(p.w).enumerate() {
            let at = (y + p.pad) * wp + p.pad;
            dst[at..at + p.w].copy_from_slice(row);
        }
    });
    out
}

/// The adjoint of [`pad_planes`]: `[N·C, plane]` → `[N·C, H, W]`, the interior of every plane.
fn unpad_planes<T: WithDType>(padded: &[T], p: Plan) -> Vec<T> {
    let (wp, plane) = (p.padded_width(), p.plane());
    let mut out = vec![T::zero(); p.n * p.c * p.h * p.w];
    out.par_chunks_mut(p.h * p.w).zip(padded.par_chunks(plane)).for_each(|(dst, src)| {
        for (y, row) in dst.chunks_mut(p.w).enumerate() {
            let at = (y + p.pad) * wp + p.pad;
            row.copy_from_slice(&src[at..at + p.w]);
        }
    });
    out
}

/// `[N·O, Ho·Wp]` → `[N·O, Ho, Wo]`: drops the columns computed past the output width.
fn crop_columns<T: WithDType>(wide: &[T], p: Plan) -> Vec<T> {
    let (wp, wo) = (p.padded_width(), p.out_width());
    let mut out = vec![T::zero(); p.n * p.o * p.out_height() * wo];
    out.par_chunks_mut(wo).zip(wide.par_chunks(wp)).for_each(|(dst, src)| dst.copy_from_slice(&src[..wo]));
    out
}

/// A matrix operand of [`gemm`]: first element, row stride, column stride (in elements).
#[derive(Clone, Copy)]
struct View<T> {
    ptr: *const T,
    rows: isize,
    cols: isize,
}

impl<T> View<T> {
    fn new(data: &[T], offset: usize, rows: usize, cols: usize) -> Self {
        Self { ptr: data[offset..].as_ptr(), rows: rows as isize, cols: cols as isize }
    }
}

/// `dst[m × n] += lhs[m × k] · rhs[k × n]` on strided views (`dst` starts at `dst_offset` of `dst_data`).
///
/// # Safety
/// Every element the strides of `lhs`, `rhs` and `dst` reach for the given sizes must lie inside the
/// slices the views and `dst_data` were made from (each call site states the bound).
unsafe fn gemm<T: WithDType>(m: usize, n: usize, k: usize, dst_data: &mut [T], dst_offset: usize, dst_strides: (usize, usize), lhs: View<T>, rhs: View<T>) {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let dst = dst_data[dst_offset..].as_mut_ptr();
    // SAFETY: the caller keeps every strided index inside the slices; `dst` is borrowed exclusively.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            true,
            lhs.ptr,
            lhs.cols,
            lhs.rows,
            rhs.ptr,
            rhs.cols,
            rhs.rows,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

fn contiguous_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("conv2d custom op needs contiguous input"),
    }
}

/// Calls `$f::<T>` for the element type of `$storage` (the GEMM's types: f32, f64, f16).
macro_rules! dispatch_gemm_type {
    ($storage:expr, $f:ident, $($args:expr),*) => {
        match $storage {
            CpuStorage::F32(_) => $f::<f32>($($args),*),
            CpuStorage::F64(_) => $f::<f64>($($args),*),
            CpuStorage::F16(_) => $f::<half::f16>($($args),*),
            other => candle_core::bail!("conv2d: unsupported dtype {:?}", candle_core::backend::BackendStorage::dtype(other)),
        }
    };
}

/// The convolution op; keeps the forward's padded input for the backward.
struct ConvOp {
    plan: Plan,
    padded: Mutex<Option<Tensor>>,
}

fn conv_forward<T: WithDType>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, op: &ConvOp) -> Result<(CpuStorage, Shape)> {
    let p = op.plan;
    let x = pad_planes(contiguous_slice::<T>(s1, l1)?, p);
    let w = contiguous_slice::<T>(s2, l2)?;
    let (plane, wide, taps) = (p.plane(), p.wide(), p.taps());
    let mut out = vec![T::zero(); p.n * p.o * wide];
    for b in 0..p.n {
        for t in 0..taps {
            let weights = View::new(w, t, p.c * taps, taps);
            let inputs = View::new(&x, b * p.c * plane + p.tap_offset(t), plane, 1);
            // SAFETY: a tap's run ends at tap_offset + wide − 1 ≤ plane − 1 (see Plan::plane), so the
            // inputs stay inside sample b's C planes; weights and out stay inside [O, C, k, k] and
            // sample b's [O, wide].
            unsafe { gemm(p.o, wide, p.c, &mut out, b * p.o * wide, (wide, 1), weights, inputs) };
        }
    }
    *op.padded.lock().expect("conv input lock") = Some(Tensor::from_vec(x, p.n * p.c * plane, &candle_core::Device::Cpu)?);
    Ok((T::to_cpu_storage_owned(crop_columns(&out, p)), Shape::from((p.n, p.o, p.out_height(), p.out_width()))))
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "flmm-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_gemm_type!(s1, conv_forward, s1, l1, s2, l2, self)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let p = self.plan;
        let padded = self.padded.lock().expect("conv input lock").take();
        let Some(padded) = padded else { candle_core::bail!("conv2d backward ran twice or without a forward") };
        // The output gradient on the padded width: zero in the thrown-away columns.
        let grad = grad.contiguous()?.pad_with_zeros(3, 0, p.padded_width() - p.out_width())?.flatten_all()?;
        let dw = grad.apply_op2_no_bwd(&padded, &WeightGrad(p))?;
        let dx = if x.track_op() { Some(grad.apply_op2_no_bwd(&w.contiguous()?, &InputGrad(p))?) } else { None };
        Ok((dx, Some(dw)))
    }
}

/// `dW[O, C, k, k]` from the widened output gradient and the padded input.
struct WeightGrad(Plan);

fn weight_grad<T: WithDType>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, p: Plan) -> Result<(CpuStorage, Shape)> {
    let (g, x) = (contiguous_slice::<T>(s1, l1)?, contiguous_slice::<T>(s2, l2)?);
    let (plane, wide, taps) = (p.plane(), p.wide(), p.taps());
    let mut dw = vec![T::zero(); p.o * p.c * taps];
    for b in 0..p.n {
        for t in 0..taps {
            // dW[o, c, t] += Σ_j g[b, o, j] · xpad[b, c, off_t + j]; rhs is xpad_tapᵀ (j down, c across).
            let grads = View::new(g, b * p.o * wide, wide, 1);
            let inputs = View::new(x, b * p.c * plane + p.tap_offset(t), 1, plane);
            // SAFETY: as in the forward (same runs of the padded input, same [O, wide] block of g).
            unsafe { gemm(p.o, p.c, wide, &mut dw, t, (p.c * taps, taps), grads, inputs) };
        }
    }
    Ok((T::to_cpu_storage_owned(dw), Shape::from((p.o, p.c, p.k, p.k))))
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "flmm-conv2d-weight-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_gemm_type!(s1, weight_grad, s1, l1, s2, l2, self.0)
    }
}

/// `dx[N, C, H, W]` from the widened output gradient and the weights.
struct InputGrad(Plan);

fn input_grad<T: WithDType>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, p: Plan) -> Result<(CpuStorage, Shape)> {
    let (g, w) = (contiguous_slice::<T>(s1, l1)?, contiguous_slice::<T>(s2, l2)?);
    let (plane, wide, taps) = (p.plane(), p.wide(), p.taps());
    let mut dx = vec![T::zero(); p.n * p.c * plane];
    for b in 0..p.n {
        for t in 0..taps {
            // dxpad[b, c, off_t + j] += Σ_o W[o, c, t] · g[b, o, j]; the taps run one after another, so
            // their overlapping windows add up.
            let weights = View::new(w, t, taps, p.c * taps);
            let grads = View::new(g, b * p.o * wide, wide, 1);
            // SAFETY: the written runs are the forward's read runs, inside sample b's C planes.
            unsafe { gemm(p.c, wide, p.o, &mut dx, b * p.c * plane + p.tap_offset(t), (plane, 1), weights, grads) };
        }
    }
    Ok((T::to_cpu_storage_owned(unpad_planes(&dx, p)), Shape::from((p.n, p.c, p.h, p.w))))
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "flmm-conv2d-input-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_gemm_type!(s1, input_grad, s1, l1, s2, l2, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn matches_candle_reference_convolution() {
        let x = sample(&[2, 3, 7, 5], -1.0, 1.0, 41).unwrap();
        for (k, pad) in [(3, 1), (3, 0), (1, 0), (2, 1), (3, 2), (5, 2), (1, 1)] {
            let w = sample(&[4, 3, k, k], -1.0, 1.0, 42).unwrap();
            let d = max_diff(&conv2d(&x, &w, None, pad).unwrap(), &x.conv2d(&w, pad, 1, 1, 1).unwrap());
            assert!(d < 1e-12, "k {k} pad {pad}: max diff {d}");
        }
    }

    #[test]
    fn half_precision_matches_f32() {
        let x = sample(&[1, 6, 9, 8], -1.0, 1.0, 52).unwrap();
        let w = sample(&[5, 6, 3, 3], -1.0, 1.0, 53).unwrap();
        let reference = conv2d(&x, &w, None, 1).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let out = conv2d(&x.to_dtype(dtype).unwrap(), &w.to_dtype(dtype).unwrap(), None, 1).unwrap();
            assert_eq!(out.dtype(), dtype);
            // 54 products of |·| ≤ 1 in a sum of |·| ≲ 10: a few units in the last of 8 (bf16) or 11 (f16) bits.
            let d = max_diff(&out.to_dtype(DType::F64).unwrap(), &reference);
            assert!(d < 0.15, "{dtype:?}: max diff {d}");
        }
    }

    #[test]
    fn one_by_one_with_bias() {
        let x = sample(&[1, 5, 4, 4], -1.0, 1.0, 43).unwrap();
        let w = sample(&[2, 5, 1, 1], -1.0, 1.0, 44).unwrap();
        let b = sample(&[2], -1.0, 1.0, 45).unwrap();
        let reference = x.conv2d(&w, 0, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, 2, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&conv2d(&x, &w, Some(&b), 0).unwrap(), &reference) < 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = sample(&[2, 3, 5, 4], -1.0, 1.0, 46).unwrap();
        let w = sample(&[2, 3, 3, 3], -1.0, 1.0, 47).unwrap();
        let b = sample(&[2], -1.0, 1.0, 48).unwrap();
        let r = check(|t| weighted_sum(&conv2d(&t[0], &t[1], Some(&t[2]), 1)?, 49), &[x, w, b], 1e-6, 30).unwrap();
        assert!(r.max_error < 1e-8, "{r:?}");
    }

    #[test]
    fn constant_input_gets_no_gradient() {
        let x = sample(&[1, 2, 4, 4], -1.0, 1.0, 50).unwrap();
        let w = candle_core::Var::from_tensor(&sample(&[3, 2, 3, 3], -1.0, 1.0, 51).unwrap()).unwrap();
        let grads = conv2d(&x, w.as_tensor(), None, 1).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        assert!(grads.get(w.as_tensor()).is_some());
    }
}
