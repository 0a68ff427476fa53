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

/// `s_i = 2·u_i − 1` for `i < n`, with `u_i = (splitmix64(fnv1a64(key) + i) >> 40) / 2^24` (f64).
fn signed_uniforms(key: &str, n: usize) -> impl Iterator<Item = f64> {
    let base = fnv1a64(key);
    (0..n as u64).map(move |i| 2.0 * ((splitmix64(base.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64) - 1.0)
}

fn tensor_of(values: impl Iterator<Item = f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.map(|v| v as f32).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

/// The deterministic U-Net weights of `tools/fixtures/common.py` (`param_values`), bit-exact.
#[allow(dead_code)]
pub fn fixture_weight(key: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let (scale, offset) = if key.ends_with("conv.weight") || key == "mask_head.conv_seg.weight" {
        let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
        (3.0f64.sqrt() * (2.0 / fan_out).sqrt(), 0.0)
    } else if key.ends_with("gn.weight") {
        (0.5, 1.0)
    } else if key.ends_with("gn.bias") || key == "mask_head.conv_seg.bias" {
        (0.5, 0.0)
    } else {
        panic!("no fixture rule for {key}")
    };
    tensor_of(signed_uniforms(key, n).map(|s| if offset != 0.0 { offset + scale * s } else { s * scale }), shape)
}

/// The deterministic SAM / MobileSAM weights of `tools/fixtures/common.py` (`sam_param_values`),
/// bit-exact; `None` for integer buffers (`num_batches_tracked`).
#[allow(dead_code)]
pub fn sam_fixture_weight(key: &str, shape: &[usize]) -> Option<Tensor> {
    const EMBEDDINGS: [&str; 6] =
        ["point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens", "positional_encoding_gaussian_matrix"];
    let n: usize = shape.iter().product();
    let (offset, scale) = if key.ends_with("num_batches_tracked") {
        return None;
    } else if key.ends_with("running_var") {
        (1.0, 0.25)
    } else if key.ends_with("running_mean") {
        (0.0, 0.1)
    } else if EMBEDDINGS.iter().any(|p| key.contains(p)) {
        (0.0, 1.0)
    } else if key.contains("pos_embed") || key.contains("rel_pos") || key.contains("attention_biases") || key.ends_with(".bias") {
        (0.0, 0.1)
    } else if key.ends_with(".weight") && shape.len() == 1 {
        (1.0, 0.1)
    } else if key.ends_with(".weight") && shape.len() >= 2 {
        (0.0, (3.0 / shape[1..].iter().product::<usize>() as f64).sqrt())
    } else {
        panic!("no SAM fixture rule for {key}")
    };
    Some(tensor_of(signed_uniforms(key, n).map(|s| if offset != 0.0 { offset + scale * s } else { s * scale }), shape))
}

/// Fixture weights for every `(key, shape)`.
#[allow(dead_code)]
pub fn fixture_weights(keys: &[(String, Vec<usize>)]) -> HashMap<String, Tensor> {
    keys.iter().map(|(k, s)| (k.clone(), fixture_weight(k, s))).collect()
}

/// `max |a − b| / max(1, max |b|)`.
#[allow(dead_code)]
pub fn relative_max_error(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0) as f64;
    diff / scale
}
