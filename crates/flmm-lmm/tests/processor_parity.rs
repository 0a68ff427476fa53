//! Parity of the Rust LLaVA-1.5 / LLaVA-NeXT image processors with the Python references in
//! `tools/fixtures/image_processors.py` (spec §5.3; cross-checked there against transformers 4.39.1).
//! Fixture: `tests/fixtures/processors/` from `tools/fixtures/image_processors_fixture.py`.
//!
//! Asserted per case: the geometry (original size, resized `image_shape`, `padded_shape`, padding
//! before/after, and for NeXT the best resolution and tile grid) is **equal**; pixel values agree within
//! **1e-6 absolute**. Why 1e-6: resizing is bit-exact with PIL and rescale/normalise repeat the same
//! f64→f32 / f32 operations as numpy, so the values are expected to be identical; |values| < 2.7, where an
//! f32 ulp is ≤ 2.4e-7, so 1e-6 only forgives last-bit differences, while a single uint8 level of
//! difference moves a value by ≥ 1/255/0.2758 ≈ 0.014.
//!
//! Small cases (S = 56) store full tensors. S = 336 cases store a strided sample of the values plus
//! f64 moments of every tile and channel (Σv, Σv², Σv·w with position weights), compared with a
//! relative tolerance of 1e-9 (+1e-6): any one-level pixel difference changes Σv by ≥ 0.014.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use flmm_data::image_io::load_rgb_image;
use flmm_lmm::processor::{process_llava15, process_llava_next, ImageGeometry, Processed, ProcessorConfig, SizeSpec};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/processors")
}

/// Build the config through the JSON parser, as a model directory would provide it.
fn config_for(case: &Value) -> ProcessorConfig {
    let size = case["size"].as_u64().unwrap();
    let mut cfg = serde_json::json!({
        "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size},
        "image_mean": case["image_mean"],
        "image_std": case["image_std"],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
    });
    if !case["image_grid_pinpoints"].is_null() {
        cfg["image_grid_pinpoints"] = case["image_grid_pinpoints"].clone();
    }
    ProcessorConfig::from_json_str(&cfg.to_string(), case["name"].as_str().unwrap()).expect("config")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_geometry(name: &str, out: &Processed, meta: &Value) {
    let expected: ImageGeometry = serde_json::from_value(meta.clone()).expect("meta → ImageGeometry");
    assert_eq!(out.geometry, expected, "{name}: geometry");
    if let Some(best) = meta.get("best_resolution") {
        let l = out.anyres.expect("NeXT layout");
        assert_eq!(
            [l.best_resolution.height, l.best_resolution.width],
            [best[0].as_u64().unwrap() as u32, best[1].as_u64().unwrap() as u32],
            "{name}"
        );
        assert_eq!(l.grid_rows as u64, meta["grid_shape"]["height"].as_u64().unwrap(), "{name}: grid rows");
        assert_eq!(l.grid_cols as u64, meta["grid_shape"]["width"].as_u64().unwrap(), "{name}: grid cols");
    } else {
        assert!(out.anyres.is_none(), "{name}");
    }
}

fn check_moments(name: &str, pv: &Tensor, expected: &Value) {
    let (n, c, s, _) = pv.dims4().unwrap();
    let v: Vec<f32> = pv.flatten_all().unwrap().to_vec1().unwrap();
    for t in 0..n {
        for ch in 0..c {
            let plane = &v[(t * c + ch) * s * s..(t * c + ch + 1) * s * s];
            let (mut s1, mut s2, mut s3) = (0f64, 0f64, 0f64);
            for (i, &x) in plane.iter().enumerate() {
                let x = x as f64;
                s1 += x;
                s2 += x * x;
                s3 += x * ((i % 997) + 1) as f64;
            }
            for (k, got) in [s1, s2, s3].into_iter().enumerate() {
                let want = expected[t][ch][k].as_f64().unwrap();
                let tol = 1e-9 * want.abs() + 1e-6;
                assert!((got - want).abs() <= tol, "{name}: tile {t} channel {ch} moment {k}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn processors_match_python_reference() {
    let dir = fixture_dir();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("processors.json")).expect("processors.json")).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("processors.safetensors"), &Device::Cpu).expect("load");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let img = load_rgb_image(dir.join(case["input"].as_str().unwrap())).expect("input png");
        let cfg = config_for(case);
        let out = match case["processor"].as_str().unwrap() {
            "llava15" => process_llava15(&img, &cfg),
            "llava_next" => process_llava_next(&img, &cfg),
            other => panic!("unknown processor {other}"),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> =
            case["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(out.pixel_values.dims(), shape.as_slice(), "{name}: shape");
        check_geometry(name, &out, &case["meta"]);

        if let Some(key) = case["pixel_values"].as_str() {
            let want: Vec<f32> = tensors[key].flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f32> = out.pixel_values.flatten_all().unwrap().to_vec1().unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(d <= 1e-6, "{name}: max |Δ| = {d}");
        } else {
            let sm = &case["samples"];
            let (off, stride) = (sm["offset"].as_u64().unwrap() as usize, sm["stride"].as_u64().unwrap() as usize);
            let s = shape[2];
            let idx: Vec<u32> = (off..s).step_by(stride).map(|i| i as u32).collect();
            let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
            let sampled = out.pixel_values.index_select(&idx, 2).unwrap().index_select(&idx, 3).unwrap();
            let want = &tensors[sm["tensor"].as_str().unwrap()];
            assert_eq!(sampled.dims(), want.dims(), "{name}: sample shape");
            let d = max_abs_diff(
                &sampled.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert!(d <= 1e-6, "{name}: sampled max |Δ| = {d}");
            check_moments(name, &out.pixel_values, &case["moments"]);
        }
    }
}

#[test]
fn fixture_preprocessor_configs_parse() {
    let dir = fixture_dir();
    let v15 = ProcessorConfig::from_file(dir.join("llava15_preprocessor_config.json")).unwrap();
    assert_eq!(v15.size, SizeSpec::ShortestEdge(336));
    assert_eq!(v15.image_grid_pinpoints, None);
    assert_eq!(v15, ProcessorConfig::clip(336));
    let next = ProcessorConfig::from_file(dir.join("llava_next_preprocessor_config.json")).unwrap();
    assert_eq!(next.image_grid_pinpoints, Some(vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]));
    let missing = ProcessorConfig::from_file(dir.join("no_such_config.json")).unwrap_err().to_string();
    assert!(missing.contains("no_such_config.json"), "{missing}");
}

#[test]
fn crop_to_unpadded_uses_processor_geometry() {
    // A tall image in LLaVA-1.5: padding left/right; a 64x64 U-Net map is cropped to the image columns.
    let img = image::RgbImage::from_pixel(120, 330, image::Rgb([10, 20, 30]));
    let out = process_llava15(&img, &ProcessorConfig::clip(336)).unwrap();
    // resized: (336, int(120*336/330) = 122); pad 214 -> 107 / 107
    assert_eq!((out.geometry.image_shape.height, out.geometry.image_shape.width), (336, 122));
    let map = Tensor::zeros((3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let cropped = out.geometry.crop_to_unpadded(&map).unwrap();
    // left = int(107*64/336) = 20, cols = int(122*64/336 + 0.5) = int(23.74) = 23
    assert_eq!(cropped.dims(), &[3, 64, 23]);
}
