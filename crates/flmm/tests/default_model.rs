//! The README's main command: `flmm ground` with no model arguments runs the embedded toy model on the
//! shipped example scenes and writes masks, overlays and JSON, and the masks are the named objects, for
//! every referring expression of the six examples (39, shape-only ones such as "the circle" included):
//! IoU ≥ 0.9 in the one-object scenes, and in the scenes of three or four objects a mean IoU ≥ 0.65 with
//! at least 75 % of the expressions at IoU ≥ 0.5. The shipped model (2026-12-02): one-object 0.99–1.00,
//! crowded mean 0.812 and 91 % (held-out mIoU 85.1, docs/toy.md); the colour-only model shipped before
//! 2026-11-22 fails all three (a one-object "the cross" at 0.43, crowded mean 0.579, 61 %).

use std::path::Path;
use std::process::Command;

use flmm_data::toy::{dataset_scenes, referring_expressions, ToyConfig};

/// `flmm toy ship`'s defaults: the examples are the first held-out scenes of dataset seed 0 with 2000
/// training scenes.
const EXAMPLE_SEED: u64 = 0;
const EXAMPLE_TRAIN: usize = 2000;
const EXAMPLES: usize = 6;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/toy")
}

/// IoU of `flmm ground`'s mask for `text` on example `k` against `truth`.
fn ground_iou(k: usize, text: &str, truth: &[u8], tmp: &Path) -> f64 {
    let image = examples().join(format!("scene_{:02}.png", k + 1));
    let out = tmp.join("g");
    let run = Command::new(env!("CARGO_BIN_EXE_flmm"))
        .args(["ground", "--image", image.to_str().unwrap(), "--text", text, "--out", out.to_str().unwrap()])
        .env("FLMM_CACHE", tmp.join("cache"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["phrases"][0]["phrase"], text);
    assert!(out.join("overlay.png").is_file());
    let mask = image::open(out.join("mask_0.png")).unwrap().to_luma8();
    let (mut inter, mut union, mut area) = (0u64, 0u64, 0u64);
    for (p, &t) in mask.pixels().zip(truth) {
        let (p, t) = (p[0] > 127, t != 0);
        inter += (p && t) as u64;
        union += (p || t) as u64;
        area += p as u64;
    }
    assert_eq!(result["phrases"][0]["area"], area, "the JSON's area and the mask PNG disagree");
    inter as f64 / union.max(1) as f64
}

#[test]
fn ground_without_a_model_segments_the_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let scenes = dataset_scenes(EXAMPLE_SEED, EXAMPLE_TRAIN, EXAMPLES, &ToyConfig::default()).split_off(EXAMPLE_TRAIN);
    // (objects in the scene, IoU) for every referring expression of every example scene.
    let mut ious = Vec::new();
    for (k, scene) in scenes.iter().enumerate() {
        for expression in referring_expressions(scene).into_iter().flatten() {
            let iou = ground_iou(k, &expression.text, &scene.objects[expression.target].mask, tmp.path());
            eprintln!("scene {} ({} objects) {:?}: IoU {iou:.3}", k + 1, scene.objects.len(), expression.text);
            ious.push((scene.objects.len(), iou));
        }
    }
    let single: Vec<f64> = ious.iter().filter(|(n, _)| *n == 1).map(|(_, iou)| *iou).collect();
    assert!(!single.is_empty(), "the examples should include a one-object scene");
    assert!(single.iter().all(|&iou| iou >= 0.9), "one-object scenes: {single:.3?}");
    let crowded: Vec<f64> = ious.iter().filter(|(n, _)| *n > 1).map(|(_, iou)| *iou).collect();
    assert!(!crowded.is_empty(), "the examples should include a scene of several objects");
    let mean = crowded.iter().sum::<f64>() / crowded.len() as f64;
    let found = crowded.iter().filter(|&&iou| iou >= 0.5).count() as f64 / crowded.len() as f64;
    eprintln!("scenes of several objects: {} expressions, mean IoU {mean:.3}, {:.0} % with IoU ≥ 0.5", crowded.len(), 100.0 * found);
    assert!(mean >= 0.65 && found >= 0.75, "scenes of several objects: mean IoU {mean:.3}, {:.0} % found", 100.0 * found);
}

#[test]
fn words_outside_the_toy_vocabulary_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g");
    let image = examples().join("scene_04.png");
    let run = Command::new(env!("CARGO_BIN_EXE_flmm"))
        .args(["ground", "--image", image.to_str().unwrap(), "--text", "the purple cow", "--out", out.to_str().unwrap()])
        .env("FLMM_CACHE", tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("does not know cow"), "{}", String::from_utf8_lossy(&run.stderr));
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["unknown_words"], serde_json::json!(["cow"]));
}
