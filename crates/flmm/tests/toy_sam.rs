//! The toy SAM refiner: a few pretraining steps lower the loss and export a checkpoint that
//! `Sam::load_file` opens and predicts with (fast); and the real pretraining with its held-out IoUs
//! (`--ignored`, release build, minutes).

use std::time::Instant;

use candle_core::Device;
use flmm::toy::sam_pretrain::{pretrain_sam, PromptKind, SamPretrainOptions};
use flmm_head::sam::preprocess::preprocess;
use flmm_head::sam::prompt_encoder::Prompts;
use flmm_head::sam::Sam;

/// candle's element-wise thread pool spin-waits at every op's barrier; on a small, shared machine one
/// thread is several times faster for these small tensors (GEMMs keep rayon's threads; naming their
/// count spares candle a /proc/cpuinfo read per GEMM). Set before candle's first op.
fn single_threaded_elementwise_ops() {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}

fn losses(dir: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_few_steps_lower_the_loss_and_export_a_loadable_refiner() {
    single_threaded_elementwise_ops();
    let dir = tempfile::tempdir().unwrap();
    let opts = SamPretrainOptions {
        train_scenes: 3,
        eval_scenes: 1,
        epochs: 5,
        accumulate: 1,
        lr: 2e-3,
        out_dir: dir.path().to_path_buf(),
        show_progress: false,
        ..Default::default()
    };
    let started = Instant::now();
    let report = pretrain_sam(&opts).unwrap();
    eprintln!("{} steps in {:.1}s, {report:?}", report.train.steps, started.elapsed().as_secs_f64());
    let l = losses(dir.path());
    assert_eq!(l.len(), 15);
    let (first, last) = (l[..3].iter().sum::<f64>(), l[12..].iter().sum::<f64>());
    assert!(last < first, "loss of the first epoch {first:.3}, of the last {last:.3}: {l:?}");
    assert!(report.file_bytes < 3 << 20, "f16 refiner of {} bytes", report.file_bytes);
    let eval = report.eval.unwrap();
    assert_eq!(eval.per_kind.len(), 3);
    assert!(PromptKind::ALL.iter().all(|&k| (0.0..=1.0).contains(&eval.iou(k))));

    let sam = Sam::load_file(&report.sam_path).unwrap();
    assert_eq!(sam.image_encoder.variant(), "vit(64)");
    let scene = flmm_data::toy::generate(5, 0, &flmm_data::toy::ToyConfig::default());
    let (x, geometry) = preprocess(&flmm_data::toy::render(&scene), sam.image_encoder.input_size(), &Device::Cpu).unwrap();
    let embedding = sam.image_encoder.forward(&x).unwrap();
    assert_eq!(embedding.dims(), [1, 64, 32, 32]);
    let prompts = Prompts { bbox: Some(geometry.map_box([10.0, 10.0, 60.0, 50.0])), ..Default::default() };
    let pred = sam.predict(&embedding, &geometry, &prompts, None, false).unwrap();
    assert_eq!(pred.masks.dims(), [1, 1, 128, 128]);
    assert_eq!(pred.low_res.dims(), [1, 1, 128, 128]);
    assert_eq!(pred.iou.dims(), [1, 1]);
}

/// The real pretraining: `cargo test --release -p flmm --test toy_sam -- --ignored --nocapture`.
/// `FLMM_TOY_SAM_DIR` keeps the run directory (default: a temporary one).
#[test]
#[ignore]
fn pretrain_the_toy_refiner() {
    single_threaded_elementwise_ops();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = std::env::var_os("FLMM_TOY_SAM_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let opts = SamPretrainOptions { out_dir: out_dir.clone(), show_progress: true, ..Default::default() };
    let report = pretrain_sam(&opts).unwrap();
    let l = losses(&out_dir);
    let tenth = (l.len() / 10).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let curve: Vec<String> = l.chunks(tenth).map(|c| format!("{:.3}", mean(c))).collect();
    println!("options: {opts:?}");
    println!("train: {} steps in {:.0}s; loss by tenths of the run: {}", report.train.steps, report.train.seconds, curve.join(" → "));
    println!("refiner: {} parameters, {} bytes (f16) at {}", report.parameters, report.file_bytes, report.sam_path.display());
    let eval = report.eval.unwrap();
    println!("held out: {} objects in {} scenes ({:.0}s)", eval.objects, eval.scenes, eval.seconds);
    for k in &eval.per_kind {
        println!("  mean IoU {:>8}: {:.4}", k.kind.name(), k.mean_iou);
    }
}
