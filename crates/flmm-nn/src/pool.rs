//! 2×2 max-pooling with a correct backward (candle's `max_pool2d` backward scales by 0.25).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::fused::{dispatch, slice};

/// `MaxPool2d(kernel 2, stride 2)` on `[N, C, H, W]`, floor mode (an odd last row/column is dropped).
///
/// The gradient goes to one element per window, the first maximum in raster order, as PyTorch's. On
/// the CPU (f32, f64) one custom op with its own backward; elsewhere composed from candle primitives.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("max_pool2x2: input {h}x{w} is smaller than the 2x2 window");
    }
    if crate::fused::applies(x) {
        x.contiguous()?.apply_op1(MaxPool)
    } else {
        max_pool2x2_composed(x)
    }
}

fn max_pool2x2_composed(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let x = x.narrow(2, 0, ho * 2)?.narrow(3, 0, wo * 2)?;
    let windows = x
        .reshape((n, c, ho, 2, wo, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, ho, wo, 4))?;
    let first_max = windows.detach().argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

/// For every output pixel of one `h × w` plane, the plane index of its window's first maximum.
fn window_argmax<T: WithDType>(plane: &[T], w: usize, (oy, ox): (usize, usize)) -> usize {
    let top = 2 * oy * w + 2 * ox;
    [top, top + 1, top + w, top + w + 1].into_iter().fold(top, |best, i| if plane[i] > plane[best] { i } else { best })
}

struct MaxPool;

fn max_pool_fwd<T: WithDType>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s, l)?;
    let (n, c, h, w) = l.shape().dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![T::zero(); n * c * ho * wo];
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(out, plane)| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = plane[window_argmax(plane, w, (i / wo, i % wo))];
        }
    });
    Ok((T::to_cpu_storage_owned(y), Shape::from((n, c, ho, wo))))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "flmm-max-pool-2x2"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, max_pool_fwd, s, l)
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.detach().apply_op2_no_bwd(&grad.detach().contiguous()?, &MaxPoolGrad)?))
    }
}

/// The backward from `(x, grad)`: each output gradient goes to its window's first maximum.
struct MaxPoolGrad;

fn max_pool_grad<T: WithDType>(xs: (&CpuStorage, &Layout), gs: (&CpuStorage, &Layout)) -> Result<(CpuStorage, Shape)> {
    let (x, g) = (slice::<T>(xs.0, xs.1)?, slice::<T>(gs.0, gs.1)?);
    let (_, _, h, w) = xs.1.shape().dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(g.par_chunks(ho * wo))).for_each(|(dplane, (plane, gplane))| {
        for (i, d) in gplane.iter().enumerate() {
            dplane[window_argmax(plane, w, (i / wo, i % wo))] = *d;
        }
    });
    Ok((T::to_cpu_storage_owned(dx), xs.1.shape().clone()))
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "flmm-max-pool-2x2-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, max_pool_grad, (s1, l1), (s2, l2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check, sample, weighted_sum};
    use candle_core::{Device, Var};

    #[test]
    fn picks_the_window_maximum() {
        let x = Tensor::arange(0f32, 20.0, &Device::Cpu).unwrap().reshape((1, 1, 4, 5)).unwrap();
        let y: Vec<Vec<f32>> = max_pool2x2(&x).unwrap().squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![6.0, 8.0], vec![16.0, 18.0]]);
    }

    #[test]
    fn ties_send_the_whole_gradient_to_the_first_maximum() {
        let x = Var::new(&[[[[1.0f64, 1.0], [1.0, 1.0]]]], &Device::Cpu).unwrap();
        let g = max_pool2x2(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for f in [max_pool2x2, max_pool2x2_composed] {
            let x = sample(&[2, 3, 7, 5], -1.0, 1.0, 21).unwrap();
            let r = check(|t| weighted_sum(&f(&t[0])?, 22), &[x], 1e-7, 40).unwrap();
            assert!(r.max_error < 1e-7, "{r:?}");
        }
    }

    #[test]
    fn fused_equals_composed_with_ties_and_odd_sizes() {
        // Values on a coarse grid so that many windows hold tied maxima.
        let x = (sample(&[2, 3, 7, 5], -2.0, 2.0, 23).unwrap() * 2.0).unwrap().round().unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let probe = sample(&[2, 3, 3, 2], -1.0, 1.0, 24).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        let mut outs = Vec::new();
        for f in [max_pool2x2, max_pool2x2_composed] {
            let y = f(x.as_tensor()).unwrap();
            let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            outs.push((flat(&y), flat(g.get(x.as_tensor()).unwrap())));
        }
        assert_eq!(outs[0], outs[1]);
    }
}
