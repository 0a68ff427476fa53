//! `flmm ground` through the whole pipeline on fixtures: the tiny LLaVA-1.5 backbone, the miniature
//! released-format head (imported key names) and a matching tiny SAM checkpoint. Random weights, so the
//! masks mean nothing; the test checks the outputs' shapes and consistency and the error paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn ground(extra: &[&str], out: &Path) -> Output {
    ground_on("llava15", extra, out)
}

fn ground_on(model: &str, extra: &[&str], out: &Path) -> Output {
    let f = fixtures();
    Command::new(env!("CARGO_BIN_EXE_flmm"))
        .arg("ground")
        .arg("--model")
        .arg(f.join("llava").join(model))
        .arg("--head")
        .arg(f.join("import/expected.safetensors"))
        .arg("--sam")
        .arg(f.join("sam/tiny_sam16.pth"))
        .arg("--image")
        .arg(f.join("llava/input.png"))
        .args(["--text", "A brown dog is sitting on the green grass"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn ground_writes_masks_overlay_json_and_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g");
    let run = ground(&["--phrase", "brown dog", "--phrase", "the green grass", "--save-logits"], &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    let phrases = json["phrases"].as_array().unwrap();
    assert_eq!(phrases.len(), 2);
    assert_eq!(phrases[1]["phrase"], "the green grass");
    assert_eq!(phrases[0]["rle"]["size"], serde_json::json!([64, 155]));
    for (k, p) in phrases.iter().enumerate() {
        let mask = image::open(out.join(format!("mask_{k}.png"))).unwrap().to_luma8();
        assert_eq!(mask.dimensions(), (155, 64), "masks at the photo's size");
        let white = mask.pixels().filter(|px| px[0] == 255).count() as u64;
        assert_eq!(p["area"].as_u64().unwrap(), white, "area matches the PNG");
        let score = p["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(p["bbox"].is_null(), white == 0);
    }
    let logits = candle_core::safetensors::load(out.join("logits.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(logits["refined"].dims(), [2, 64, 155]);
    // LLaVA-1.5: the 64×64 U-Net output is cropped to the image's rows of the padded square (23 of 56 → 26 of 64).
    assert_eq!(logits["unet"].dims(), [2, 26, 64]);
}

#[test]
fn ground_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g");
    let run = ground(&["--phrase", "purple cow"], &out);
    assert!(String::from_utf8_lossy(&run.stderr).contains("\"purple cow\" is not in the text"));
    assert!(!out.exists());
    // Some but not all of --model/--head/--sam: neither an explicit model nor the embedded one.
    let partial = ["ground", "--image", "x.png", "--text", "a cat", "--model", "some/dir"];
    let run = Command::new(env!("CARGO_BIN_EXE_flmm")).args(partial).output().unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("give all of --model, --head and --sam, or none of them"));
    // The embedded model names a missing image.
    let cache = tmp.path().join("cache");
    let run = Command::new(env!("CARGO_BIN_EXE_flmm"))
        .args(["ground", "--image", "x.png", "--text", "a cat", "--out", out.to_str().unwrap()])
        .env("FLMM_CACHE", &cache)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("image file not found: x.png"));
    assert!(!out.exists());
    // A head trained for another backbone (wrong U-Net channels) is refused by name.
    let run = ground_on("llava_next", &["--phrase", "brown dog"], &out);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("8 attention channels") && err.contains("16"), "{err}");
}
