//! SAM's promptable-segmentation training on toy scenes as a [`TrainTask`]: every parameter of the toy
//! SAM is trained; one sample is one scene, whose every object is prompted with every prompt kind, the
//! prompts drawn per (scene, optimizer step).

use std::sync::atomic::{AtomicU64, Ordering};
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use flmm_data::toy::{render, ToyScene};
use flmm_head::sam::preprocess::{preprocess, SamGeometry};
use flmm_head::sam::Sam;
use flmm_nn::params::ParamStore;
use flmm_nn::rng::Rng;

use super::prompts::{draw, PromptKind, Purpose};
use crate::train::task::{mask_counts, mask_loss, SampleLoss, TrainTask};

/// Chance that an object also gets a point prompt in a step (boxes and box + coarse mask, the prompts
/// F-LMM uses, are drawn for every object every step).
const POINT_CHANCE: f64 = 0.34;

/// Name of the exported refiner inside the run directory.
pub const SAM_FILE: &str = "sam.safetensors";

fn err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A stream seed for `(seed, a, b)` (SplitMix64 finalizer over the mixed words).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The encoder input `[1, 3, S, S]` of a scene and its geometry.
pub fn scene_input(sam: &Sam, scene: &ToyScene) -> Result<(Tensor, SamGeometry)> {
    preprocess(&render(scene), sam.image_encoder.input_size(), &Device::Cpu).map_err(err)
}

/// The ground truth `[1, 1, L, L]` in the frame of SAM's low-resolution masks (`L = 4 ×` the embedding
/// side, covering the padded input): nearest sample of the scene mask, zero over the padding.
pub fn low_res_target(mask: &[u8], geometry: &SamGeometry, side: usize) -> Result<Tensor> {
    let (h, w) = geometry.original;
    let (rh, rw) = geometry.resized;
    let scale = geometry.input as f64 / side as f64;
    let mut out = vec![0f32; side * side];
    for i in 0..side {
        let y = (i as f64 + 0.5) * scale; // input-frame row of the cell centre
        if y >= rh as f64 {
            continue;
        }
        let oy = ((y * h as f64 / rh as f64) as usize).min(h - 1);
        for j in 0..side {
            let x = (j as f64 + 0.5) * scale;
            if x < rw as f64 {
                let ox = ((x * w as f64 / rw as f64) as usize).min(w - 1);
                out[i * side + j] = mask[oy * w + ox] as f32;
            }
        }
    }
    Tensor::from_vec(out, (1, 1, side, side), &Device::Cpu)
}

/// The toy SAM and its training scenes.
pub struct SamPretrainTask {
    sam: Sam,
    scenes: Vec<ToyScene>,
    prompt_seed: u64,
    step: AtomicU64,
}

impl SamPretrainTask {
    /// Trains `sam` (built with `Sam::build_trainable`) on `scenes`; prompts are drawn from `prompt_seed`.
    pub fn new(sam: Sam, scenes: Vec<ToyScene>, prompt_seed: u64) -> Self {
        Self { sam, scenes, prompt_seed, step: AtomicU64::new(0) }
    }

    /// The model being trained.
    pub fn sam(&self) -> &Sam {
        &self.sam
    }
}

impl TrainTask for SamPretrainTask {
    fn params(&self) -> &ParamStore {
        &self.sam.params
    }

    /// One sample is one scene: the image encoder's forward and backward cost several decoder passes,
    /// so every object of the scene is decoded from the one embedding (in one batch per prompt shape).
    fn len(&self) -> usize {
        self.scenes.len()
    }

    fn begin_step(&self, step: u64) {
        self.step.store(step, Ordering::Relaxed);
    }

    /// For every object a box and a box + coarse mask prompt, and a third of the time a point prompt
    /// (drawn per (scene, step)): BCE + Dice of the single-mask outputs against the objects at the
    /// low-resolution mask's size, plus SAM's IoU-prediction MSE. Logs the masks' mean IoU (`aiou`)
    /// and each drawn kind's (`iou_<kind>`).
    fn sample_loss(&self, index: usize, _dtype: DType) -> Result<SampleLoss> {
        let scene = &self.scenes[index];
        let (x, geometry) = scene_input(&self.sam, scene)?;
        let embedding = self.sam.image_encoder.forward(&x).map_err(err)?;
        let mut rng = Rng::new(mix_seed(self.prompt_seed, self.step.load(Ordering::Relaxed), index as u64));
        let size = (scene.width as usize, scene.height as usize);
        let (mut prompts, mut kinds, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for object in &scene.objects {
            let target = low_res_target(&object.mask, &geometry, self.sam.prompt_encoder.embedding_size().0 * 4)?;
            for kind in PromptKind::ALL {
                if kind == PromptKind::Point && rng.uniform() >= POINT_CHANCE {
                    continue;
                }
                prompts.push(draw(kind, Purpose::Train, object, size, &mut rng, &self.sam, &geometry).map_err(err)?);
                kinds.push(kind);
                targets.push(target.clone());
            }
        }
        let decoded = self.sam.decode_many(&embedding, &prompts, false).map_err(err)?;
        let masks = decoded.masks; // [N, 1, L, L], one per prompt
        let targets = Tensor::cat(&targets, 0)?;
        let mut out = mask_loss(&masks, &targets)?;
        let actual: Vec<f32> = mask_counts(&masks, &targets)?.iter().map(|c| c.iou() as f32).collect();
        for kind in PromptKind::ALL {
            let ious: Vec<f64> = actual.iter().zip(&kinds).filter(|(_, &k)| k == kind).map(|(&v, _)| v as f64).collect();
            if !ious.is_empty() {
                out.logs.insert(format!("iou_{}", kind.name()), ious.iter().sum::<f64>() / ious.len() as f64);
            }
        }
        let n = actual.len();
        let actual = Tensor::from_vec(actual, n, &Device::Cpu)?;
        let iou_loss = (decoded.iou.flatten_all()? - actual)?.sqr()?.mean_all()?;
        out.logs.insert("loss_iou".into(), iou_loss.to_scalar::<f32>()? as f64);
        Ok(SampleLoss { loss: (out.loss + iou_loss)?, logs: out.logs })
    }

    /// Point prompts are drawn for a third of the objects and carry a negative point only sometimes,
    /// so the point and not-a-point embeddings may miss a gradient in the first step; every other
    /// tensor is on the graph of every sample.
    fn may_lack_gradient(&self, name: &str) -> bool {
        name.starts_with("prompt_encoder.point_embeddings.0.")
            || name.starts_with("prompt_encoder.point_embeddings.1.")
            || name.starts_with("prompt_encoder.not_a_point_embed.")
    }

    /// Writes the refiner as `sam.safetensors` (official SAM keys, f16) and `sam.json`.
    fn export(&self, dir: &Path) -> anyhow::Result<()> {
        self.sam.save_file(&dir.join(SAM_FILE), DType::F16)?;
        let sidecar = serde_json::json!({
            "format": "flmm-toy-sam/1",
            "scenes": self.scenes.len(),
            "objects": self.scenes.iter().map(|s| s.objects.len()).sum::<usize>(),
            "parameters": self.sam.params.parameter_count(),
            "storage": "f16",
        });
        flmm_nn::fsutil::write_atomic(&dir.join("sam.json"), serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
        Ok(())
    }
}
