//! `flmm toy pretrain-vision`: the toy VLM's vision tower learns what is in a scene before the language
//! stage, as LLaVA starts from a CLIP tower pretrained on image–caption pairs.
//!
//! The labels are image level, like a caption's words: which colour + shape and which size + shape
//! combinations occur in the scene (never a mask or a position). A linear probe scores every patch token
//! for every label and a log-sum-exp over the tokens pools them (a soft "is it anywhere"), so the patch
//! tokens of each object have to carry its colour, shape and size — which is what the language model
//! later reads. Without this stage the toy VLM learned colours but stayed blind to shape (docs/toy.md).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use flmm_data::toy::{generate, Colour, Shape, Size, ToyConfig, ToyScene};
use flmm_lmm::trainable::init::VISION;
use flmm_nn::loss::bce_with_logits_mean;
use flmm_nn::params::{save_tensors, ParamStore};
use flmm_nn::rng::Rng;
use serde::Serialize;

use super::pretrain::{initial_vlm, train_stage};
use super::vlm::ToyVlm;
use crate::train::config::OptimConfig;
use crate::train::task::{SampleLoss, TrainTask};
use crate::train::trainer::TrainSummary;

/// Seed offset of the vision stage's scenes, apart from the grounding dataset's, the VLM's and the
/// refiner's.
pub const VISION_SCENE_SEED: u64 = 0x5649_5300;

/// The exported vision tower (transformers keys of the toy VLM) inside the run directory.
pub const VISION_FILE: &str = "vision.safetensors";

/// Key prefix of the vision tower's parameters.
fn is_tower(name: &str) -> bool {
    name.starts_with(VISION)
}

/// The vision tower's variables of a toy VLM's `params` (shared, not copied).
fn tower_params(params: &ParamStore) -> ParamStore {
    let mut tower = ParamStore::new();
    for (name, var) in params.iter().filter(|(n, _)| is_tower(n)) {
        tower.adopt(name.clone(), var.clone());
    }
    tower
}

/// Run directory of the vision stage under a toy work directory.
pub fn run_dir(work: &Path) -> PathBuf {
    work.join("vision-train")
}

/// The pretrained vision tower under a toy work directory.
pub fn vision_path(work: &Path) -> PathBuf {
    run_dir(work).join(VISION_FILE)
}

/// Number of image-level labels: colour × shape, then size × shape.
pub const LABELS: usize = Colour::ALL.len() * Shape::ALL.len() + 2 * Shape::ALL.len();

/// Initial label logit: about the share of labels present in a toy scene (≈ 0.15).
const PRIOR_LOGIT: f32 = -1.7;

/// The scene's labels (1 where the combination occurs): index `c·4 + s` for colour `c` and shape `s`,
/// then `24 + z·4 + s` for size `z` (small, large).
pub fn scene_labels(scene: &ToyScene) -> Vec<f32> {
    let shapes = Shape::ALL.len();
    let mut out = vec![0f32; LABELS];
    for o in &scene.objects {
        let s = Shape::ALL.iter().position(|&x| x == o.shape).expect("a toy shape");
        let c = Colour::ALL.iter().position(|&x| x == o.colour).expect("a toy colour");
        let z = usize::from(o.size == Size::Large);
        out[c * shapes + s] = 1.0;
        out[Colour::ALL.len() * shapes + z * shapes + s] = 1.0;
    }
    out
}

/// The vision stage as a [`TrainTask`]: the toy VLM's vision tower plus a linear probe, trained on
/// [`scene_labels`] with binary cross-entropy.
pub struct VisionTask {
    vlm: ToyVlm,
    params: ParamStore,
    scenes: Vec<ToyScene>,
}

impl VisionTask {
    /// The tower of `vlm` (its variables, shared) and a fresh probe (seeded).
    pub fn new(vlm: ToyVlm, scenes: Vec<ToyScene>, seed: u64) -> candle_core::Result<Self> {
        let mut params = tower_params(vlm.model.params());
        let width = vlm.model.config().vision.hidden_size;
        let mut rng = Rng::new(seed ^ VISION_SCENE_SEED);
        let weight = flmm_nn::init::normal(&[LABELS, width], (width as f64).powf(-0.5), &mut rng, &Device::Cpu)?;
        params.insert("probe.weight", weight)?;
        // Most labels are absent from a scene: start from that prior (AdamW moves a bias by about the
        // learning rate per step, so a zero start would spend thousands of steps getting there).
        params.insert("probe.bias", Tensor::full(PRIOR_LOGIT, LABELS, &Device::Cpu)?)?;
        Ok(Self { vlm, params, scenes })
    }

    /// Label logits `[LABELS]` of a scene: per-token probe scores pooled by log-mean-exp over the tokens
    /// (the mean of equal scores, close to the largest of one outstanding score).
    pub fn logits(&self, scene: &ToyScene) -> anyhow::Result<Tensor> {
        let pixels = self.vlm.pixels(scene)?;
        let tokens = self.vlm.model.vision_tokens(&self.vlm.model.tensors(), &pixels)?;
        let get = |k: &str| self.params.get(k).expect("probe parameter").as_tensor().clone();
        let scores = tokens.matmul(&get("probe.weight").t()?)?.broadcast_add(&get("probe.bias"))?; // [n, L]
        let peak = scores.max_keepdim(0)?.detach();
        Ok((scores.broadcast_sub(&peak)?.exp()?.mean_keepdim(0)?.log()? + peak)?.squeeze(0)?)
    }
}

impl TrainTask for VisionTask {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn len(&self) -> usize {
        self.scenes.len()
    }

    fn sample_loss(&self, index: usize, _dtype: DType) -> candle_core::Result<SampleLoss> {
        let err = |e: anyhow::Error| candle_core::Error::Msg(format!("{e:#}"));
        let scene = &self.scenes[index];
        let logits = self.logits(scene).map_err(err)?.unsqueeze(0)?;
        let target = Tensor::from_vec(scene_labels(scene), (1, LABELS), &Device::Cpu)?;
        let loss = bce_with_logits_mean(&logits, &target)?;
        let hits = logits.ge(0f32)?.to_dtype(DType::F32)?.eq(&target)?.to_dtype(DType::F32)?.mean_all()?;
        let mut logs = std::collections::BTreeMap::new();
        logs.insert("label_accuracy".into(), hits.to_scalar::<f32>()? as f64);
        Ok(SampleLoss { loss, logs })
    }

    fn export(&self, dir: &Path) -> anyhow::Result<()> {
        let tower = self.params.tensors().into_iter().filter(|(k, _)| is_tower(k)).collect();
        Ok(save_tensors(&tower, &dir.join(VISION_FILE))?)
    }
}

/// Held-out label accuracy of the vision stage.
#[derive(Debug, Clone, Serialize)]
pub struct VisionReport {
    /// Held-out scenes scored.
    pub scenes: usize,
    /// Share of present colour + shape combinations scored present.
    pub colour_shape_recall: f64,
    /// Share of absent colour + shape combinations scored absent.
    pub colour_shape_rejection: f64,
    /// Share of present size + shape combinations scored present.
    pub size_shape_recall: f64,
    /// Share of absent size + shape combinations scored absent.
    pub size_shape_rejection: f64,
    /// Share of scenes with every label right.
    pub scenes_all_right: f64,
}

/// Scores `task`'s current tower and probe on `scenes`.
pub fn evaluate_vision(task: &VisionTask, scenes: &[ToyScene]) -> anyhow::Result<VisionReport> {
    let split = Colour::ALL.len() * Shape::ALL.len();
    // [present seen, present right, absent seen, absent right] for colour+shape, then size+shape.
    let mut tally = [[0usize; 4]; 2];
    let mut all_right = 0;
    for scene in scenes {
        let predicted: Vec<f32> = task.logits(scene)?.to_vec1()?;
        let labels = scene_labels(scene);
        let mut right = true;
        for (i, (&p, &l)) in predicted.iter().zip(&labels).enumerate() {
            let t = &mut tally[usize::from(i >= split)];
            let ok = (p >= 0.0) == (l > 0.5);
            right &= ok;
            let at = if l > 0.5 { 0 } else { 2 };
            t[at] += 1;
            t[at + 1] += usize::from(ok);
        }
        all_right += usize::from(right);
    }
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(VisionReport {
        scenes: scenes.len(),
        colour_shape_recall: share(tally[0][1], tally[0][0]),
        colour_shape_rejection: share(tally[0][3], tally[0][2]),
        size_shape_recall: share(tally[1][1], tally[1][0]),
        size_shape_rejection: share(tally[1][3], tally[1][2]),
        scenes_all_right: share(all_right, scenes.len()),
    })
}

/// What the vision stage trains on and where.
#[derive(Debug, Clone)]
pub struct VisionPretrainOptions {
    /// Work directory: `vlm-init/` (created if missing; its tower is the starting point) and the run
    /// directory `vision-train/`.
    pub work: PathBuf,
    /// Seed of the initial VLM, the probe and the scenes.
    pub seed: u64,
    /// Training scenes.
    pub scenes: usize,
    /// Held-out scenes scored at the end (the scenes after the training ones in the same stream).
    pub val: usize,
    /// Optimizer settings.
    pub optim: OptimConfig,
    /// Continue an interrupted run.
    pub resume: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

/// Scenes `from..from + n` of the vision stage's stream.
fn vision_scenes(seed: u64, from: usize, n: usize) -> Vec<ToyScene> {
    let config = ToyConfig::default();
    (from as u64..(from + n) as u64).map(|i| generate(VISION_SCENE_SEED + seed, i, &config)).collect()
}

/// Trains the vision stage, writes `vision.safetensors` and `heldout.json` into its run directory.
pub fn pretrain_vision(opts: &VisionPretrainOptions) -> anyhow::Result<(TrainSummary, VisionReport)> {
    let task = VisionTask::new(initial_vlm(&opts.work, opts.seed)?, vision_scenes(opts.seed, 0, opts.scenes), opts.seed)?;
    let summary = train_stage(&task, opts.seed, &opts.optim, run_dir(&opts.work), opts.resume, opts.progress)?;
    let report = evaluate_vision(&task, &vision_scenes(opts.seed, opts.scenes, opts.val))?;
    let json = serde_json::to_string_pretty(&report)?;
    flmm_nn::fsutil::write_atomic(&run_dir(&opts.work).join("heldout.json"), json.as_bytes())?;
    Ok((summary, report))
}

/// Replaces the vision tower of `params` (a toy VLM's) with the one stored at `path`, strictly and all
/// at once ([`ParamStore::load`]: a missing, mis-shaped or non-finite key is named and nothing changes).
pub fn load_tower(params: &ParamStore, path: &Path) -> anyhow::Result<()> {
    tower_params(params).load(path, "")?;
    Ok(())
}
