//! Parity with transformers 4.39.1 (the version F-LMM used) on tiny random-weight LLaVA-1.5 (LLaMA) and
//! LLaVA-NeXT (Mistral with a sliding window, sharded weights) models. Fixtures: `tools/fixtures/llava_parity.py`
//! → `tests/fixtures/llava/` (see its README and NOTES.md).
//!
//! Tolerance: 1e-4 relative to the largest magnitude of each reference tensor, in f32. Both sides are
//! f32; the differences come from summation order in matmuls (measured below 1e-5).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use flmm_lmm::capture::{Capture, Merge};
use flmm_lmm::config::LlavaConfig;
use flmm_lmm::features::{attention_maps, split_coarse_fine};
use flmm_lmm::generate::GenerateOptions;
use flmm_lmm::llava::{ImageLayout, LlavaModel, VisionInput};
use flmm_lmm::model_dir::ModelDir;
use flmm_lmm::prompt::{tokenize_segments, Segment, Template};
use flmm_lmm::tokenizer::TextTokenizer;

fn fixture_dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava").join(model)
}

struct Fixture {
    model: LlavaModel,
    tokenizer: TextTokenizer,
    reference: std::collections::HashMap<String, Tensor>,
    json: serde_json::Value,
}

fn load(model: &str) -> Fixture {
    let dir = ModelDir::open(&fixture_dir(model)).unwrap();
    let config = LlavaConfig::from_file(&dir.config).unwrap();
    let llava = LlavaModel::load(&dir, &config, DType::F32, &Device::Cpu).unwrap();
    let tokenizer = TextTokenizer::from_file(&dir.tokenizer).unwrap();
    let reference = candle_core::safetensors::load(fixture_dir(model).join("reference.safetensors"), &Device::Cpu).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir(model).join("reference.json")).unwrap()).unwrap();
    Fixture { model: llava, tokenizer, reference, json }
}

fn ids(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err / scale < 1e-4, "{name}: max abs error {err:e} vs scale {scale:e}");
}

fn segments(json: &serde_json::Value) -> Vec<Segment> {
    json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Segment { text: s["utterance"].as_str().unwrap().into(), phrase: s["phrase"].as_u64().map(|k| k as usize) })
        .collect()
}

fn vision_input(f: &Fixture) -> VisionInput {
    let meta = &f.json["processor_meta"];
    let original = (meta["ori_shape"]["height"].as_u64().unwrap() as usize, meta["ori_shape"]["width"].as_u64().unwrap() as usize);
    let tiles = meta.get("grid_shape").map(|g| (g["height"].as_u64().unwrap() as usize, g["width"].as_u64().unwrap() as usize));
    VisionInput { pixel_values: f.reference["pixel_values"].clone(), original, tiles }
}

fn check_model(model: &str, template: Template) {
    let f = load(model);
    let prompt = f.json["prompt"].as_str().unwrap();
    let text = tokenize_segments(&f.tokenizer, template, prompt, &segments(&f.json)).unwrap();
    assert_eq!(text.input_ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), ids(&f.reference["input_ids"]), "input ids");

    let expanded = f.model.expand(&text, &vision_input(&f)).unwrap();
    assert_eq!(expanded.mask_ids.iter().map(|&m| m as i64).collect::<Vec<_>>(), ids(&f.reference["mask_ids_expanded"]));
    assert_eq!(expanded.image_positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), ids(&f.reference["image_positions"]));
    let first = expanded.image_positions[0];
    let n_img = expanded.image_positions.len();
    assert_close("vision_features", &expanded.embeds.narrow(0, first, n_img).unwrap(), &f.reference["vision_features"]);

    // Every hidden state of every position, and logits.
    let t = expanded.embeds.dim(0).unwrap();
    let out = f
        .model
        .decoder()
        .forward(
            &expanded.embeds,
            &mut Default::default(),
            flmm_lmm::decoder::ForwardRequest {
                hidden_positions: (0..t).collect(),
                logit_positions: (0..t).collect(),
                capture: None,
            },
        )
        .unwrap();
    assert_close("hidden_states", &out.hidden.unwrap(), &f.reference["hidden_states"]);
    assert_close("logits", &out.logits.unwrap(), &f.reference["logits"]);

    // Raw rows: each query its own group, no merge; compare with output.attentions' image columns.
    let queries: Vec<usize> = ids(&f.reference["query_positions"]).iter().map(|&q| q as usize).collect();
    let rows_ref = f.reference["attn_rows"].clone(); // [L, H, Q, T]
    let image_idx = Tensor::from_vec(expanded.image_positions.iter().map(|&p| p as u32).collect::<Vec<_>>(), n_img, &Device::Cpu).unwrap();
    let rows_ref = rows_ref.index_select(&image_idx, 3).unwrap(); // [L, H, Q, K]
    let (l, h, q, k) = rows_ref.dims4().unwrap();
    let want = rows_ref.permute((2, 0, 1, 3)).unwrap().reshape((q, l * h, k)).unwrap();
    let single = flmm_lmm::llava::Expanded {
        mask_ids: (0..t).map(|p| queries.iter().position(|&x| x == p).map_or(-1, |i| i as i32)).collect(),
        ..expanded.clone()
    };
    let got = f.model.capture(&single, &Capture::default()).unwrap();
    assert_close("attention rows", &got.rows, &want);

    // Merged priors as F-LMM computes them.
    let captured = f.model.capture(&expanded, &Capture::default()).unwrap();
    let maps = attention_maps(&captured.rows, expanded.layout).unwrap();
    assert_close("priors_mean", &maps, &f.reference["priors_mean"]);
    match expanded.layout {
        ImageLayout::Grid { .. } => {
            let max = f.model.capture(&expanded, &Capture { merge: Merge::Max, ..Default::default() }).unwrap();
            assert_close("priors_max", &attention_maps(&max.rows, expanded.layout).unwrap(), &f.reference["priors_max"]);
        }
        ImageLayout::CoarseFine { coarse, fine_h, fine_w } => {
            assert_eq!(vec![fine_h as i64, fine_w as i64], ids(&f.reference["image_feature_shape"]));
            let parts = split_coarse_fine(&captured.rows, coarse, fine_h, fine_w).unwrap();
            assert_close("coarse_mean", &parts.coarse, &f.reference["coarse_mean"]);
            assert_close("fine_mean", &parts.fine, &f.reference["fine_mean"]);
        }
    }
    // Phrase hidden states: layers 1..L of each phrase token.
    let hidden_ref = &f.reference["hidden_states"];
    for (k, group) in captured.groups.iter().enumerate() {
        let idx = Tensor::from_vec(group.iter().map(|&p| p as u32).collect::<Vec<_>>(), group.len(), &Device::Cpu).unwrap();
        let layers = hidden_ref.dim(0).unwrap() - 1;
        let want = hidden_ref.narrow(0, 1, layers).unwrap().index_select(&idx, 1).unwrap().transpose(0, 1).unwrap();
        assert_close(&format!("phrase {k} hidden"), &captured.phrase_hidden[k], &want);
    }

    // Greedy generation from the prompt alone.
    let gen_text = tokenize_segments(&f.tokenizer, template, prompt, &[]).unwrap();
    assert_eq!(gen_text.input_ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), ids(&f.reference["generate_prompt_ids"]));
    let gen_prompt = f.model.expand(&gen_text, &vision_input(&f)).unwrap();
    let want = ids(&f.reference["generated_ids"]);
    let opts = GenerateOptions { max_new_tokens: want.len(), eos_token_id: Some(2), capture: Capture::default() };
    let tokens = f.model.generate(&gen_prompt, &opts).unwrap();
    assert_eq!(tokens.iter().map(|t| t.id as i64).collect::<Vec<_>>(), want, "generated tokens");
    let channels = f.model.config().text.num_hidden_layers * f.model.config().text.num_attention_heads;
    assert_eq!(tokens[0].attention.dims(), [channels, n_img]);
    let sums = tokens[0].attention.sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(sums.iter().all(|&s| s > 0.0 && s <= 1.0 + 1e-5), "image attention mass of a generated token: {sums:?}");
}

#[test]
fn llava15_matches_transformers() {
    check_model("llava15", Template::Vicuna);
}

#[test]
fn llava_next_mistral_matches_transformers() {
    check_model("llava_next", Template::Mistral);
}

/// End to end from the PNG file: loader → processor → prompt from text + phrases → capture → F-LMM priors.
fn check_end_to_end(model: &str) {
    let root = fixture_dir(model);
    let backbone = flmm_lmm::backbone::Backbone::open(&root, DType::F32, &Device::Cpu).unwrap();
    let image = flmm_data::image_io::load_rgb_image(root.join("../input.png")).unwrap();
    let phrases: Vec<String> = ["A brown dog", "the green grass", "two red balls"].map(String::from).to_vec();
    let prepared = backbone.prepare(&image, "A brown dog is sitting on the green grass next to two red balls", &phrases).unwrap();
    let reference = candle_core::safetensors::load(root.join("reference.safetensors"), &Device::Cpu).unwrap();
    assert_close("pixel_values from the PNG", &prepared.image.pixel_values, &reference["pixel_values"]);
    let features = backbone.features(&prepared, &Capture::default()).unwrap();
    assert_close("priors from the PNG", &features.attention, &reference["priors_mean"]);
    assert_eq!(features.phrase_hidden.len(), 3);
}

#[test]
fn llava15_end_to_end_from_png() {
    check_end_to_end("llava15");
}

#[test]
fn llava_next_end_to_end_from_png() {
    check_end_to_end("llava_next");
}
