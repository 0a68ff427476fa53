//! Pretraining the toy world's SAM refiner: SAM's promptable-segmentation stage on toy scenes (boxes,
//! points, and F-LMM's box + coarse-mask prompt), every part trained from a seeded random init with
//! the ordinary trainer (checkpoints, exact resume), exported as `sam.safetensors` with the official
//! SAM keys in f16 so `Sam::load_file` opens it. Afterwards F-LMM freezes its image encoder and trains
//! its prompt encoder and mask decoder with the rest of the head.
//!
//! * [`model`]: the toy architecture and its initialization.
//! * [`prompts`]: prompt kinds and how they are drawn.
//! * [`task`]: the [`crate::train::task::TrainTask`].
//! * [`eval`]: mean IoU per prompt kind on held-out scenes.

pub mod eval;
pub mod model;
pub mod prompts;
pub mod task;

use std::path::{Path, PathBuf};

use flmm_data::toy::{dataset_scenes, generate, ToyConfig, ToyScene};
use serde::{Deserialize, Serialize};

pub use eval::{evaluate_sam, KindIou, SamEvalReport};
pub use prompts::PromptKind;
pub use task::{SamPretrainTask, SAM_FILE};

use crate::train::config::OptimConfig;
use crate::train::{train, TrainConfig, TrainOptions, TrainSummary};

/// Seed of the refiner's own scene stream, apart from the grounding dataset's (seed 0) and the VLM's,
/// so that no held-out grounding scene is ever seen by the refiner.
pub const SAM_SCENE_SEED: u64 = 0x5341_4d00;

/// Name of the file recording what a run trains on, checked when resuming.
const SETUP_FILE: &str = "toy_sam_setup.json";

/// What to pretrain on and how long (every field defaulted when deserialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamPretrainOptions {
    /// Seed of the toy scene streams (`dataset_scenes`): scenes `0..train_scenes` train, the next
    /// `eval_scenes` of the default 1–5-object stream are held out.
    pub scene_seed: u64,
    /// Training scenes (one sample each, every object of it prompted).
    pub train_scenes: usize,
    /// Fewest objects of a training scene (up to 5). In scenes of one or two objects "everything
    /// salient" is a good answer to any prompt, which keeps box and point prompts from being learned.
    pub train_min_objects: usize,
    /// Held-out scenes evaluated after training (0: no evaluation).
    pub eval_scenes: usize,
    /// Seed of the initialization, the data order and the prompts.
    pub seed: u64,
    /// Passes over the training objects.
    pub epochs: u64,
    /// Objects per optimizer step.
    pub accumulate: usize,
    /// Peak AdamW learning rate (linear warm-up, cosine decay).
    pub lr: f64,
    /// Run directory: metrics, checkpoints, `sam.safetensors`.
    pub out_dir: PathBuf,
    /// Draw a progress bar on stderr.
    pub show_progress: bool,
    /// Continue from the newest checkpoint in `out_dir`.
    pub resume: bool,
}

impl Default for SamPretrainOptions {
    fn default() -> Self {
        Self {
            scene_seed: SAM_SCENE_SEED,
            train_scenes: 2400,
            train_min_objects: 3,
            eval_scenes: 100,
            seed: 0,
            epochs: 1,
            accumulate: 1,
            lr: 2e-3,
            out_dir: PathBuf::from("toy-sam"),
            show_progress: true,
            resume: false,
        }
    }
}

impl SamPretrainOptions {
    /// The trainer's configuration for these options.
    fn train_config(&self) -> TrainConfig {
        let optim = OptimConfig {
            lr: self.lr,
            weight_decay: 0.05,
            epochs: self.epochs,
            accumulate: self.accumulate,
            warmup_fraction: 0.05,
            start_factor: 1e-3,
            checkpoint_every: 200,
            ..OptimConfig::default()
        };
        TrainConfig { seed: self.seed, optim, ..TrainConfig::default() }
    }

    /// The part of the options that fixes what is trained (everything but the run's plumbing).
    fn setup(&self) -> serde_json::Value {
        serde_json::json!({
            "scene_seed": self.scene_seed,
            "train_scenes": self.train_scenes,
            "train_min_objects": self.train_min_objects,
            "seed": self.seed,
            "model": { "vit": format!("{:?}", model::toy_vit()), "decoder": format!("{:?}", model::toy_decoder()) },
        })
    }
}

/// Run directory of the refiner's pretraining under a toy work directory.
pub fn run_dir(work: &Path) -> PathBuf {
    work.join("sam-train")
}

/// The pretrained refiner under a toy work directory.
pub fn sam_path(work: &Path) -> PathBuf {
    run_dir(work).join(SAM_FILE)
}

/// What [`pretrain_sam`] did.
#[derive(Debug, Clone)]
pub struct SamPretrainReport {
    /// The trainer's summary (steps, first and last loss, wall time of this invocation).
    pub train: TrainSummary,
    /// The exported refiner (written once the schedule is complete).
    pub sam_path: PathBuf,
    /// Trainable scalars.
    pub parameters: usize,
    /// Size of `sam.safetensors` in bytes.
    pub file_bytes: u64,
    /// Held-out evaluation, when `eval_scenes > 0`.
    pub eval: Option<SamEvalReport>,
}

/// Pretrains the toy SAM as `opts` says and evaluates it on the held-out scenes.
pub fn pretrain_sam(opts: &SamPretrainOptions) -> anyhow::Result<SamPretrainReport> {
    let config = opts.train_config();
    config.validate()?;
    std::fs::create_dir_all(&opts.out_dir)?;
    check_setup(&opts.out_dir.join(SETUP_FILE), &opts.setup(), opts.resume)?;
    let train_config = ToyConfig { min_objects: opts.train_min_objects, ..ToyConfig::default() };
    let train_scenes = dataset_scenes(opts.scene_seed, opts.train_scenes, 0, &train_config);
    let held_out = held_out_scenes(opts);
    let task = SamPretrainTask::new(model::fresh_toy_sam(opts.seed)?, train_scenes, opts.seed);
    let train_opts = TrainOptions { out_dir: opts.out_dir.clone(), resume: opts.resume, stop_after_step: None, show_progress: opts.show_progress };
    let summary = train(&task, &config, &train_opts)?;
    let sam_path = opts.out_dir.join(SAM_FILE);
    let eval = if held_out.is_empty() { None } else { Some(evaluate_sam(&sam_path, &held_out)?) };
    Ok(SamPretrainReport {
        train: summary,
        parameters: task.sam().params.parameter_count(),
        file_bytes: std::fs::metadata(&sam_path)?.len(),
        sam_path,
        eval,
    })
}

/// The validation split of the default toy stream: scenes `train_scenes..train_scenes + eval_scenes`
/// of `scene_seed` with 1–5 objects (disjoint from the training indices).
pub fn held_out_scenes(opts: &SamPretrainOptions) -> Vec<ToyScene> {
    let start = opts.train_scenes as u64;
    (start..start + opts.eval_scenes as u64).map(|k| generate(opts.scene_seed, k, &ToyConfig::default())).collect()
}

/// Records the setup of a new run, or checks that a resumed run trains on the same one.
fn check_setup(path: &Path, setup: &serde_json::Value, resume: bool) -> anyhow::Result<()> {
    if resume {
        let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        anyhow::ensure!(&recorded == setup, "cannot resume: {} records {recorded}, these options give {setup}", path.display());
        return Ok(());
    }
    flmm_nn::fsutil::write_atomic(path, serde_json::to_string_pretty(setup)?.as_bytes())?;
    Ok(())
}
