//! Parameter initialization, deterministic from a seed.

use crate::rng::Rng;
use candle_core::{Device, Result, Tensor};

/// Kaiming-normal init for a conv weight `[O, C, kh, kw]`, `mode='fan_out', nonlinearity='relu'`
/// (mmcv's `kaiming_init` default for mmseg's UNet): `std = sqrt(2 / (O·kh·kw))`.
pub fn kaiming_normal_fan_out(shape: &[usize], rng: &mut Rng, device: &Device) -> Result<Tensor> {
    if shape.len() < 2 {
        candle_core::bail!("kaiming init needs a weight of rank >= 2, got {shape:?}");
    }
    let fan_out: usize = shape[0] * shape[2..].iter().product::<usize>();
    let std = (2.0 / fan_out as f64).sqrt();
    normal(shape, std, rng, device)
}

/// Zero-mean normal values with standard deviation `std`, f32.
pub fn normal(shape: &[usize], std: f64, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Tensor::from_vec(v, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_fan_out_std() {
        let mut rng = Rng::new(0);
        let t = kaiming_normal_fan_out(&[64, 128, 3, 3], &mut rng, &Device::Cpu).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let expected = 2.0 / (64.0 * 9.0);
        assert!((var / expected - 1.0).abs() < 0.03, "var {var} expected {expected}");
    }
}
