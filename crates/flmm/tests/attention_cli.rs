//! `flmm attention` and `flmm inspect-model` on the tiny LLaVA fixtures: outputs have the documented
//! shapes, and bad input (phrase not in the text, empty phrase, corrupt / huge image, a model of another
//! family) fails with a clear message and writes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn flmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flmm"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava")
}

const TEXT: &str = "A brown dog is sitting on the green grass next to two red balls";

fn attention(model: &Path, image: &Path, phrases: &[&str], out: &Path) -> Output {
    let mut cmd = flmm();
    cmd.arg("attention").arg("--model").arg(model).arg("--image").arg(image).args(["--text", TEXT]).arg("--out").arg(out);
    for p in phrases {
        cmd.args(["--phrase", p]);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn attention_writes_stacks_hidden_states_json_and_heatmaps() {
    let tmp = tempfile::tempdir().unwrap();
    for (model, channels, map) in [("llava15", 8, [7, 7]), ("llava_next", 16, [7, 17])] {
        let out = tmp.path().join(model);
        let run = attention(&fixtures().join(model), &fixtures().join("input.png"), &["brown dog", "two red balls"], &out);
        assert!(run.status.success(), "{}", stderr(&run));
        let tensors = candle_core::safetensors::load(out.join("attention.safetensors"), &candle_core::Device::Cpu).unwrap();
        assert_eq!(tensors["phrase_0.attention"].dims(), [channels, map[0], map[1]]);
        assert_eq!(tensors["phrase_1.hidden"].dims(), [4, 2, 64], "4 tokens (▁two ▁red ▁ball s) × 2 layers × d 64");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("attention.json")).unwrap()).unwrap();
        assert_eq!(json["channels"], channels);
        assert_eq!(json["phrases"][0]["tokens"], serde_json::json!(["▁brown", "▁dog"]));
        let heat = image::open(out.join("phrase_1.png")).unwrap();
        assert_eq!((heat.width(), heat.height()), (155, 64), "heatmap has the photo's size");
    }
}

#[test]
fn inspect_model_reports_the_head_channels() {
    let out = flmm().arg("inspect-model").arg(fixtures().join("llava_next")).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["family"], "LLaVA-NeXT");
    assert_eq!(json["head_in_channels"], 16);
    assert_eq!((json["layers"].as_u64(), json["heads"].as_u64()), (Some(2), Some(4)));
    assert_eq!(json["sliding_window"], 172);
}

/// A PNG that declares `w × h` RGB pixels but carries no pixel data (IHDR, empty IDAT, IEND).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut header = w.to_be_bytes().to_vec();
    header.extend_from_slice(&h.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    for (kind, data) in [(b"IHDR", header.as_slice()), (b"IDAT", &[]), (b"IEND", &[])] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
    }
    png
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures().join("llava15");
    let photo = fixtures().join("input.png");
    let huge = tmp.path().join("huge.png");
    std::fs::write(&huge, png_header_only(20_000, 20_000)).unwrap();
    let corrupt = tmp.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xFF\xD8\xFF\xE0 definitely not a jpeg").unwrap();
    let other_family = tmp.path().join("qwen");
    std::fs::create_dir(&other_family).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other_family.join(entry.file_name())).unwrap();
    }
    let config = other_family.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("LlavaForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration");
    std::fs::write(&config, text).unwrap();

    let cases: [(&Path, &Path, &[&str], &[&str]); 5] = [
        (&model, &photo, &["purple cow"], &["\"purple cow\" is not in the text"]),
        (&model, &photo, &["  "], &["phrase 0 is empty"]),
        (&model, &huge, &["brown dog"], &["huge.png", "20000x20000"]),
        (&model, &corrupt, &["brown dog"], &["corrupt.jpg"]),
        (&other_family, &photo, &["brown dog"], &["Qwen2_5_VLForConditionalGeneration", "not supported"]),
    ];
    for (i, (model, image, phrases, needles)) in cases.into_iter().enumerate() {
        let out_dir = tmp.path().join(format!("out{i}"));
        let run = attention(model, image, phrases, &out_dir);
        let err = stderr(&run);
        assert!(!run.status.success(), "case {i} should fail");
        assert!(!err.contains("panicked"), "case {i} panicked: {err}");
        for needle in needles {
            assert!(err.contains(needle), "case {i}: {err:?} should mention {needle:?}");
        }
        assert!(!out_dir.exists(), "case {i} wrote output");
    }
}

#[test]
fn a_one_pixel_image_is_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one.png");
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10])).save(&one).unwrap();
    for model in ["llava15", "llava_next"] {
        let run = attention(&fixtures().join(model), &one, &["brown dog"], &tmp.path().join(model));
        assert!(run.status.success(), "{model}: {}", stderr(&run));
    }
}
