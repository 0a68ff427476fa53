//! The toy VLM's pretraining through the shared trainer: it runs, learns, exports a model directory the
//! frozen engine opens, and its question answering can be scored.

use candle_core::{DType, Device};
use flmm::toy::pretrain::{pretrain_vlm, pretraining_scenes, run_dir, VlmPretrainOptions};
use flmm::toy::qa::{evaluate_qa, question_kind};
use flmm::toy::vlm::ToyVlm;
use flmm::train::config::OptimConfig;

#[test]
fn pretraining_runs_exports_and_scores() {
    let work = tempfile::tempdir().unwrap();
    let optim = OptimConfig { lr: 2e-3, epochs: 3, accumulate: 2, checkpoint_every: 100, ..OptimConfig::default() };
    let opts = VlmPretrainOptions { work: work.path().to_path_buf(), seed: 1, scenes: 4, vision: None, optim, resume: false, progress: false };
    let summary = pretrain_vlm(&opts).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(summary.last_loss < summary.first_loss, "{} -> {}", summary.first_loss, summary.last_loss);

    let dir = run_dir(work.path()).join("vlm");
    let backbone = flmm_lmm::backbone::Backbone::open(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(backbone.config.attention_channels(), 16);

    let vlm = ToyVlm::load(&dir).unwrap();
    let report = evaluate_qa(&vlm, &pretraining_scenes(9, 2)).unwrap();
    assert_eq!(report.scenes, 2);
    assert_eq!(report.descriptions.total, 2);
    assert!(report.questions.total >= 8, "{report:?}");
    assert_eq!(report.by_kind.values().map(|t| t.total).sum::<usize>(), report.questions.total);
    assert!(!report.by_kind.contains_key("other"), "{report:?}");
}

#[test]
fn question_kinds_come_from_the_opening_words() {
    assert_eq!(question_kind("what is left of the red circle?"), "what is <relation>");
    assert_eq!(question_kind("where is the small red circle below the blue cross?"), "where is");
    assert_eq!(question_kind("how many squares are there?"), "how many");
    assert_eq!(question_kind("why?"), "other");
}
