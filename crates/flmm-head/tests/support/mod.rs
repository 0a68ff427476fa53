//! Shared helpers for the head's parity tests.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/fixtures` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fnv1a64(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The deterministic weights of `tools/fixtures/common.py`, bit-exact: element `i` of `key` is
/// `s = 2·u − 1` with `u = (splitmix64(fnv1a64(key) + i) >> 40) / 2^24`, scaled by the key's rule.
pub fn fixture_weight(key: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let scale_and_offset = if key.ends_with("conv.weight") || key == "mask_head.conv_seg.weight" {
        let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
        (3.0f64.sqrt() * (2.0 / fan_out).sqrt(), 0.0)
    } else if key.ends_with("gn.weight") {
        (0.5, 1.0)
    } else if key.ends_with("gn.bias") || key == "mask_head.conv_seg.bias" {
        (0.5, 0.0)
    } else {
        panic!("no fixture rule for {key}")
    };
    let base = fnv1a64(key);
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = (splitmix64(base.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64;
            let s = 2.0 * u - 1.0;
            let (scale, offset) = scale_and_offset;
            (if offset != 0.0 { offset + scale * s } else { s * scale }) as f32
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Fixture weights for every `(key, shape)`.
pub fn fixture_weights(keys: &[(String, Vec<usize>)]) -> HashMap<String, Tensor> {
    keys.iter().map(|(k, s)| (k.clone(), fixture_weight(k, s))).collect()
}

/// `max |a − b| / max(1, max |b|)`.
pub fn relative_max_error(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0) as f64;
    diff / scale
}
