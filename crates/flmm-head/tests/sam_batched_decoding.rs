//! `Sam::decode_many` (prompts batched by sparse-token count) gives, in prompt order, exactly what one
//! `Sam::predict` per prompt gives, and gradients flow to every prompt's mask.

use candle_core::DType;
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::preprocess::SamGeometry;
use flmm_head::sam::prompt_encoder::{PointPrompt, Prompts};
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};
use flmm_nn::gradcheck::sample;

fn sam() -> Sam {
    let weights = SamWeights::synthetic(Box::new(|key: &str, shape: &[usize]| {
        let seed = key.bytes().fold(11u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let (lo, hi) = if key.ends_with(".weight") && shape.len() == 1 { (0.8, 1.2) } else { (-0.4, 0.4) };
        sample(shape, lo, hi, seed).unwrap().to_dtype(DType::F32).unwrap()
    }));
    let vit = VitConfig { img_size: 64, patch_size: 16, embed_dim: 16, depth: 1, heads: 2, global_blocks: vec![0], window: 0, out_chans: 32 };
    Sam::build(&weights, &EncoderConfig::Vit(vit), MaskDecoderConfig { dim: 32, depth: 2, heads: 4, mlp_dim: 64, multimask_outputs: 3 }).unwrap()
}

fn point(x: f32, y: f32, label: i32) -> PointPrompt {
    PointPrompt { x, y, label }
}

#[test]
fn batched_decoding_equals_one_prompt_at_a_time() {
    let sam = sam();
    let geometry = SamGeometry::new((64, 64), 64).unwrap();
    let embedding = sample(&[1, 32, 4, 4], -1.0, 1.0, 1).unwrap().to_dtype(DType::F32).unwrap();
    let mask = candle_core::Var::from_tensor(&sample(&[1, 1, 16, 16], -3.0, 3.0, 2).unwrap().to_dtype(DType::F32).unwrap()).unwrap();
    // Sparse lengths 2, 2, 3, 2 (a point alone is padded with "not a point"), so two batches, interleaved.
    let prompts = [
        Prompts { bbox: Some([4.0, 8.0, 30.0, 40.0]), ..Default::default() },
        Prompts { points: vec![point(20.0, 21.0, 1)], ..Default::default() },
        Prompts { points: vec![point(20.0, 21.0, 1), point(50.0, 5.0, 0)], ..Default::default() },
        Prompts { bbox: Some([10.0, 2.0, 60.0, 33.0]), mask: Some(mask.as_tensor().clone()), ..Default::default() },
    ];
    for multimask in [false, true] {
        let batched = sam.decode_many(&embedding, &prompts, multimask).unwrap();
        let m = if multimask { 3 } else { 1 };
        assert_eq!(batched.masks.dims(), [4, m, 16, 16]);
        assert_eq!(batched.iou.dims(), [4, m]);
        for (i, p) in prompts.iter().enumerate() {
            let one = sam.predict(&embedding, &geometry, p, None, multimask).unwrap();
            for (a, b) in [(&one.low_res, batched.masks.narrow(0, i, 1).unwrap()), (&one.iou, batched.iou.narrow(0, i, 1).unwrap())] {
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-5, "prompt {i}, multimask {multimask}: max |Δ| {diff}");
            }
        }
    }
    let boxes = sam.decode_many(&embedding, &prompts[..1], false).unwrap();
    assert_eq!(boxes.masks.dims(), [1, 1, 16, 16], "one group in prompt order");
    let decoded = sam.decode_many(&embedding, &prompts, false).unwrap();
    let g = decoded.masks.narrow(0, 3, 1).unwrap().sum_all().unwrap().backward().unwrap();
    let g = g.get(mask.as_tensor()).expect("the mask prompt of the last prompt gets a gradient");
    assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}
