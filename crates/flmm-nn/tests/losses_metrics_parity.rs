//! Losses and metrics against tools/fixtures/losses_metrics.py, which evaluates mmdet's own
//! `CrossEntropyLoss`/`DiceLoss` (f32) and the F-LMM formulas in f64 (PNG average recall, RefCOCO
//! cIoU/mIoU). Tolerances: 1e-6 relative for f32 losses (summation order differs), 1e-9 for f64.

use candle_core::{DType, Device, Tensor};
use flmm_nn::loss::{bce_with_logits_mean, dice_loss};
use flmm_nn::metrics::{accuracy_and_aiou, binarize_logits, png_scores, MaskCounts, PngMaskResult, RefSegAccumulator};
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> (Value, Tensor, Tensor) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/losses");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("losses_metrics.json")).unwrap()).unwrap();
    let t = candle_core::safetensors::load(dir.join("losses_metrics.safetensors"), &Device::Cpu).unwrap();
    (json, t["logits"].clone(), t["targets"].clone())
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn bce_and_dice_match_mmdet() {
    let (json, logits, targets) = fixture();
    let l = &json["losses"];
    let n = logits.dim(0).unwrap();
    let bce32 = bce_with_logits_mean(&logits.flatten_all().unwrap(), &targets.flatten_all().unwrap()).unwrap().to_scalar::<f32>().unwrap();
    assert!(rel(bce32 as f64, l["bce_f32"].as_f64().unwrap()) < 1e-6, "bce f32 {bce32}");
    let dice32 = dice_loss(&logits.reshape((n, ())).unwrap(), &targets).unwrap().to_scalar::<f32>().unwrap();
    assert!(rel(dice32 as f64, l["dice_f32"].as_f64().unwrap()) < 1e-6, "dice f32 {dice32}");

    let (l64, t64) = (logits.to_dtype(DType::F64).unwrap(), targets.to_dtype(DType::F64).unwrap());
    let bce64 = bce_with_logits_mean(&l64, &t64).unwrap().to_scalar::<f64>().unwrap();
    assert!(rel(bce64, l["bce_f64"].as_f64().unwrap()) < 1e-9, "bce f64 {bce64}");
    let dice64 = dice_loss(&l64, &t64).unwrap().to_scalar::<f64>().unwrap();
    assert!(rel(dice64, l["dice_f64"].as_f64().unwrap()) < 1e-9, "dice f64 {dice64}");
}

#[test]
fn accuracy_and_aiou_match() {
    let (json, logits, targets) = fixture();
    let n = logits.dim(0).unwrap();
    let masks: Vec<MaskCounts> = (0..n)
        .map(|k| {
            let p: Vec<f32> = logits.get(k).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let t: Vec<f32> = targets.get(k).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            MaskCounts::new(&binarize_logits(&p), &t.iter().map(|v| *v > 0.5).collect::<Vec<_>>())
        })
        .collect();
    let (acc, aiou) = accuracy_and_aiou(&masks);
    let l = &json["losses"];
    assert!((acc - l["accuracy"].as_f64().unwrap()).abs() < 1e-12, "accuracy {acc}");
    assert!((aiou - l["aiou"].as_f64().unwrap()).abs() < 1e-12, "aiou {aiou}");
}

#[test]
fn png_average_recall_matches_reference() {
    let (json, _, _) = fixture();
    let p = &json["png"];
    let list = |k: &str| p[k].as_array().unwrap().clone();
    let results: Vec<PngMaskResult> = list("ious")
        .iter()
        .zip(list("plural"))
        .zip(list("isthing"))
        .map(|((iou, plural), isthing)| PngMaskResult {
            iou: iou.as_f64().unwrap(),
            pixel_accuracy: 1.0,
            plural: plural.as_bool().unwrap(),
            isthing: isthing.as_bool().unwrap(),
        })
        .collect();
    let s = png_scores(&results);
    let e = &p["expected"];
    for (ours, key) in [
        (s.ar_all, "all"),
        (s.ar_singular, "singular"),
        (s.ar_plural, "plural"),
        (s.ar_things, "things"),
        (s.ar_stuff, "stuff"),
        (s.acc_at_05, "acc_at_05"),
    ] {
        let expected = e[key].as_f64().unwrap();
        assert!((ours - expected).abs() < 1e-9, "{key}: {ours} vs {expected}");
    }
}

#[test]
fn refcoco_ciou_miou_match_reference() {
    let (json, _, _) = fixture();
    let r = &json["refcoco"];
    let mut acc = RefSegAccumulator::default();
    for pair in r["pairs"].as_array().unwrap() {
        let (i, u) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
        acc.add(&MaskCounts { intersection: i, union: u, correct: 0, pixels: u });
    }
    let s = acc.scores();
    assert!((s.ciou - r["ciou"].as_f64().unwrap()).abs() < 1e-9, "ciou {}", s.ciou);
    assert!((s.miou - r["miou"].as_f64().unwrap()).abs() < 1e-9, "miou {}", s.miou);
}
