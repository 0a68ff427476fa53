//! Held-out evaluation of a toy refiner: for every object and prompt kind, SAM's single-mask output
//! upsampled to the scene's resolution, thresholded at logit 0, against the exact mask.

use std::path::Path;
use std::time::Instant;

use flmm_data::toy::ToyScene;
use flmm_head::sam::model::postprocess_masks;
use flmm_head::sam::Sam;
use flmm_nn::metrics::MaskCounts;
use flmm_nn::rng::Rng;
use serde::Serialize;

use super::prompts::{draw, PromptKind, Purpose};
use super::task::{mix_seed, scene_input};

/// Seed of the evaluation prompts (points and coarse masks), fixed so reports are comparable.
const EVAL_PROMPT_SEED: u64 = 0xE7A1;

/// Mean IoU of one prompt kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KindIou {
    /// The prompt kind.
    pub kind: PromptKind,
    /// Mean over objects of the mask IoU at the scene's resolution.
    pub mean_iou: f64,
}

/// What [`evaluate_sam`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamEvalReport {
    /// Scenes evaluated.
    pub scenes: usize,
    /// Objects evaluated (each with every prompt kind).
    pub objects: usize,
    /// Per prompt kind, in [`PromptKind::ALL`] order.
    pub per_kind: Vec<KindIou>,
    /// Wall time.
    pub seconds: f64,
}

impl SamEvalReport {
    /// The mean IoU of `kind`.
    pub fn iou(&self, kind: PromptKind) -> f64 {
        self.per_kind.iter().find(|k| k.kind == kind).map_or(f64::NAN, |k| k.mean_iou)
    }
}

/// Evaluates the refiner at `sam_path` (anything `Sam::load_file` opens) on every object of `scenes`
/// with a box (exact), one positive point, and a box + coarse mask (F-LMM's prompt); prompts are
/// deterministic per (scene, object).
pub fn evaluate_sam(sam_path: &Path, scenes: &[ToyScene]) -> anyhow::Result<SamEvalReport> {
    let started = Instant::now();
    let sam = Sam::load_file(sam_path)?;
    let mut sums = [0f64; 3];
    let mut objects = 0;
    for (s, scene) in scenes.iter().enumerate() {
        let (x, geometry) = scene_input(&sam, scene)?;
        let embedding = sam.image_encoder.forward(&x)?;
        let size = (scene.width as usize, scene.height as usize);
        let mut prompts = Vec::new();
        for (o, object) in scene.objects.iter().enumerate() {
            let mut rng = Rng::new(mix_seed(EVAL_PROMPT_SEED, s as u64, o as u64));
            for kind in PromptKind::ALL {
                prompts.push(draw(kind, Purpose::Eval, object, size, &mut rng, &sam, &geometry)?);
            }
        }
        let decoded = sam.decode_many(&embedding, &prompts, false)?;
        let masks = postprocess_masks(&decoded.masks, &geometry)?; // [N, 1, H, W]
        for (k, object) in scene.objects.iter().enumerate() {
            let truth: Vec<bool> = object.mask.iter().map(|&v| v != 0).collect();
            for (j, sum) in sums.iter_mut().enumerate() {
                let logits: Vec<f32> = masks.get(k * PromptKind::ALL.len() + j)?.flatten_all()?.to_vec1()?;
                let predicted: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
                *sum += MaskCounts::new(&predicted, &truth).iou();
            }
            objects += 1;
        }
    }
    let per_kind = PromptKind::ALL.iter().zip(sums).map(|(&kind, sum)| KindIou { kind, mean_iou: sum / objects.max(1) as f64 }).collect();
    Ok(SamEvalReport { scenes: scenes.len(), objects, per_kind, seconds: started.elapsed().as_secs_f64() })
}
