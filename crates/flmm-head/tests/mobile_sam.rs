//! A MobileSAM-layout checkpoint (TinyViT `image_encoder.*` keys + SAM prompt encoder and mask decoder)
//! is recognised from its keys and runs end to end: the encoder equals the TinyViT fixture, and a box
//! prompt yields masks at the original size.

mod support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use flmm_head::sam::preprocess::SamGeometry;
use flmm_head::sam::prompt_encoder::Prompts;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};

fn generated(keys: impl Iterator<Item = (String, Vec<usize>)>, into: &mut HashMap<String, Tensor>) {
    for (key, shape) in keys {
        if let Some(t) = support::sam_fixture_weight(&key, &shape) {
            into.insert(key, t);
        }
    }
}

fn read_json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(support::fixtures_dir().join(path)).unwrap()).unwrap()
}

fn shape(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

#[test]
fn mobile_sam_layout_is_detected_and_runs() {
    let mut map = HashMap::new();
    let tiny = read_json("tiny_vit/reference.json");
    generated(tiny["keys"].as_array().unwrap().iter().map(|k| (k["key"].as_str().unwrap().to_string(), shape(&k["shape"]))), &mut map);
    let sam_keys = read_json("sam/sam_parity.json");
    generated(
        sam_keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k[0].as_str().unwrap().to_string(), shape(&k[1])))
            .filter(|(k, _)| !k.starts_with("image_encoder.")),
        &mut map,
    );
    let weights = SamWeights::from_map(map, std::path::Path::new("mobile_sam_like.pt"));
    // Shapes do not reveal the input side: detection assumes MobileSAM's 1024; this fixture is 256.
    let detected = Sam::from_weights(&weights).unwrap();
    assert_eq!((detected.image_encoder.variant().as_str(), detected.image_encoder.input_size()), ("tiny_vit", 1024));
    let mut encoder = EncoderConfig::detect(&weights, "image_encoder").unwrap();
    if let EncoderConfig::TinyVit(c) = &mut encoder {
        c.img_size = 256;
    }
    let sam = Sam::build(&weights, &encoder, MaskDecoderConfig::detect(&weights, "mask_decoder").unwrap()).unwrap();
    assert_eq!(sam.image_encoder.input_size(), 256);
    assert!(sam.model_id().starts_with("tiny_vit-"));

    let reference = candle_core::safetensors::load(support::fixtures_dir().join("tiny_vit/reference.safetensors"), &Device::Cpu).unwrap();
    let input = reference["input"].to_dtype(candle_core::DType::F32).unwrap();
    let embedding = sam.image_encoder.forward(&input).unwrap();
    let err = support::relative_max_error(&embedding, &reference["output"]);
    assert!(err < 1e-4, "TinyViT through Sam: {err}");

    let geometry = SamGeometry::new((118, 180), 256).unwrap();
    let prompts = Prompts { bbox: Some(geometry.map_box([20.0, 10.0, 120.0, 90.0])), ..Default::default() };
    let pred = sam.predict(&embedding, &geometry, &prompts, None, false).unwrap();
    assert_eq!(pred.masks.dims(), [1, 1, 118, 180]);
}
