//! `flmm import` on a miniature released-format head written by torch (`tools/fixtures/flmm_checkpoint.py`):
//! every tensor arrives unchanged, unknown keys are reported and skipped, the nested `state_dict` layout
//! works, the result loads into the U-Net, and a head that does not fit the backbone is refused with the
//! offending keys named and nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn import(checkpoint: &str, shape: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flmm"))
        .arg("import")
        .arg(fixtures().join("import").join(checkpoint))
        .args(shape)
        .args(["--unet-base-channels", "4", "--sam-dim", "16", "--sam-mlp-dim", "32", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

const SHAPE: [&str; 6] = ["--layers", "2", "--heads", "4", "--hidden", "64"];

fn load(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn released_layout_imports_with_equal_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = load(&fixtures().join("import/expected.safetensors"));
    let model = fixtures().join("llava/llava15");
    let model_args = ["--model", model.to_str().unwrap()];
    for (checkpoint, shape) in [("tiny_flmm.pth", &SHAPE[..]), ("tiny_flmm_nested.pth", &SHAPE[..]), ("tiny_flmm.pth", &model_args[..])] {
        let out = tmp.path().join(format!("{checkpoint}.{}.safetensors", shape.len()));
        let run = import(checkpoint, shape, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{checkpoint}: {stderr}");
        assert!(stderr.contains("lmm.rotary_emb.inv_freq"), "unknown key reported: {stderr}");
        let got = load(&out);
        assert_eq!(got.len(), expected.len() - 1, "all but the unknown key");
        for (key, value) in &got {
            let want = expected[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(value.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "{key}");
        }
        let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
        assert_eq!(sidecar["unknown_keys"], serde_json::json!(["lmm.rotary_emb.inv_freq"]));
        assert_eq!(sidecar["shape"]["attention_channels"], 8);
        let config = flmm_head::UNetConfig { in_channels: 8, base_channels: 4, ..Default::default() };
        let head = flmm_head::UNetHead::new(config, 0, &candle_core::Device::Cpu).unwrap();
        head.load(&out).unwrap();
    }
}

#[test]
fn a_head_for_another_backbone_is_refused_naming_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("head.safetensors");
    let run = import("tiny_flmm.pth", &["--layers", "3", "--heads", "4", "--hidden", "64"], &out);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("text_layer_weights has shape [2], expected [3]"), "{err}");
    assert!(err.contains("mask_head.encoder.0.0.convs.0.conv.weight has shape [4, 8, 3, 3], expected [4, 12, 3, 3]"), "{err}");
    assert!(!out.exists() && !out.with_extension("json").exists());
    let run = import("../sam/tiny_sam_legacy.pth", &SHAPE, &out);
    assert!(String::from_utf8_lossy(&run.stderr).contains("_use_new_zipfile_serialization=True"));
    let run = Command::new(env!("CARGO_BIN_EXE_flmm")).args(["import", "x.pth"]).output().unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("--model <dir>"));
}
