//! Parity of [`flmm_data::resample::resize_rgb8`] with Pillow 13's `Image.resize((w, h), resample=F)`
//! (NEAREST, BILINEAR, BICUBIC; default arguments).
//!
//! The goal is **bit-exact** equality, not a tolerance: Hugging Face image processors resize with PIL
//! and feed its uint8 output to the model, so the Rust pipeline must reproduce those exact bytes for
//! the frozen backbone to see the pixels it was evaluated with.
//!
//! Fixture: `tests/fixtures/resample/` from `tools/fixtures/pil_resize.py` (two random sources and a
//! real photo crop; up/down scaling, odd and 1-pixel sizes, one-axis resizes, identity).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use flmm_data::image_io::load_rgb_image;
use flmm_data::resample::{resize_rgb8, Filter};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/resample")
}

#[test]
fn resize_matches_pil_bit_exactly() {
    let dir = fixture_dir();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("resample.json")).expect("resample.json"))
            .expect("valid json");
    let tensors = candle_core::safetensors::load(dir.join("resample.safetensors"), &Device::Cpu).expect("load");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() > 100, "fixture has {} cases", cases.len());

    let mut failures = Vec::new();
    for case in cases {
        let source = case["source"].as_str().unwrap();
        let filter = match case["filter"].as_str().unwrap() {
            "nearest" => Filter::Nearest,
            "bilinear" => Filter::Bilinear,
            "bicubic" => Filter::Bicubic,
            other => panic!("unknown filter {other}"),
        };
        let (w, h) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let key = case["tensor"].as_str().unwrap();
        let img = load_rgb_image(dir.join(source)).expect("source png");
        let expected: &Tensor = &tensors[key];
        assert_eq!(expected.dims(), &[h as usize, w as usize, 3], "{key}");
        let expected: Vec<u8> = expected.flatten_all().unwrap().to_vec1::<u8>().unwrap();

        let got = resize_rgb8(&img, w, h, filter);
        assert_eq!(got.dimensions(), (w, h), "{key}");
        let got = got.into_raw();
        let diffs = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        if diffs > 0 {
            let first = got.iter().zip(&expected).position(|(a, b)| a != b).unwrap();
            failures.push(format!(
                "{key}: {diffs} of {} bytes differ (first at byte {first}: got {}, PIL {})",
                got.len(),
                got[first],
                expected[first]
            ));
        }
    }
    assert!(failures.is_empty(), "resize differs from PIL:\n{}", failures.join("\n"));
}
