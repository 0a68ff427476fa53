//! Random initialization of a SAM of any configuration, for training from scratch: what constructing
//! segment-anything's modules in PyTorch gives (Linear / Conv default init, `nn.Embedding` normals,
//! LayerNorm ones and zeros, zero relative positions), except a small truncated normal for the absolute
//! positions (SAM starts them at zero and relies on MAE-pretrained weights) and zero biases.
//! Deterministic: every tensor depends only on the seed and its key.

use candle_core::{Device, Tensor};
use flmm_nn::rng::Rng;

use crate::sam::weights::SamWeights;

/// Standard deviation of the absolute position embedding (truncated at ±2σ), as timm's ViT.
const POS_EMBED_STD: f64 = 0.02;

/// Gain of the decoder's query / key projections over PyTorch's default bound.
const QK_GAIN: f64 = 3.0;

/// Keys (suffixes of) initialized like `nn.Embedding`: standard normal.
const EMBEDDINGS: [&str; 5] = ["point_embeddings", "not_a_point_embed", "no_mask_embed", "iou_token", "mask_tokens"];

/// How one tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Zeros,
    Ones,
    Normal(f64),
    TruncatedNormal(f64),
    /// `U(−b, b)`.
    Uniform(f64),
}

fn rule(key: &str, shape: &[usize]) -> Init {
    if key.ends_with(".bias") || key.contains("rel_pos_") {
        Init::Zeros
    } else if key.ends_with("pos_embed") {
        Init::TruncatedNormal(POS_EMBED_STD)
    } else if key.ends_with("positional_encoding_gaussian_matrix") || EMBEDDINGS.iter().any(|e| key.contains(e)) {
        Init::Normal(1.0)
    } else if shape.len() == 1 {
        Init::Ones // LayerNorm / LayerNorm2d scales
    } else if key.ends_with("q_proj.weight") || key.ends_with("k_proj.weight") {
        let fan_in: usize = shape[1..].iter().product();
        Init::Uniform(QK_GAIN / (fan_in.max(1) as f64).sqrt())
    } else {
        // PyTorch's Linear / Conv / ConvTranspose default, kaiming_uniform(a = √5): bound 1/√fan_in with
        // fan_in = size(1) · receptive field (also for transposed convolutions, as torch computes it).
        let fan_in: usize = shape[1..].iter().product();
        Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt())
    }
}

fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn generate(seed: u64, key: &str, shape: &[usize]) -> Tensor {
    let source = match key.strip_suffix("k_proj.weight") {
        Some(prefix) => format!("{prefix}q_proj.weight"),
        None => key.to_string(),
    };
    let mut rng = Rng::new(seed ^ key_hash(&source));
    let n: usize = shape.iter().product();
    let values: Vec<f32> = match rule(key, shape) {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
        Init::TruncatedNormal(std) => (0..n)
            .map(|_| loop {
                let v = rng.normal();
                if v.abs() <= 2.0 {
                    break (v * std) as f32;
                }
            })
            .collect(),
        Init::Uniform(b) => (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * b) as f32).collect(),
    };
    Tensor::from_vec(values, shape, &Device::Cpu).expect("a shape's element count matches its values")
}

/// Freshly initialized SAM tensors for any key and shape (build with [`crate::sam::Sam::build_trainable`]).
pub fn random_weights(seed: u64) -> SamWeights {
    SamWeights::synthetic(Box::new(move |key: &str, shape: &[usize]| generate(seed, key, shape)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn rules_follow_the_key() {
        let w = random_weights(3);
        assert!(values(&w.get("image_encoder.blocks.0.norm1.weight", &[8]).unwrap()).iter().all(|&v| v == 1.0));
        assert!(values(&w.get("mask_decoder.iou_prediction_head.layers.0.bias", &[8]).unwrap()).iter().all(|&v| v == 0.0));
        assert!(values(&w.get("image_encoder.blocks.1.attn.rel_pos_h", &[15, 4]).unwrap()).iter().all(|&v| v == 0.0));
        let pos = values(&w.get("image_encoder.pos_embed", &[1, 4, 4, 64]).unwrap());
        assert!(pos.iter().all(|v| v.abs() <= 0.04) && pos.iter().any(|&v| v != 0.0));
        let lin = values(&w.get("image_encoder.blocks.0.mlp.lin1.weight", &[256, 64]).unwrap());
        assert!(lin.iter().all(|v| v.abs() <= 0.125) && lin.iter().any(|v| v.abs() > 0.1));
        let tokens = values(&w.get("mask_decoder.mask_tokens.weight", &[4, 64]).unwrap());
        assert!(tokens.iter().any(|v| v.abs() > 1.0), "standard normal, not a small uniform");
    }

    #[test]
    fn deterministic_per_seed_and_key() {
        let key = "mask_decoder.transformer.layers.0.mlp.lin1.weight";
        let a = values(&random_weights(1).get(key, &[4, 4]).unwrap());
        assert_eq!(a, values(&random_weights(1).get(key, &[4, 4]).unwrap()));
        assert_ne!(a, values(&random_weights(2).get(key, &[4, 4]).unwrap()));
        assert_ne!(a, values(&random_weights(1).get("mask_decoder.transformer.layers.1.mlp.lin1.weight", &[4, 4]).unwrap()));
    }
}
