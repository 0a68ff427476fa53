//! What the trainer trains: a set of samples, trainable parameters and a loss per sample.

use candle_core::{DType, Device, Result, Tensor};
use flmm_data::blobs::BlobSample;
use flmm_head::UNetHead;
use flmm_nn::loss::{bce_with_logits_mean, dice_loss};
use flmm_nn::metrics::{accuracy_and_aiou, binarize_logits, MaskCounts};
use flmm_nn::params::ParamStore;
use std::collections::BTreeMap;

/// The loss of one sample and the numbers worth logging with it.
pub struct SampleLoss {
    /// Scalar loss to minimize (f32).
    pub loss: Tensor,
    /// Named statistics (loss parts, accuracy, aIoU, …).
    pub logs: BTreeMap<String, f64>,
}

/// A trainable model together with its data. The trainer may compute several samples of one step on
/// different threads, hence `Sync`.
pub trait TrainTask: Sync {
    /// Parameters the optimizer updates.
    fn params(&self) -> &ParamStore;
    /// Number of training samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Called before the samples of optimizer step `step` (0-based) are computed. Tasks whose samples
    /// vary from step to step (random prompts, augmentation) derive that randomness from `step`, so a
    /// resumed run sees the same data as an uninterrupted one.
    fn begin_step(&self, _step: u64) {}
    /// Loss of sample `index` with the forward pass in `dtype`.
    fn sample_loss(&self, index: usize, dtype: DType) -> Result<SampleLoss>;
    /// Whether parameter `name` may legitimately receive no gradient (it is trained in general but
    /// unused by this task's forward; the optimizer then leaves it untouched, as PyTorch's AdamW does).
    fn may_lack_gradient(&self, _name: &str) -> bool {
        false
    }
    /// Saves the trained parameters in the product's head format (weights + JSON sidecar).
    fn export(&self, dir: &std::path::Path) -> anyhow::Result<()>;
}

/// F-LMM's mask loss for a U-Net output: BCE + Dice against the target, plus accuracy/aIoU logs.
pub fn mask_loss(logits: &Tensor, target: &Tensor) -> Result<SampleLoss> {
    let logits = logits.to_dtype(DType::F32)?;
    let n = logits.dim(0)?;
    let flat = logits.reshape((n, ()))?;
    let target = target.to_dtype(DType::F32)?.reshape((n, ()))?;
    let bce = bce_with_logits_mean(&flat, &target)?;
    let dice = dice_loss(&flat, &target)?;
    let (accuracy, aiou) = accuracy_and_aiou(&mask_counts(&flat, &target)?);
    let mut logs = BTreeMap::new();
    logs.insert("loss_mask".into(), bce.to_scalar::<f32>()? as f64);
    logs.insert("loss_dice".into(), dice.to_scalar::<f32>()? as f64);
    logs.insert("accuracy".into(), accuracy);
    logs.insert("aiou".into(), aiou);
    Ok(SampleLoss { loss: (bce + dice)?, logs })
}

/// Per-mask pixel counts of binarized `logits` against `targets`, both `[N, ...]`.
pub fn mask_counts(logits: &Tensor, targets: &Tensor) -> Result<Vec<MaskCounts>> {
    let n = logits.dim(0)?;
    let pred: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.reshape((n, ()))?.to_vec2()?;
    let gt: Vec<Vec<f32>> = targets.to_dtype(DType::F32)?.reshape((n, ()))?.to_vec2()?;
    Ok(pred.iter().zip(&gt).map(|(p, g)| MaskCounts::new(&binarize_logits(p), &g.iter().map(|v| *v > 0.5).collect::<Vec<_>>())).collect())
}

/// Training the U-Net head alone on attention stacks with target masks.
pub struct UNetTask {
    /// The head being trained.
    pub head: UNetHead,
    /// The samples.
    pub samples: Vec<BlobSample>,
    /// A name for the data, written to the head's sidecar.
    pub data_name: String,
}

impl UNetTask {
    fn logits(&self, index: usize, dtype: DType) -> Result<Tensor> {
        let x = self.samples[index].attention.unsqueeze(0)?;
        self.head.forward(&x, dtype).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    fn target(&self, index: usize, h: usize, w: usize) -> Result<Tensor> {
        let sample = &self.samples[index];
        let mask: Vec<f32> = sample.mask.iter().map(|&v| v as f32).collect();
        let (mh, mw) = sample.mask_shape;
        let resized = flmm_nn::resize::resize_nearest_plane(&mask, mh, mw, h, w);
        Tensor::from_vec(resized, (1, 1, h, w), &Device::Cpu)
    }

    /// Per-sample mask counts of the current head (for IoU reports).
    pub fn evaluate(&self) -> Result<Vec<MaskCounts>> {
        (0..self.samples.len())
            .map(|i| {
                let logits = self.logits(i, DType::F32)?;
                let (_, _, h, w) = logits.dims4()?;
                Ok(mask_counts(&logits, &self.target(i, h, w)?)?[0])
            })
            .collect()
    }
}

impl TrainTask for UNetTask {
    fn params(&self) -> &ParamStore {
        self.head.params()
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample_loss(&self, index: usize, dtype: DType) -> Result<SampleLoss> {
        let logits = self.logits(index, dtype)?;
        let (_, _, h, w) = logits.dims4()?;
        mask_loss(&logits, &self.target(index, h, w)?)
    }

    fn export(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        self.head.save(&dir.join("head.safetensors"))?;
        let sidecar = serde_json::json!({
            "format": "flmm-head/1",
            "backbone": self.data_name,
            "channel_order": "layer*heads+head",
            "unet": self.head.config(),
        });
        flmm_nn::fsutil::write_atomic(&dir.join("head.json"), serde_json::to_string_pretty(&sidecar)?.as_bytes())?;
        Ok(())
    }
}
