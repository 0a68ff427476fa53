//! The toy world's whole recipe in miniature, through the `flmm` binary and the repository's own toy
//! configs: data → VLM pretraining (vision stage, then language) → refiner pretraining → head training (the VLM's files stay
//! byte-identical) → evaluation with U-Net and refined scores → shipping → `flmm ground` on an example.
//! The real regeneration is `flmm toy all` (docs/toy.md); this is its smoke version for CI.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `flmm args` (one compute thread); its success and its stdout + stderr.
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flmm"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs `flmm args`, which must succeed; its output.
fn flmm(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "flmm {args:?} failed:\n{text}");
    text
}

fn repo_file(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)).unwrap()
}

/// Every file of `dir` with its bytes, in name order.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn the_toy_recipe_runs_end_to_end_and_leaves_the_vlm_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("toy");
    let w = work.to_str().unwrap();
    flmm(&["toy", "build", "--work", w, "--train", "3", "--val", "2"]);
    let vlm_args = ["toy", "pretrain-vlm", "--work", w, "--scenes", "2", "--epochs", "1", "--accumulate", "2", "--quiet"];
    let (ok, text) = run(&vlm_args);
    assert!(!ok && text.contains("flmm toy pretrain-vision"), "the language stage must ask for the vision stage:\n{text}");
    let vision = flmm(&["toy", "pretrain-vision", "--work", w, "--scenes", "2", "--val", "1", "--accumulate", "2", "--quiet"]);
    assert!(vision.contains("colour_shape_recall"), "{vision}");
    flmm(&vlm_args);
    let sam = flmm(&["toy", "pretrain-sam", "--work", w, "--scenes", "2", "--val", "1", "--quiet"]);
    assert!(sam.contains("held-out mean IoU"), "{sam}");

    // The repository's toy configs, pointed at this work directory.
    let train_config = tmp.path().join("toy.toml");
    std::fs::write(&train_config, repo_file("configs/toy.toml").replace("runs/toy", w)).unwrap();
    let eval_config = tmp.path().join("eval.toml");
    std::fs::write(&eval_config, repo_file("configs/eval/toy.toml").replace("../../runs/toy", w)).unwrap();

    let vlm = work.join("vlm-train/vlm");
    let before = snapshot(&vlm);
    let head_dir = work.join("head-train");
    let trained = flmm(&["train", train_config.to_str().unwrap(), "--out", head_dir.to_str().unwrap(), "--quiet"]);
    assert!(trained.contains("head written to"), "{trained}");
    assert!(before == snapshot(&vlm), "head training changed the frozen VLM's files");

    let head = head_dir.join("head.safetensors");
    let eval_out = tmp.path().join("eval");
    let args = ["eval", "refcoco", eval_config.to_str().unwrap(), "--head", head.to_str().unwrap(), "--out", eval_out.to_str().unwrap()];
    let report = flmm(&args);
    assert!(report.contains("U-Net alone") && report.contains("refined (SAM)"), "{report}");

    // The control: the same recipe on the untrained VLM goes through the same commands.
    let control_dir = work.join("control-train");
    let init = work.join("vlm-init");
    let control = ["train", train_config.to_str().unwrap(), "--model", init.to_str().unwrap(), "--out", control_dir.to_str().unwrap(), "--quiet"];
    flmm(&control);
    let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(control_dir.join("head.json")).unwrap()).unwrap();
    assert_eq!(sidecar["backbone"].as_str().unwrap(), init.to_str().unwrap());

    let models = tmp.path().join("models");
    let examples = tmp.path().join("examples");
    let ship = ["toy", "ship", "--work", w, "--out", models.to_str().unwrap(), "--examples", examples.to_str().unwrap(), "--train", "3", "--val", "2"];
    flmm(&ship);
    let out = tmp.path().join("ground");
    let ground = [
        ("--model", models.join("vlm")),
        ("--head", models.join("head.safetensors")),
        ("--sam", models.join("sam.safetensors")),
        ("--image", examples.join("scene_01.png")),
        ("--out", out.clone()),
    ];
    let mut args: Vec<String> = vec!["ground".into(), "--text".into(), "the red circle".into()];
    for (flag, path) in ground {
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    flmm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["phrases"][0]["phrase"], "the red circle", "{result}");
}
