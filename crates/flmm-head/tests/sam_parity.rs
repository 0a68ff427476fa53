//! Parity with the `segment-anything` package (1.0) on a tiny SAM (ViT: 2 blocks, width 64, one global
//! block, 7×7 windows that need padding; 256-px input; full-size prompt encoder and mask decoder) and a
//! non-square real photo: preprocessing, image embeddings, prompt embeddings, masks for a point, a box,
//! a mask, box + mask + 2 text tokens, multimask output, and F-LMM's refiner with its gradients.
//! Fixture: `tools/fixtures/sam_parity.py` → `tests/fixtures/sam/`; weights come from the shared
//! deterministic generator, so none are stored.
//!
//! Tolerance: 1e-4 relative to each reference tensor's largest magnitude, gradients included (f32 on both
//! sides; the differences are summation order — measured ≤ 5.4e-6 for masks, ≤ 1.1e-6 for gradients).

mod support;

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use flmm_head::sam::preprocess::{preprocess, SamGeometry};
use flmm_head::sam::prompt_encoder::{PointPrompt, Prompts};
use flmm_head::sam::refiner::{box_prompts, dense_prompts, refine};
use flmm_head::sam::{Sam, SamWeights};

struct Fixture {
    t: HashMap<String, Tensor>,
    json: serde_json::Value,
    sam: Sam,
}

fn fixture() -> Fixture {
    let dir = support::fixtures_dir().join("sam");
    let t = candle_core::safetensors::load(dir.join("sam_parity.safetensors"), &Device::Cpu).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sam_parity.json")).unwrap()).unwrap();
    let mut weights = HashMap::new();
    for entry in json["keys"].as_array().unwrap() {
        let key = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        if let Some(w) = support::sam_fixture_weight(key, &shape) {
            weights.insert(key.to_string(), w);
        }
    }
    let sam = Sam::from_weights(&SamWeights::from_map(weights, &dir)).unwrap();
    Fixture { t, json, sam }
}

fn close(name: &str, got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-12) as f64;
    let err = diff / scale;
    eprintln!("{name}: relative max error {err:.2e}");
    assert!(err < tol, "{name}: relative max error {err:e}");
}

fn geometry(f: &Fixture) -> SamGeometry {
    let hw = &f.json["image"]["original_hw"];
    SamGeometry::new((hw[0].as_u64().unwrap() as usize, hw[1].as_u64().unwrap() as usize), 256).unwrap()
}

#[test]
fn preprocessing_and_image_embeddings_match() {
    let f = fixture();
    assert_eq!(f.sam.image_encoder.variant(), "vit(64)");
    let image = flmm_data::image_io::load_rgb_image(support::fixtures_dir().join("sam/input.png")).unwrap();
    let (input, g) = preprocess(&image, 256, &Device::Cpu).unwrap();
    assert_eq!(g.resized, (168, 256));
    close("input", &input, &f.t["input"], 1e-6);
    close("image_embeddings", &f.sam.image_encoder.forward(&f.t["input"]).unwrap(), &f.t["image_embeddings"], 1e-4);
    close("dense_pe", &f.sam.prompt_encoder.dense_pe().unwrap(), &f.t["dense_pe"], 1e-4);
}

#[test]
fn prompt_cases_match() {
    let f = fixture();
    let g = geometry(&f);
    let emb = &f.t["image_embeddings"];
    let p = &f.json["prompts"];
    let xy = p["point_xy_original"].as_array().unwrap();
    let (x, y) = g.map_point(xy[0].as_f64().unwrap() as f32, xy[1].as_f64().unwrap() as f32);
    let point = vec![PointPrompt { x, y, label: 1 }];
    let b: Vec<f32> = p["box_xyxy_original"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let bbox = Some(g.map_box([b[0], b[1], b[2], b[3]]));
    let mask = Some(f.t["mask_prompt"].clone());
    let text = f.t["case_d.text"].clone();
    let cases: [(&str, Prompts, Option<&Tensor>, bool); 5] = [
        ("case_a", Prompts { points: point.clone(), ..Default::default() }, None, false),
        ("case_b", Prompts { bbox, ..Default::default() }, None, false),
        ("case_c", Prompts { mask: mask.clone(), ..Default::default() }, None, false),
        ("case_d", Prompts { bbox, mask, ..Default::default() }, Some(&text), false),
        ("case_e", Prompts { points: point, ..Default::default() }, None, true),
    ];
    for (name, prompts, extra, multimask) in cases {
        let (sparse, dense) = f.sam.prompt_encoder.forward(&prompts).unwrap();
        if let Some(want) = f.t.get(&format!("{name}.sparse")) {
            let sparse = match extra {
                Some(t) => Tensor::cat(&[&sparse, &t.unsqueeze(0).unwrap()], 1).unwrap(),
                None => sparse,
            };
            close(&format!("{name}.sparse"), &sparse, want, 1e-4);
        }
        if prompts.mask.is_some() {
            close(&format!("{name} dense"), &dense, &f.t["mask_dense"], 1e-4);
        }
        let pred = f.sam.predict(emb, &g, &prompts, extra, multimask).unwrap();
        close(&format!("{name}.low_res"), &pred.low_res, &f.t[&format!("{name}.low_res")], 1e-4);
        close(&format!("{name}.iou"), &pred.iou, &f.t[&format!("{name}.iou")], 1e-4);
        close(&format!("{name}.masks"), &pred.masks, &f.t[&format!("{name}.masks")], 1e-4);
    }
}

#[test]
fn flmm_refiner_and_its_gradients_match() {
    let f = fixture();
    let g = geometry(&f);
    let logits = Var::from_tensor(&f.t["refiner.unet_logits"]).unwrap();
    let texts: Vec<Var> = (0..2).map(|k| Var::from_tensor(&f.t[&format!("refiner.text_embeds.{k}")]).unwrap()).collect();
    let dense = dense_prompts(&f.sam, logits.as_tensor(), &g).unwrap();
    let boxes = box_prompts(logits.as_tensor(), &g).unwrap();
    for (k, b) in boxes.iter().enumerate() {
        close(&format!("refiner.{k}.dense_prompt"), &dense.narrow(0, k, 1).unwrap(), &f.t[&format!("refiner.{k}.dense_prompt")], 1e-4);
        let want = f.t[&format!("refiner.{k}.box")].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(b.to_vec(), want, "box {k}");
    }
    let text_tensors: Vec<Tensor> = texts.iter().map(|v| v.as_tensor().clone()).collect();
    let refined = refine(&f.sam, &f.t["image_embeddings"], &g, logits.as_tensor(), Some(&text_tensors)).unwrap();
    close("refiner.refined", &refined, &f.t["refiner.refined"], 1e-4);

    let loss = flmm_nn::act::sigmoid(&refined).unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    close("grad unet_logits", grads.get(logits.as_tensor()).unwrap(), &f.t["refiner.grad_unet_logits"], 1e-4);
    for (k, v) in texts.iter().enumerate() {
        close(&format!("grad text {k}"), grads.get(v.as_tensor()).unwrap(), &f.t[&format!("refiner.grad_text_embeds.{k}")], 1e-4);
    }
    let w = f.sam.params.get("mask_decoder.output_hypernetworks_mlps.0.layers.2.weight").unwrap();
    close("grad decoder weight", grads.get(w.as_tensor()).unwrap(), &f.t["refiner.grad_hyper0_layers2_weight"], 1e-4);
}
