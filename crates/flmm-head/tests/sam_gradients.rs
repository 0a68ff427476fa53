//! Gradients through F-LMM's SAM refiner agree with finite differences (f64, tiny synthetic SAM): for the
//! U-Net logits feeding the dense prompt, a text token, and a mask-decoder weight. This is what lets the
//! SAM losses train the U-Net, `text_proj` and SAM's decoder.

use candle_core::{Result, Tensor};
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::preprocess::SamGeometry;
use flmm_head::sam::refiner::refine;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};
use flmm_nn::gradcheck::{check, sample, weighted_sum};

const DECODER_WEIGHT: &str = "mask_decoder.output_hypernetworks_mlps.0.layers.2.weight";

fn key_seed(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A tiny SAM: 64-px input (4×4 embedding), width 32; `override_weight` replaces the decoder weight.
fn tiny_sam(override_weight: Option<Tensor>) -> Sam {
    let weights = SamWeights::synthetic(Box::new(move |key: &str, shape: &[usize]| {
        if key == DECODER_WEIGHT {
            if let Some(w) = &override_weight {
                return w.clone();
            }
        }
        let is_norm_weight = key.ends_with(".weight") && shape.len() == 1;
        let (lo, hi) = if is_norm_weight { (0.9, 1.1) } else { (-0.3, 0.3) };
        sample(shape, lo, hi, key_seed(key)).unwrap()
    }));
    let vit = VitConfig { img_size: 64, patch_size: 16, embed_dim: 16, depth: 1, heads: 2, global_blocks: vec![0], window: 0, out_chans: 32 };
    let decoder = MaskDecoderConfig { dim: 32, depth: 2, heads: 4, mlp_dim: 64, multimask_outputs: 3 };
    Sam::build(&weights, &EncoderConfig::Vit(vit), decoder).unwrap()
}

#[test]
fn refiner_gradients_match_finite_differences() {
    let geometry = SamGeometry::new((24, 40), 64).unwrap(); // resized 38×64
    let embedding = sample(&[1, 32, 4, 4], -1.0, 1.0, 1).unwrap();
    // Logits above -1 so the pad value min(-1, min logit) stays -1 under perturbation, and a blob so the
    // box is not the whole image.
    let logits = sample(&[1, 5, 6], -0.9, -0.2, 2).unwrap();
    let blob = Tensor::from_vec((0..30).map(|i| if (i / 6) >= 1 && (i / 6) <= 3 && (i % 6) >= 2 { 2.5 } else { 0.0 }).collect::<Vec<f64>>(), (1, 5, 6), &candle_core::Device::Cpu).unwrap();
    let logits = (logits + blob).unwrap();
    let text = sample(&[2, 32], -1.0, 1.0, 3).unwrap();
    let weight = sample(&[4, 32], -0.3, 0.3, key_seed(DECODER_WEIGHT)).unwrap();
    let run = |t: &[Tensor]| -> Result<Tensor> {
        let sam = tiny_sam(Some(t[2].clone()));
        let out = refine(&sam, &embedding, &geometry, &t[0], Some(&[t[1].clone()])).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        weighted_sum(&out, 7)
    };
    let r = check(run, &[logits, text, weight], 1e-6, 12).unwrap();
    eprintln!("refiner gradcheck: {r:?}");
    assert!(r.max_error < 1e-6, "{r:?}");
    assert_eq!(r.checked, 36);
}

#[test]
fn gradients_reach_the_unet_logits_and_text_but_not_through_the_box() {
    let sam = tiny_sam(None);
    let geometry = SamGeometry::new((24, 40), 64).unwrap();
    let embedding = sample(&[1, 32, 4, 4], -1.0, 1.0, 1).unwrap();
    let logits = candle_core::Var::from_tensor(&sample(&[1, 5, 6], -3.0, 3.0, 4).unwrap()).unwrap();
    let text = candle_core::Var::from_tensor(&sample(&[3, 32], -1.0, 1.0, 5).unwrap()).unwrap();
    let out = refine(&sam, &embedding, &geometry, logits.as_tensor(), Some(&[text.as_tensor().clone()])).unwrap();
    assert_eq!(out.dims(), [1, 24, 40], "logits at the original resolution");
    let grads = out.sum_all().unwrap().backward().unwrap();
    for (name, v) in [("logits", &logits), ("text", &text)] {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0, "zero gradient for {name}");
    }
    let trained = sam.params.vars().iter().filter(|v| grads.get(v.as_tensor()).is_some()).count();
    // On the graph: all 136 trainable tensors but the IoU head (6) and the point / not-a-point / no-mask
    // embeddings (4), which a box + mask prompt does not use.
    eprintln!("{trained} of {} trainable tensors receive gradients", sam.params.vars().len());
    assert_eq!((trained, sam.params.vars().len()), (126, 136));
}
