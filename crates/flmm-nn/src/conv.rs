//! 2-D convolution built on matrix multiplication.
//!
//! candle's own `conv2d` is ~8× slower than PyTorch on CPU while its GEMM is fast, so a stride-1
//! convolution is GEMMs plus a rearrangement, in one of two lowerings:
//!
//! - 3×3 kernels with padding 1 on images of at least 16×16 outputs (every 3×3 layer of the U-Net
//!   head above its 8×8 stage) use Winograd's F(2×2, 3×3) ([`winograd`]): 16 GEMMs over transformed
//!   tiles with 2.25× fewer multiplications. The weight gradient needs 32×32 outputs to gain.
//! - Everything else uses im2col: `out[O, Ho·Wo] = W[O, C·k²] · cols[C·k², Ho·Wo]`, where row
//!   `(c, ky, kx)` of `cols` is input plane `c` shifted by the tap. `cols` is never built whole:
//!   [`tiles`] builds it a cache-sized tile of output rows at a time and multiplies each tile at once.
//!   The weight gradient is `dY · colsᵀ`, tile by tile again; the input gradient is the same tiled
//!   convolution of `dY` with the weight's channels swapped and its taps flipped (padding
//!   `k − 1 − p`), so no col2im is needed. The weight gradient of a layer that narrows 4× or more
//!   (`4·O ≤ C`) is built the other way round: `dWᵀ[C, O·k²] = X · cols(dY)ᵀ`, with the columns
//!   taken from the output gradient (padding `k − 1 − p`, taps flipped), so both sides of the GEMM
//!   are wide.
//!
//! On CPU this is one custom op with its own backward, which skips the input gradient when the input
//! needs none (e.g. the frozen attention fed to the first layer). On other devices candle's
//! convolution is used.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use crate::fused::slice;

#[cfg(test)]
mod direct;
mod product;
mod tiles;
mod winograd;
use tiles::{TileElement, TilePlan};
use winograd::KernelView;

/// Stride-1 `Conv2d` with square kernel `w: [O, C, k, k]`, zero `padding` on each side, optional `bias: [O]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, padding: usize) -> Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (o, wc, kh, kw) = w.dims4()?;
    if wc != c || kh != kw {
        candle_core::bail!("conv2d: weight {:?} does not fit input {:?}", w.shape(), x.shape());
    }
    if h + 2 * padding < kh || wd + 2 * padding < kw {
        candle_core::bail!("conv2d: kernel {kh} larger than padded input {h}x{wd}");
    }
    if padding >= kh {
        candle_core::bail!("conv2d: padding {padding} must be smaller than the kernel ({kh})");
    }
    let out = if x.device().is_cpu() {
        let op = ConvOp { geometry: Geometry { k: kh, pad: padding, flipped: false } };
        x.contiguous()?.apply_op2(&w.contiguous()?, op)?
    } else {
        x.conv2d(w, padding, 1, 1, 1)?
    };
    match bias {
        Some(b) => out.broadcast_add(&b.reshape((1, o, 1, 1))?),
        None => Ok(out),
    }
}

/// Kernel size and padding of a stride-1 convolution, and the order of its taps.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    k: usize,
    pad: usize,
    /// Tap `(ky, kx)` reads the weight's tap `(k−1−ky, k−1−kx)` (and is stored as that row of its
    /// plane's columns).
    flipped: bool,
}

impl Geometry {
    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h + 2 * self.pad + 1 - self.k, w + 2 * self.pad + 1 - self.k)
    }

    /// For tap offset `d` (0..k) along an axis of input length `len` and output length `out_len`: the
    /// output range whose input index `o + d − pad` is inside the input.
    fn valid_range(&self, d: usize, len: usize, out_len: usize) -> std::ops::Range<usize> {
        let lo = self.pad.saturating_sub(d);
        let hi = (len + self.pad).saturating_sub(d).min(out_len);
        lo..hi.max(lo)
    }

    /// The geometry whose im2col, with flipped taps, maps the output grid back onto the input grid
    /// (padding `k − 1 − pad`; needs `pad < k`).
    fn transposed(&self) -> Geometry {
        Geometry { k: self.k, pad: self.k - 1 - self.pad, flipped: !self.flipped }
    }

    /// Row of tap `(ky, kx)` within a plane's columns.
    fn tap_row(&self, ky: usize, kx: usize) -> usize {
        if self.flipped {
            (self.k - 1 - ky) * self.k + (self.k - 1 - kx)
        } else {
            ky * self.k + kx
        }
    }
}

macro_rules! dispatch_float {
    ($storage:expr, $f:ident, $($args:expr),*) => {
        match $storage {
            CpuStorage::F32(_) => $f::<f32>($($args),*),
            CpuStorage::F64(_) => $f::<f64>($($args),*),
            CpuStorage::BF16(_) => $f::<half::bf16>($($args),*),
            CpuStorage::F16(_) => $f::<half::f16>($($args),*),
            other => candle_core::bail!("conv2d: unsupported dtype {:?}", other.dtype()),
        }
    };
}

/// The convolution op.
struct ConvOp {
    geometry: Geometry,
}

fn conv_storage<T: TileElement>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, op: &ConvOp) -> Result<(CpuStorage, Shape)> {
    let g = op.geometry;
    let (n, c, h, w) = l1.shape().dims4()?;
    let (o, _, _, _) = l2.shape().dims4()?;
    let (ho, wo) = g.out_size(h, w);
    let (x, weight) = (slice::<T>(s1, l1)?, T::widen_slice(slice::<T>(s2, l2)?));
    let values = if winograd::applies(g, (h, w)) {
        winograd::convolve(x, (n, c, h, w), &weight, KernelView::forward(o, c, g))
    } else {
        let plan = TilePlan::for_conv(n, (ho, wo), c * g.k * g.k);
        tiles::convolve(x, (n, c, h, w), &weight, o, g, &plan)
    };
    Ok((T::to_cpu_storage_owned(T::narrow_vec(values)), Shape::from((n, o, ho, wo))))
}

/// A convolution's input gradient as a forward-only op on `(dy, w)`: the adjoint of the convolution,
/// `dY` convolved with the weight's channels swapped and its taps flipped, padded by `k − 1 − p`.
struct InputGradient {
    geometry: Geometry,
}

fn input_gradient_storage<T: TileElement>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, op: &InputGradient) -> Result<(CpuStorage, Shape)> {
    let g = op.geometry;
    let (n, o, ho, wo) = l1.shape().dims4()?;
    let (_, c, k, _) = l2.shape().dims4()?;
    let back = g.transposed();
    let (h, w) = back.out_size(ho, wo);
    let (dy, weight) = (slice::<T>(s1, l1)?, T::widen_slice(slice::<T>(s2, l2)?));
    let values = if winograd::applies(back, (ho, wo)) {
        winograd::convolve(dy, (n, o, ho, wo), &weight, KernelView::input_gradient(o, c, g))
    } else {
        let swapped = swap_channels(&weight, o, c, k * k);
        let plan = TilePlan::for_conv(n, (h, w), o * k * k);
        tiles::convolve(dy, (n, o, ho, wo), &swapped, c, back, &plan)
    };
    Ok((T::to_cpu_storage_owned(T::narrow_vec(values)), Shape::from((n, c, h, w))))
}

/// A weight `[O, C, taps]` with its channels swapped: `[C, O, taps]`. Blocks of output rows are
/// filled side by side, each from contiguous runs of the source.
fn swap_channels<A: tiles::Accumulator>(weight: &[A], o: usize, c: usize, taps: usize) -> Vec<A> {
    const ROWS: usize = 16;
    let mut out = vec![A::ZERO; weight.len()];
    out.par_chunks_mut(ROWS * o * taps).enumerate().for_each(|(block, rows)| {
        let first = block * ROWS;
        let count = rows.len() / (o * taps);
        for oi in 0..o {
            let src = &weight[(oi * c + first) * taps..][..count * taps];
            for (r, kernel) in src.chunks_exact(taps).enumerate() {
                rows[(r * o + oi) * taps..][..taps].copy_from_slice(kernel);
            }
        }
    });
    out
}

impl CustomOp2 for InputGradient {
    fn name(&self) -> &'static str {
        "flmm-conv2d-input-gradient"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_float!(s1, input_gradient_storage, s1, l1, s2, l2, self)
    }
}

/// A convolution's weight gradient as a forward-only op on `(x, dy)`.
struct WeightGradient {
    geometry: Geometry,
}

/// Whether a layer from `c` to `o` channels takes its weight gradient's columns from the output
/// gradient (module docs).
fn narrows(c: usize, o: usize) -> bool {
    4 * o <= c
}

fn weight_gradient_storage<T: TileElement>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, op: &WeightGradient) -> Result<(CpuStorage, Shape)> {
    let g = op.geometry;
    let (n, c, h, w) = l1.shape().dims4()?;
    let (_, o, ho, wo) = l2.shape().dims4()?;
    let (x, dy) = (slice::<T>(s1, l1)?, slice::<T>(s2, l2)?);
    let taps = g.k * g.k;
    let dw = if winograd::applies_to_weight_gradient(g, (h, w)) {
        winograd::weight_gradient(x, (n, c, h, w), &T::widen_slice(dy), o, g)
    } else if narrows(c, o) {
        // dWᵀ[c, o·k² + t] = Σ x[c, ·] · dY shifted by tap t of the transposed geometry (module docs).
        let plan = TilePlan::for_conv(n, (h, w), o * taps);
        let transposed = tiles::weight_gradient(dy, (n, o, ho, wo), &T::widen_slice(x), c, g.transposed(), &plan);
        let row = |oi: usize, ci: usize| &transposed[ci * o * taps + oi * taps..][..taps];
        (0..o).flat_map(|oi| (0..c).flat_map(move |ci| row(oi, ci).iter().copied())).collect()
    } else {
        let plan = TilePlan::for_conv(n, (ho, wo), c * taps);
        tiles::weight_gradient(x, (n, c, h, w), &T::widen_slice(dy), o, g, &plan)
    };
    Ok((T::to_cpu_storage_owned(T::narrow_vec(dw)), Shape::from((o, c, g.k, g.k))))
}

impl CustomOp2 for WeightGradient {
    fn name(&self) -> &'static str {
        "flmm-conv2d-weight-gradient"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_float!(s1, weight_gradient_storage, s1, l1, s2, l2, self)
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "flmm-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch_float!(s1, conv_storage, s1, l1, s2, l2, self)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.geometry;
        let input_needs_grad = x.track_op();
        // The gradients are computed on detached operands: a gradient that kept the forward graph alive
        // (through the input or the weight variable) would hold every activation of the step, and the
        // trainer's gradient accumulation would chain those graphs from step to step.
        let (x, w, grad) = (x.detach(), w.detach(), grad.detach().contiguous()?);
        let dw = x.apply_op2_no_bwd(&grad, &WeightGradient { geometry: g })?;
        let dx = if input_needs_grad {
            Some(grad.apply_op2_no_bwd(&w.contiguous()?, &InputGradient { geometry: g })?)
        } else {
            None
        };
        Ok((dx, Some(dw)))
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
        let x = sample(&[2, 8, 7, 5], -1.0, 1.0, 41).unwrap();
        // Same forward for every width (8 → 2 takes its weight gradient's columns from the output gradient).
        for o in [4, 2] {
            for (k, pad) in [(3, 1), (3, 0), (1, 0), (2, 1), (5, 2)] {
                let w = sample(&[o, 8, k, k], -1.0, 1.0, 42).unwrap();
                let d = max_diff(&conv2d(&x, &w, None, pad).unwrap(), &x.conv2d(&w, pad, 1, 1, 1).unwrap());
                assert!(d < 1e-12, "o {o} k {k} pad {pad}: max diff {d}");
            }
        }
    }

    #[test]
    fn both_weight_gradients_match_the_direct_definition() {
        let (n, c, h, w) = (2, 8, 7, 6);
        let xs = direct::values(n * c * h * w, 60);
        let x = Tensor::from_slice(&xs, (n, c, h, w), &candle_core::Device::Cpu).unwrap();
        // 8 → 3 and 8 → 4: columns from the input; 8 → 2: from the output gradient.
        for o in [3, 4, 2] {
            for (k, pad) in [(3, 1), (3, 0), (1, 0), (2, 1), (5, 2)] {
                let g = Geometry { k, pad, flipped: false };
                let (ho, wo) = g.out_size(h, w);
                let dys = direct::values(n * o * ho * wo, 61);
                let dy = Tensor::from_slice(&dys, (n, o, ho, wo), &candle_core::Device::Cpu).unwrap();
                let dw = x.apply_op2_no_bwd(&dy, &WeightGradient { geometry: g }).unwrap();
                let (_, want, _) = direct::direct(&xs, (n, c, h, w), &vec![0.0; o * c * k * k], o, k, pad, &dys);
                let d = direct::max_diff(&dw.flatten_all().unwrap().to_vec1::<f64>().unwrap(), &want);
                assert!(d < 1e-12, "8 -> {o}, k {k} pad {pad}: weight gradient off by {d}");
            }
        }
    }

    #[test]
    fn winograd_sizes_match_candle_and_finite_differences() {
        // 32×30 outputs (16 × 15 = 240 tiles, 20×18: 90): the first takes every pass by Winograd, the
        // second its forward and input gradient by Winograd and its weight gradient by im2col.
        let g = Geometry { k: 3, pad: 1, flipped: false };
        assert!(winograd::applies(g, (32, 30)) && winograd::applies_to_weight_gradient(g, (32, 32)));
        assert!(winograd::applies(g, (20, 18)) && !winograd::applies_to_weight_gradient(g, (20, 18)));
        for (h, w) in [(32, 32), (20, 18)] {
            let x = sample(&[2, 5, h, w], -1.0, 1.0, 54).unwrap();
            let wt = sample(&[3, 5, 3, 3], -1.0, 1.0, 55).unwrap();
            let d = max_diff(&conv2d(&x, &wt, None, 1).unwrap(), &x.conv2d(&wt, 1, 1, 1, 1).unwrap());
            assert!(d < 1e-12, "{h}x{w}: output off by {d}");
            // The weighted sum runs over 6 000 outputs, so central differences with step 1e-6 carry
            // ~1e-8 of rounding; a wrong tap or tile would be off by O(1).
            let r = check(|t| weighted_sum(&conv2d(&t[0], &t[1], None, 1)?, 56), &[x, wt], 1e-6, 30).unwrap();
            assert!(r.max_error < 1e-6, "{h}x{w}: {r:?}");
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
        // The weight gradient's columns from the input (2 → 4) and from the output gradient (8 → 2,
        // also with k 2, pad 1).
        for (c, o, k, pad) in [(2, 4, 3, 1), (8, 2, 3, 1), (8, 2, 2, 1), (8, 2, 3, 0)] {
            let x = sample(&[2, c, 5, 4], -1.0, 1.0, 46).unwrap();
            let w = sample(&[o, c, k, k], -1.0, 1.0, 47).unwrap();
            let b = sample(&[o], -1.0, 1.0, 48).unwrap();
            let r = check(|t| weighted_sum(&conv2d(&t[0], &t[1], Some(&t[2]), pad)?, 49), &[x, w, b], 1e-6, 30).unwrap();
            assert!(r.max_error < 1e-8, "c {c} o {o} k {k} pad {pad}: {r:?}");
        }
    }

    #[test]
    fn gradients_hold_no_graph() {
        // A gradient built from the tracked input or weight would keep the whole forward graph alive
        // (and, accumulated over steps, every step's graph: the head training ran out of memory).
        for (c, o) in [(2, 3), (8, 2)] {
            let x = candle_core::Var::from_tensor(&sample(&[1, c, 4, 4], -1.0, 1.0, 52).unwrap()).unwrap();
            let w = candle_core::Var::from_tensor(&sample(&[o, c, 3, 3], -1.0, 1.0, 53).unwrap()).unwrap();
            let grads = conv2d(&(x.as_tensor() * 2.0).unwrap(), w.as_tensor(), None, 1).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &w] {
                assert!(!grads.get(v.as_tensor()).unwrap().track_op(), "{c} -> {o}: a gradient carries a graph");
            }
        }
    }

    #[test]
    fn constant_input_gets_no_gradient() {
        for (c, o) in [(2, 3), (8, 2)] {
            let x = sample(&[1, c, 4, 4], -1.0, 1.0, 50).unwrap();
            let w = candle_core::Var::from_tensor(&sample(&[o, c, 3, 3], -1.0, 1.0, 51).unwrap()).unwrap();
            let grads = conv2d(&x, w.as_tensor(), None, 1).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(grads.get(&x).is_none());
            assert!(grads.get(w.as_tensor()).is_some());
        }
    }
}
