//! The whole head (U-Net + text projection + SAM refiner) loads a released-format head file, projects
//! phrase hidden states as F-LMM does, round-trips through its own file, and passes gradients from the
//! refined masks to every trainable part.

mod support;

use candle_core::{DType, Device, Tensor};
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::preprocess::SamGeometry;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};
use flmm_head::{GroundingHead, UNetConfig};

/// A SAM whose width (16) matches the miniature released head of `tests/fixtures/import`.
fn sam16() -> Sam {
    let weights = SamWeights::synthetic(Box::new(|key: &str, shape: &[usize]| {
        let seed = key.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        flmm_nn::gradcheck::sample(shape, -0.2, 0.2, seed).unwrap().to_dtype(DType::F32).unwrap()
    }));
    let vit = VitConfig { img_size: 64, patch_size: 16, embed_dim: 16, depth: 1, heads: 2, global_blocks: vec![0], window: 0, out_chans: 16 };
    Sam::build(&weights, &EncoderConfig::Vit(vit), MaskDecoderConfig { dim: 16, mlp_dim: 32, ..Default::default() }).unwrap()
}

fn head() -> GroundingHead {
    let unet = UNetConfig { in_channels: 8, base_channels: 4, ..Default::default() };
    GroundingHead::new(unet, sam16(), 2, 64, 0, &Device::Cpu).unwrap()
}

fn released() -> std::path::PathBuf {
    support::fixtures_dir().join("import/expected.safetensors")
}

#[test]
fn released_head_loads_and_text_tokens_follow_the_spec() {
    let h = head();
    let unused = h.load(&released()).unwrap();
    assert_eq!(unused, ["lmm.rotary_emb.inv_freq"]);
    let file = candle_core::safetensors::load(released(), &Device::Cpu).unwrap();
    let hidden = flmm_nn::gradcheck::sample(&[3, 2, 64], -1.0, 1.0, 9).unwrap().to_dtype(DType::F32).unwrap();
    // text_layer_weights are ones → softmax is uniform → the mean over layers, then the linear layer.
    let mixed = hidden.mean(1).unwrap();
    let want = mixed.matmul(&file["text_proj.weight"].t().unwrap()).unwrap().broadcast_add(&file["text_proj.bias"]).unwrap();
    let got = h.text_tokens(&hidden).unwrap();
    assert!(support::relative_max_error(&got, &want) < 1e-6);
    assert!(h.text_tokens(&Tensor::zeros((1, 3, 64), DType::F32, &Device::Cpu).unwrap()).is_err(), "3 layers for 2 weights");
}

#[test]
fn save_then_load_round_trips() {
    let a = head();
    a.load(&released()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("head.safetensors");
    a.save(&path).unwrap();
    let b = head();
    assert!(b.load(&path).unwrap().is_empty());
    let (fa, fb) = (candle_core::safetensors::load(&path, &Device::Cpu).unwrap(), candle_core::safetensors::load(released(), &Device::Cpu).unwrap());
    for (k, v) in &fa {
        assert_eq!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), fb[k].flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{k}");
    }
}

#[test]
fn refined_masks_train_every_part() {
    let h = head();
    let attention = flmm_nn::gradcheck::sample(&[2, 8, 6, 6], 0.0, 1.0, 3).unwrap().to_dtype(DType::F32).unwrap();
    let logits = h.unet_logits(&attention).unwrap();
    assert_eq!(logits.dims(), [2, 64, 64]);
    let hidden: Vec<Tensor> = (0..2).map(|k| flmm_nn::gradcheck::sample(&[k + 1, 2, 64], -1.0, 1.0, 5 + k as u64).unwrap().to_dtype(DType::F32).unwrap()).collect();
    let tokens: Vec<Tensor> = hidden.iter().map(|x| h.text_tokens(x).unwrap()).collect();
    let geometry = SamGeometry::new((40, 56), 64).unwrap();
    let embedding = Tensor::randn(0f32, 1.0, (1, 16, 4, 4), &Device::Cpu).unwrap();
    let refined = h.refine(&embedding, &geometry, &logits, &tokens).unwrap();
    assert_eq!(refined.dims(), [2, 40, 56]);
    let grads = flmm_nn::act::sigmoid(&refined).unwrap().mean_all().unwrap().backward().unwrap();
    let reached = |store: &flmm_nn::params::ParamStore, name: &str| store.vars().iter().filter(|v| grads.get(v.as_tensor()).is_some()).count() > 0 || panic!("no gradient reaches {name}");
    assert!(reached(h.unet.params(), "the U-Net"));
    assert!(reached(&h.text, "text_proj / text_layer_weights"));
    assert!(reached(&h.sam.params, "SAM's decoder"));
    assert!(grads.get(h.text.get("text_layer_weights").unwrap().as_tensor()).is_some());
}
