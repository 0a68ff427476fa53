//! A synthetic grounding set: "attention stacks" made of blurred blobs, and the disk masks they point
//! at. Some channels put a Gaussian blob on the disk (like attention heads that look at the phrase's
//! object), the rest put one somewhere else (heads looking elsewhere); every channel gets noise.
//! Deterministic from a seed, so a head's training curve on it is reproducible.

use candle_core::{Device, Tensor};
use flmm_nn::rng::Rng;
use serde::{Deserialize, Serialize};

/// Shape of the synthetic set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    /// Number of samples.
    pub samples: usize,
    /// Attention channels per sample.
    pub channels: usize,
    /// Side of the square attention grid.
    pub grid: usize,
    /// Side of the square target mask (the head's output size for this grid).
    pub mask_size: usize,
    /// Fraction of channels whose blob sits on the target disk.
    pub informative_fraction: f64,
    /// Uniform noise amplitude added to every channel (before rescaling to [0, 1]).
    pub noise: f64,
    /// Seed of the whole set.
    pub seed: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self { samples: 64, channels: 16, grid: 24, mask_size: 64, informative_fraction: 0.5, noise: 0.2, seed: 0 }
    }
}

/// One sample: an attention stack and its target mask.
#[derive(Debug, Clone)]
pub struct BlobSample {
    /// `[C, grid, grid]`, values in [0, 1].
    pub attention: Tensor,
    /// Row-major target, 1 inside the disk.
    pub mask: Vec<u8>,
    /// `(height, width)` of `mask`.
    pub mask_shape: (usize, usize),
}

/// Generates the set described by `config`.
pub fn generate(config: &BlobConfig) -> candle_core::Result<Vec<BlobSample>> {
    let mut rng = Rng::new(config.seed);
    (0..config.samples).map(|_| sample(config, &mut rng)).collect()
}

fn sample(config: &BlobConfig, rng: &mut Rng) -> candle_core::Result<BlobSample> {
    let (cx, cy) = (0.25 + 0.5 * rng.uniform(), 0.25 + 0.5 * rng.uniform());
    let radius = 0.12 + 0.13 * rng.uniform();
    let g = config.grid;
    let informative = ((config.channels as f64) * config.informative_fraction).round() as usize;
    let mut values = Vec::with_capacity(config.channels * g * g);
    for ch in 0..config.channels {
        let (bx, by, sigma) = if ch < informative {
            (cx + 0.03 * (rng.uniform() - 0.5), cy + 0.03 * (rng.uniform() - 0.5), radius * (0.6 + 0.2 * rng.uniform()))
        } else {
            (rng.uniform(), rng.uniform(), 0.05 + 0.2 * rng.uniform())
        };
        let mut plane: Vec<f64> = (0..g * g)
            .map(|i| {
                let (x, y) = (((i % g) as f64 + 0.5) / g as f64, ((i / g) as f64 + 0.5) / g as f64);
                let d2 = (x - bx).powi(2) + (y - by).powi(2);
                (-d2 / (2.0 * sigma * sigma)).exp() + config.noise * rng.uniform()
            })
            .collect();
        let max = plane.iter().cloned().fold(f64::MIN, f64::max);
        plane.iter_mut().for_each(|v| *v /= max);
        values.extend(plane.into_iter().map(|v| v as f32));
    }
    let m = config.mask_size;
    let mask = (0..m * m)
        .map(|i| {
            let (x, y) = (((i % m) as f64 + 0.5) / m as f64, ((i / m) as f64 + 0.5) / m as f64);
            ((x - cx).powi(2) + (y - cy).powi(2) <= radius * radius) as u8
        })
        .collect();
    Ok(BlobSample { attention: Tensor::from_vec(values, (config.channels, g, g), &Device::Cpu)?, mask, mask_shape: (m, m) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_in_range_with_nonempty_masks() {
        let cfg = BlobConfig { samples: 4, ..Default::default() };
        let a = generate(&cfg).unwrap();
        let b = generate(&cfg).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.mask, y.mask);
            let (vx, vy): (Vec<f32>, Vec<f32>) =
                (x.attention.flatten_all().unwrap().to_vec1().unwrap(), y.attention.flatten_all().unwrap().to_vec1().unwrap());
            assert_eq!(vx, vy);
            assert!(vx.iter().all(|v| (0.0..=1.0).contains(v)));
            let area = x.mask.iter().filter(|&&v| v == 1).count() as f64 / x.mask.len() as f64;
            assert!(area > 0.03 && area < 0.25, "disk area fraction {area}");
        }
        assert_ne!(a[0].mask, a[1].mask);
    }
}
