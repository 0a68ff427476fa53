//! `flmm eval` on the real-format fixture datasets with the tiny LLaVA-1.5 backbone and the miniature
//! head: reports for RefCOCO (both protocols) and PNG, identical numbers with 1 or 2 worker processes,
//! resuming from partial records, and clear errors for bad data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").canonicalize().unwrap()
}

fn config(dir: &Path, data_root: &Path) -> PathBuf {
    let f = fixtures();
    let text = format!(
        "[model]\ndir = {:?}\n[sam]\ncheckpoint = {:?}\n[data]\nroot = {:?}\n",
        f.join("llava/llava15"),
        f.join("sam/tiny_sam16.pth"),
        data_root
    );
    let path = dir.join("eval.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn eval(config: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flmm"))
        .arg("eval")
        .args(&args[..1])
        .arg(config)
        .arg("--head")
        .arg(fixtures().join("import/expected.safetensors"))
        .arg("--out")
        .arg(out)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn report(out: &Path, tag: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join(format!("{tag}.json"))).unwrap()).unwrap()
}

fn record_lines(out: &Path) -> usize {
    std::fs::read_dir(out.join("records")).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().count()).sum()
}

#[test]
fn refcoco_protocols_workers_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &fixtures().join("datasets/coco"));
    let one = tmp.path().join("one");
    let run = eval(&cfg, &one, &["refcoco", "--split", "testA", "--concat"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r1 = report(&one, "refcoco-testA-first-concat");
    assert_eq!(r1["scores"]["count"], 2, "first-sentence protocol: one instance per ref");
    assert!(std::fs::read_to_string(one.join("refcoco-testA-first-concat.md")).unwrap().contains("cIoU"));

    let two = tmp.path().join("two");
    let run = eval(&cfg, &two, &["refcoco", "--split", "testA", "--concat", "--workers", "2"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report(&two, "refcoco-testA-first-concat")["scores"], r1["scores"], "workers do not change the numbers");

    let all = tmp.path().join("all");
    let run = eval(&cfg, &all, &["refcoco", "--split", "testA", "--all-sentences"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report(&all, "refcoco-testA-all-single")["scores"]["count"], 3, "standard protocol: every sentence");

    // Resume: evaluate one narrative, then the rest; the first is not redone.
    let png = tmp.path().join("png");
    let run = eval(&cfg, &png, &["png", "--limit", "1"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(record_lines(&png), 1);
    let run = eval(&cfg, &png, &["png"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(record_lines(&png), 3, "3 grounded narratives, each recorded once");
    let r = report(&png, "png-val2017");
    assert_eq!(r["scores"]["count"], 10);
    for key in ["ar_all", "ar_singular", "ar_plural", "ar_things", "ar_stuff", "acc_at_05"] {
        let v = r["scores"][key].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
}

#[test]
fn bad_data_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &tmp.path().join("nowhere"));
    let run = eval(&cfg, &tmp.path().join("out"), &["refcoco"]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && err.contains("nowhere") && err.contains("refs(unc).p"), "{err}");
    let run = eval(&cfg, &tmp.path().join("out"), &["refcoco", "--dataset", "refclef"]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("refcoco, refcoco+ or refcocog"));
}

#[test]
fn data_check_reports_counts_and_what_is_missing() {
    let run = Command::new(env!("CARGO_BIN_EXE_flmm")).args(["data", "check"]).arg(fixtures().join("datasets/coco")).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains("refcoco testA      1 images, 2 refs, 2 expressions"), "{out}");
    assert!(out.contains("png val2017        3 narratives, 10 masks, 1 skipped"), "{out}");
    assert!(out.contains("MISSING  png train2017") && out.contains("png_coco_train2017.json"), "{out}");
    assert!(out.contains("12 of 13 splits usable"), "{out}");
    let run = Command::new(env!("CARGO_BIN_EXE_flmm")).args(["data", "check", "/definitely/not/here"]).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no usable split"));
}

#[test]
fn the_whole_head_trains_on_the_real_format_mix_and_grounds_afterwards() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures();
    let config = tmp.path().join("train.toml");
    std::fs::write(
        &config,
        format!(
            "seed = 1\n[head]\nbase_channels = 4\n[data]\nkind = \"flmm\"\nroot = {:?}\ndatasets = [\"refcoco\", \"refcoco+\", \"refcocog\"]\n\
             [model]\ndir = {:?}\n[sam]\ncheckpoint = {:?}\ncache = {:?}\n[optim]\nlr = 1e-3\nepochs = 6\ncheckpoint_every = 4\n",
            f.join("datasets/coco"),
            f.join("llava/llava15"),
            f.join("sam/tiny_sam16.pth"),
            tmp.path().join("cache")
        ),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let run = Command::new(env!("CARGO_BIN_EXE_flmm")).arg("train").arg(&config).arg("--out").arg(&out).arg("--quiet").output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 24, "4 samples (3 RefCOCO-family train images + 1) × 6 epochs");
    let epoch_loss = |e: usize| rows[e * 4..e * 4 + 4].iter().map(|r| r["loss"].as_f64().unwrap()).sum::<f64>() / 4.0;
    assert!(epoch_loss(5) < 0.95 * epoch_loss(0), "loss {} → {}", epoch_loss(0), epoch_loss(5));
    assert!(rows[0]["sam_loss_dice"].as_f64().is_some() && rows[0]["loss_mask"].as_f64().is_some(), "both outputs are trained");
    // The trained head grounds through the whole pipeline.
    let ground = Command::new(env!("CARGO_BIN_EXE_flmm"))
        .arg("ground")
        .arg("--model")
        .arg(f.join("llava/llava15"))
        .arg("--head")
        .arg(out.join("head.safetensors"))
        .arg("--sam")
        .arg(f.join("sam/tiny_sam16.pth"))
        .arg("--image")
        .arg(f.join("llava/input.png"))
        .args(["--text", "left cat", "--out"])
        .arg(tmp.path().join("g"))
        .output()
        .unwrap();
    assert!(ground.status.success(), "{}", String::from_utf8_lossy(&ground.stderr));
}
