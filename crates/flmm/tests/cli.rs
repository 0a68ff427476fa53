//! The `flmm` binary: a SIGKILLed training run resumes to the same weights; plot; unimplemented
//! commands say so and fail.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
seed = 3
[head]
in_channels = 8
base_channels = 16
upsample_input = 32
[data]
kind = "blobs"
samples = 16
channels = 8
grid = 16
mask_size = 32
[optim]
lr = 1e-3
epochs = 8
checkpoint_every = 16
"#;

fn flmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flmm"))
}

fn head_tensors(dir: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(dir.join("head.safetensors"), &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn killed_training_resumes_to_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("blobs.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let full = tmp.path().join("full");
    let status = flmm().args(["train", config.to_str().unwrap(), "--quiet", "--out", full.to_str().unwrap()]).status().unwrap();
    assert!(status.success());

    let killed = tmp.path().join("killed");
    let mut child = flmm().args(["train", config.to_str().unwrap(), "--quiet", "--out", killed.to_str().unwrap()]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !killed.join("checkpoints/latest").exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!killed.join("head.safetensors").exists(), "the run finished before it could be killed");

    let status =
        flmm().args(["train", config.to_str().unwrap(), "--quiet", "--resume", "--out", killed.to_str().unwrap()]).status().unwrap();
    assert!(status.success());
    let (a, b) = (head_tensors(&full), head_tensors(&killed));
    assert!(a.keys().all(|k| k.starts_with("mask_head.")), "head keys use the official prefix");
    assert_eq!(a, b, "resumed run ended with different weights");

    let png = tmp.path().join("loss.png");
    let out = flmm().args(["plot", killed.join("metrics.jsonl").to_str().unwrap(), "--out", png.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(image::open(&png).unwrap().width(), 800);
}

#[test]
fn bad_config_and_unimplemented_commands_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "[optim]\nlearning_rate = 1\n").unwrap();
    let out = flmm().args(["train", config.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("learning_rate") && err.contains("bad.toml"), "{err}");

    let out = flmm().args(["serve"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented yet"));
}
