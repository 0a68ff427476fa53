//! The trainable SAM ViT encoder (`Sam::build_trainable`): same outputs as the frozen, fused-op encoder;
//! gradients through the whole encoder agree with finite differences; every encoder tensor is in the
//! one parameter store and receives a gradient; a saved f16 checkpoint opens with `Sam::load_file`.

use candle_core::{DType, Device, Result, Tensor};
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};
use flmm_nn::gradcheck::{check, sample, weighted_sum};

fn key_seed(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// 32-px input, 4-px patches → 8×8 grid; block 0 in windows of 3 (padded to 9), block 1 global.
fn vit() -> VitConfig {
    VitConfig { img_size: 32, patch_size: 4, embed_dim: 8, depth: 2, heads: 2, global_blocks: vec![1], window: 3, out_chans: 16 }
}

/// Two heads, not SAM's 8: the saved checkpoint records them in its metadata.
fn decoder() -> MaskDecoderConfig {
    MaskDecoderConfig { dim: 16, depth: 1, heads: 2, mlp_dim: 16, multimask_outputs: 3 }
}

/// Seeded weights in `dtype` (norm scales near 1); `overrides` replace tensors by key.
fn weights(dtype: DType, overrides: Vec<(&'static str, Tensor)>) -> SamWeights {
    SamWeights::synthetic(Box::new(move |key: &str, shape: &[usize]| {
        if let Some((_, t)) = overrides.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
        let is_norm_weight = key.ends_with(".weight") && shape.len() == 1;
        let (lo, hi) = if is_norm_weight { (0.8, 1.2) } else { (-0.5, 0.5) };
        sample(shape, lo, hi, key_seed(key)).unwrap().to_dtype(dtype).unwrap()
    }))
}

fn image(dtype: DType) -> Tensor {
    sample(&[1, 3, 32, 32], -2.0, 2.0, 99).unwrap().to_dtype(dtype).unwrap()
}

#[test]
fn trainable_forward_equals_frozen_forward() {
    let w = weights(DType::F32, vec![]);
    let enc = EncoderConfig::Vit(vit());
    let frozen = Sam::build(&w, &enc, decoder()).unwrap();
    let trainable = Sam::build_trainable(&w, &enc, decoder()).unwrap();
    let a = frozen.image_encoder.forward(&image(DType::F32)).unwrap();
    let b = trainable.image_encoder.forward(&image(DType::F32)).unwrap();
    assert_eq!(a.dims(), [1, 16, 8, 8]);
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("frozen vs trainable encoder: max |Δ| {diff:e} (max |y| {scale})");
    // Fused and composed LayerNorm / softmax round differently in f32; outputs are O(1) after the neck's norm.
    assert!(diff < 1e-5, "max |Δ| {diff}");
}

#[test]
fn encoder_gradients_match_finite_differences() {
    const KEYS: [&str; 4] = [
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.0.attn.qkv.weight",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.neck.2.weight",
    ];
    let base = weights(DType::F64, vec![]);
    let inputs: Vec<Tensor> = KEYS
        .iter()
        .map(|k| {
            let shape = match *k {
                "image_encoder.patch_embed.proj.weight" => vec![8, 3, 4, 4],
                "image_encoder.blocks.0.attn.qkv.weight" => vec![24, 8],
                "image_encoder.blocks.1.attn.rel_pos_h" => vec![15, 4],
                _ => vec![16, 16, 3, 3],
            };
            base.get(k, &shape).unwrap()
        })
        .collect();
    let x = image(DType::F64);
    let run = |t: &[Tensor]| -> Result<Tensor> {
        let w = weights(DType::F64, KEYS.iter().copied().zip(t.iter().cloned()).collect());
        let sam = Sam::build_trainable(&w, &EncoderConfig::Vit(vit()), decoder()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        weighted_sum(&sam.image_encoder.forward(&x).map_err(|e| candle_core::Error::Msg(e.to_string()))?, 5)
    };
    let r = check(run, &inputs, 1e-6, 5).unwrap();
    eprintln!("encoder gradcheck: {r:?}");
    assert_eq!(r.checked, 20);
    // Measured 4.5e-7: candle's erf (GELU) is accurate to ~1e-7 in f64, which the differences inherit.
    assert!(r.max_error < 1e-6, "{r:?}");
}

#[test]
fn every_encoder_tensor_is_a_parameter_with_a_gradient() {
    let sam = Sam::build_trainable(&weights(DType::F32, vec![]), &EncoderConfig::Vit(vit()), decoder()).unwrap();
    let names = sam.params.names();
    let encoder: Vec<&String> = names.iter().filter(|n| n.starts_with("image_encoder.")).collect();
    // patch embed (2) + pos (1) + 2 blocks × 14 (2 norms, 4 linears, 2 relative tables) + neck (2 convs, 2 norms)
    assert_eq!(encoder.len(), 37);
    assert!(names.iter().any(|n| n.starts_with("prompt_encoder.")) && names.iter().any(|n| n.starts_with("mask_decoder.")));
    let y = sam.image_encoder.forward(&image(DType::F32)).unwrap();
    let grads = weighted_sum(&y, 3).unwrap().backward().unwrap();
    for name in encoder {
        let g = grads.get(sam.params.get(name).unwrap().as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "zero gradient for {name}");
    }
}

#[test]
fn f16_checkpoint_loads_back() {
    let enc = EncoderConfig::Vit(vit());
    let trained = Sam::build_trainable(&weights(DType::F32, vec![]), &enc, decoder()).unwrap();
    let frozen = Sam::build(&weights(DType::F32, vec![]), &enc, decoder()).unwrap();
    assert!(frozen.save_file(std::path::Path::new("unused.safetensors"), DType::F16).is_err(), "a frozen encoder cannot be saved");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sam.safetensors");
    trained.save_file(&path, DType::F16).unwrap();
    let stored = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert!(stored.values().all(|t| t.dtype() == DType::F16));
    let loaded = Sam::load_file(&path).unwrap();
    assert_eq!(loaded.image_encoder.variant(), "vit(8)");
    let flmm_head::sam::ImageEncoder::Vit(v) = &loaded.image_encoder else { panic!("not a ViT") };
    assert_eq!(v.config(), &vit());
    assert_eq!(loaded.mask_decoder.config(), &decoder(), "the head count comes back from the metadata");
    let a = trained.image_encoder.forward(&image(DType::F32)).unwrap();
    let b = loaded.image_encoder.forward(&image(DType::F32)).unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    // f16 keeps 11 significant bits: weights move by ≤ 2.4e-4 relative.
    assert!(diff < 2e-2, "max |Δ| {diff}");
}
