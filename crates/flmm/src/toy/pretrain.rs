//! `flmm toy pretrain-vlm`: the toy VLM's pretraining run on the shared trainer (checkpoints, resume,
//! metrics, progress bar), from a seeded initial model directory.

use std::path::{Path, PathBuf};

use flmm_data::toy::{generate, ToyConfig, ToyScene};

use super::vision_pretrain::load_tower;
use super::vlm::{init_vlm_dir, ToyVlm, VlmTask};
use crate::train::config::{OptimConfig, TrainConfig};
use crate::train::task::TrainTask;
use crate::train::trainer::{train, TrainOptions, TrainSummary};

/// Seed offset of the VLM's pretraining scenes: they are drawn apart from the grounding dataset's.
pub const VLM_SCENE_SEED: u64 = 0x564c_4d00;

/// What to pretrain and where.
#[derive(Debug, Clone)]
pub struct VlmPretrainOptions {
    /// Work directory: `vlm-init/` (the untrained model), `vlm-train/` (run: metrics, checkpoints) and
    /// the result `vlm-train/vlm/`.
    pub work: PathBuf,
    /// Seed of the initial weights and of the scenes.
    pub seed: u64,
    /// Number of training scenes (one conversation each).
    pub scenes: usize,
    /// The vision stage's tower (`flmm toy pretrain-vision`) to start from instead of the random one.
    pub vision: Option<PathBuf>,
    /// Optimizer settings (epochs, lr, accumulation, …).
    pub optim: OptimConfig,
    /// Continue an interrupted run.
    pub resume: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

/// The pretraining scenes: `n` scenes of the toy generator under [`VLM_SCENE_SEED`] + `seed`.
pub fn pretraining_scenes(seed: u64, n: usize) -> Vec<ToyScene> {
    (0..n as u64).map(|i| generate(VLM_SCENE_SEED + seed, i, &ToyConfig::default())).collect()
}

/// Directory of the untrained (initial) toy VLM under `work`.
pub fn init_dir(work: &Path) -> PathBuf {
    work.join("vlm-init")
}

/// Run directory of the pretraining under `work`; the trained model is its `vlm/`.
pub fn run_dir(work: &Path) -> PathBuf {
    work.join("vlm-train")
}

/// The pretrained model directory under `work` (written when the schedule completes).
pub fn model_dir(work: &Path) -> PathBuf {
    run_dir(work).join("vlm")
}

/// The untrained toy VLM under `work` (`vlm-init/`, written from `seed` the first time): where both
/// pretraining stages start, and the control head's backbone.
pub fn initial_vlm(work: &Path, seed: u64) -> anyhow::Result<ToyVlm> {
    let init = init_dir(work);
    if !init.join("model.safetensors").is_file() {
        init_vlm_dir(&init, seed)?;
    }
    ToyVlm::load(&init)
}

/// Runs one pretraining stage's `task` with the shared trainer (checkpoints and metrics in `out_dir`).
pub fn train_stage(task: &dyn TrainTask, seed: u64, optim: &OptimConfig, out_dir: PathBuf, resume: bool, progress: bool) -> anyhow::Result<TrainSummary> {
    let config = TrainConfig { seed, optim: optim.clone(), ..TrainConfig::default() };
    config.validate()?;
    let run = TrainOptions { out_dir, resume, stop_after_step: None, show_progress: progress };
    Ok(train(task, &config, &run)?)
}

/// Pretrains the toy VLM's language stage from [`initial_vlm`] (with the vision stage's tower when given).
pub fn pretrain_vlm(opts: &VlmPretrainOptions) -> anyhow::Result<TrainSummary> {
    let task = VlmTask { vlm: initial_vlm(&opts.work, opts.seed)?, scenes: pretraining_scenes(opts.seed, opts.scenes), variant_seed: opts.seed };
    if let Some(tower) = &opts.vision {
        load_tower(task.vlm.model.params(), tower)?;
    }
    train_stage(&task, opts.seed, &opts.optim, run_dir(&opts.work), opts.resume, opts.progress)
}
