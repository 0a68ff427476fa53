//! The U-Net trains on a fixed synthetic set, and an interrupted run resumes bit-exactly.

use candle_core::Device;
use flmm::train::config::{ComputeDType, DataConfig};
use flmm::train::task::UNetTask;
use flmm::train::{train, TrainConfig, TrainOptions};
use flmm_data::blobs::{generate, BlobConfig};
use flmm_head::{UNetConfig, UNetHead};
use std::collections::HashMap;
use std::path::Path;

/// 64 blob stacks (16 channels, 16×16 grid) → 32×32 disk masks; a narrower U-Net (base 16 instead of
/// 64) with the same structure keeps the test fast on 2 cores.
fn config(epochs: u64) -> TrainConfig {
    let data = BlobConfig { samples: 64, channels: 16, grid: 16, mask_size: 32, seed: 1, ..Default::default() };
    let mut cfg = TrainConfig {
        seed: 0,
        head: UNetConfig { in_channels: 16, base_channels: 16, upsample_input: Some(32), ..Default::default() },
        data: DataConfig::Blobs(data),
        ..Default::default()
    };
    cfg.optim.lr = 1e-3;
    cfg.optim.epochs = epochs;
    cfg.optim.checkpoint_every = 64;
    cfg
}

fn task(cfg: &TrainConfig) -> UNetTask {
    let DataConfig::Blobs(data) = &cfg.data else { panic!("the default config uses blobs") };
    UNetTask {
        head: UNetHead::new(cfg.head.clone(), cfg.seed, &Device::Cpu).unwrap(),
        samples: generate(data).unwrap(),
        data_name: "synthetic-blobs".into(),
    }
}

fn options(dir: &Path) -> TrainOptions {
    TrainOptions { out_dir: dir.to_path_buf(), resume: false, stop_after_step: None, show_progress: false }
}

fn weights(t: &UNetTask) -> HashMap<String, Vec<f32>> {
    t.head.params().iter().map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())).collect()
}

fn mean_loss(records: &[serde_json::Value]) -> f64 {
    records.iter().map(|r| r["loss"].as_f64().unwrap()).sum::<f64>() / records.len() as f64
}

#[test]
fn unet_learns_blobs_and_an_interrupted_run_resumes_bit_exactly() {
    let cfg = config(10);
    let tmp = tempfile::tempdir().unwrap();

    let full_dir = tmp.path().join("full");
    let full = task(&cfg);
    let summary = train(&full, &cfg, &options(&full_dir)).unwrap();
    assert_eq!(summary.steps, 640);
    let log = flmm::train::metrics_log::read(&full_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log.len(), 640);
    let (first_epoch, last_epoch) = (mean_loss(&log[..64]), mean_loss(&log[576..]));
    let counts = full.evaluate().unwrap();
    let miou = counts.iter().map(|c| c.iou()).sum::<f64>() / counts.len() as f64;
    println!("first-epoch loss {first_epoch:.4}, last-epoch loss {last_epoch:.4}, mIoU {miou:.4}");
    assert!(first_epoch / last_epoch >= 5.0, "loss fell only {first_epoch} -> {last_epoch}");
    assert!(miou >= 0.9, "training-set mIoU {miou}");
    assert!(full_dir.join("head.safetensors").exists() && full_dir.join("head.json").exists());

    // Interrupted halfway (after the step-320 checkpoint), then resumed in a fresh process state.
    let split_dir = tmp.path().join("split");
    let first_half = task(&cfg);
    let stopped = train(&first_half, &cfg, &TrainOptions { stop_after_step: Some(330), ..options(&split_dir) }).unwrap();
    assert_eq!(stopped.steps, 330);
    assert!(!split_dir.join("head.safetensors").exists(), "an unfinished run must not export a head");
    let resumed = task(&cfg);
    let summary = train(&resumed, &cfg, &TrainOptions { resume: true, ..options(&split_dir) }).unwrap();
    assert_eq!(summary.steps, 640);
    assert_eq!(weights(&resumed), weights(&full), "resumed weights differ from the uninterrupted run");
    let resumed_log = flmm::train::metrics_log::read(&split_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = resumed_log.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=640).collect::<Vec<_>>(), "the log must hold each step once");
}

#[test]
fn bf16_compute_trains() {
    let mut cfg = config(2);
    cfg.optim.dtype = ComputeDType::Bf16;
    let DataConfig::Blobs(d) = &mut cfg.data else { panic!("the default config uses blobs") };
    d.samples = 16;
    let tmp = tempfile::tempdir().unwrap();
    let t = task(&cfg);
    train(&t, &cfg, &options(tmp.path())).unwrap();
    let log = flmm::train::metrics_log::read(&tmp.path().join("metrics.jsonl")).unwrap();
    assert_eq!(log.len(), 32);
    assert!(mean_loss(&log[24..]) < mean_loss(&log[..8]), "bf16 training did not reduce the loss");
}
