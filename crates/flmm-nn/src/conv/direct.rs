//! The convolution by its definition, in f64: the reference the kernels' tests compare with.

/// Deterministic values in [-1, 1).
pub(super) fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..len).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// `y[b, o, oy, ox] = Σ w[o, c, ky, kx] · x[b, c, oy + ky − p, ox + kx − p]` for `x: [N, C, H, W]` and
/// `wt: [O, C, k, k]`, with its weight gradient and input gradient for the output gradient `dy`.
pub(super) fn direct(x: &[f64], (n, c, h, w): (usize, usize, usize, usize), wt: &[f64], o: usize, k: usize, p: usize, dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (ho, wo) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
    let mut y = vec![0.0; n * o * ho * wo];
    let mut dw = vec![0.0; o * c * k * k];
    let mut dx = vec![0.0; n * c * h * w];
    for b in 0..n {
        for oc in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let out = ((b * o + oc) * ho + oy) * wo + ox;
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = ((oy + ky) as isize - p as isize, (ox + kx) as isize - p as isize);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((b * c + ci) * h + iy as usize) * w + ix as usize;
                                let wi = ((oc * c + ci) * k + ky) * k + kx;
                                y[out] += wt[wi] * x[xi];
                                dw[wi] += dy[out] * x[xi];
                                dx[xi] += dy[out] * wt[wi];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dw, dx)
}

/// Largest absolute difference.
pub(super) fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}
