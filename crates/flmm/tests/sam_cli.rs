//! `flmm sam` with a tiny checkpoint in the official torch.save format: masks, overlay, logits, the
//! embedding cache on a second run, and clear errors for bad prompts and legacy checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sam")
}

fn sam(args: &[&str], out: &Path, checkpoint: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flmm"))
        .arg("sam")
        .arg("--checkpoint")
        .arg(fixtures().join(checkpoint))
        .arg("--image")
        .arg(fixtures().join("input.png"))
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn box_and_points_give_masks_overlay_and_logits_and_reuse_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let out = tmp.path().join("a");
    let run = sam(&["--box", "20,20,100,90", "--point", "60,50", "--cache", cache_arg], &out, "tiny_sam.pth");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("computed and cached"));
    let mask = image::open(out.join("mask.png")).unwrap();
    assert_eq!((mask.width(), mask.height()), (180, 118));
    assert_eq!(image::open(out.join("overlay.png")).unwrap().width(), 180);
    let logits = candle_core::safetensors::load(out.join("logits.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(logits["masks"].dims(), [1, 118, 180]);
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 1, "one encoder directory in the cache");

    let out2 = tmp.path().join("b");
    let run = sam(&["--point", "60,50,1", "--point", "10,10,0", "--multimask", "--cache", cache_arg], &out2, "tiny_sam.pth");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("from the cache"));
    for k in 0..3 {
        assert!(out2.join(format!("mask_{k}.png")).is_file());
    }
}

#[test]
fn bad_requests_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, &str); 4] = [
        (&[], "tiny_sam.pth", "at least one --point"),
        (&["--point", "500,5"], "tiny_sam.pth", "outside the 180×118 image"),
        (&["--box", "5,5,1,1"], "tiny_sam.pth", "x0 < x1"),
        (&["--box", "1,1,50,50"], "tiny_sam_legacy.pth", "_use_new_zipfile_serialization=True"),
    ];
    for (i, (args, checkpoint, needle)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let run = sam(args, &out, checkpoint);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(needle), "case {i}: {err}");
        assert!(!out.exists(), "case {i} wrote output");
    }
}
