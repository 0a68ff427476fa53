//! The TOML training configuration: one file per experiment, every field defaulted.

use flmm_data::blobs::BlobConfig;
use flmm_head::UNetConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed for parameter init and data order.
    pub seed: u64,
    /// The U-Net mask head.
    pub head: UNetConfig,
    /// The training data.
    pub data: DataConfig,
    /// Optimizer, schedule and checkpointing.
    pub optim: OptimConfig,
    /// The frozen backbone (`data.kind = "flmm"` only).
    pub model: Option<ModelConfig>,
    /// SAM for the refiner (`data.kind = "flmm"` only).
    pub sam: Option<SamConfig>,
}

/// `[model]`: the frozen multimodal model. Paths are relative to the working directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Hugging Face model directory.
    pub dir: std::path::PathBuf,
    /// Backbone compute dtype: f32, bf16 (F-LMM's) or f16.
    #[serde(default = "default_model_dtype")]
    pub dtype: String,
    /// cpu or cuda:N.
    #[serde(default = "default_device")]
    pub device: String,
    /// Chat template (default: the family's: vicuna or mistral).
    pub template: Option<String>,
    /// Image prompt inside the template (default F-LMM's "<image>\nPlease give me a description of the image.").
    pub prompt: Option<String>,
}

/// `[sam]`: the refiner's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamConfig {
    /// `sam_vit_l_0b3195.pth` in every F-LMM config.
    pub checkpoint: std::path::PathBuf,
    /// Image-embedding cache directory (strongly advised: the encoder is frozen).
    pub cache: Option<std::path::PathBuf>,
}

fn default_model_dtype() -> String {
    "f32".into()
}

fn default_device() -> String {
    "cpu".into()
}

/// `data.kind = "flmm"`: F-LMM's training mix (spec §1.1) in the `data/coco` layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlmmDataConfig {
    /// The data root (`data/coco`: refcoco*/, train2014/, train2017/, annotations/).
    pub root: std::path::PathBuf,
    /// Which sets to concatenate: any of png, refcoco, refcoco+, refcocog (all four by default, as F-LMM).
    #[serde(default = "default_datasets")]
    pub datasets: Vec<String>,
    /// Seed of RefCOCO's `text_mode = random` (one sentence per ref, chosen once).
    #[serde(default)]
    pub text_seed: u64,
}

fn default_datasets() -> Vec<String> {
    ["png", "refcoco", "refcoco+", "refcocog"].map(String::from).to_vec()
}

impl Default for TrainConfig {
    fn default() -> Self {
        let data = BlobConfig::default();
        Self {
            seed: 0,
            head: UNetConfig { in_channels: data.channels, ..UNetConfig::default() },
            data: DataConfig::Blobs(data),
            optim: OptimConfig::default(),
            model: None,
            sam: None,
        }
    }
}

/// Where training samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// Synthetic blurred-blob attention stacks and disk masks (`flmm_data::blobs`).
    Blobs(BlobConfig),
    /// F-LMM's real training mix: PNG + RefCOCO + RefCOCO+ + RefCOCOg through a frozen backbone.
    Flmm(FlmmDataConfig),
}

/// Numeric type of the forward/backward pass (master weights and optimizer state stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDType {
    /// 32-bit float.
    F32,
    /// bfloat16, as F-LMM's AMP/DeepSpeed runs.
    Bf16,
}

impl ComputeDType {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Optimizer, schedule and checkpointing; defaults are F-LMM's (spec §1) except the epoch count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Decoupled weight decay on every trainable parameter.
    pub weight_decay: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Passes over the data.
    pub epochs: u64,
    /// Samples per optimizer step (gradient accumulation; F-LMM uses 1 sample per GPU).
    pub accumulate: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Fraction of steps spent in linear warm-up.
    pub warmup_fraction: f64,
    /// Warm-up start factor.
    pub start_factor: f64,
    /// Compute dtype.
    pub dtype: ComputeDType,
    /// Write a checkpoint every this many optimizer steps (and at the end).
    pub checkpoint_every: u64,
    /// How many checkpoints to keep.
    pub keep_checkpoints: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            epochs: 8,
            accumulate: 1,
            max_grad_norm: 1.0,
            warmup_fraction: 0.03,
            start_factor: 1e-5,
            dtype: ComputeDType::F32,
            checkpoint_every: 500,
            keep_checkpoints: 1,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// Values that contradict each other.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl TrainConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.data {
            DataConfig::Blobs(data) => {
                if data.channels != self.head.in_channels {
                    return Err(ConfigError::Invalid(format!(
                        "head.in_channels = {} but the data has {} channels",
                        self.head.in_channels, data.channels
                    )));
                }
            }
            DataConfig::Flmm(data) => {
                if self.model.is_none() || self.sam.is_none() {
                    return Err(ConfigError::Invalid("data.kind = \"flmm\" needs a [model] dir and a [sam] checkpoint".into()));
                }
                let known = ["png", "refcoco", "refcoco+", "refcocog"];
                if data.datasets.is_empty() || data.datasets.iter().any(|d| !known.contains(&d.as_str())) {
                    return Err(ConfigError::Invalid(format!("data.datasets {:?}: choose from {known:?}", data.datasets)));
                }
            }
        }
        let o = &self.optim;
        if o.accumulate == 0 || o.epochs == 0 || o.checkpoint_every == 0 || o.keep_checkpoints == 0 {
            return Err(ConfigError::Invalid("optim.accumulate, epochs, checkpoint_every and keep_checkpoints must be ≥ 1".into()));
        }
        if !(o.lr > 0.0 && o.lr.is_finite() && (0.0..1.0).contains(&o.warmup_fraction)) {
            return Err(ConfigError::Invalid(format!("need lr > 0 and 0 ≤ warmup_fraction < 1, got {} and {}", o.lr, o.warmup_fraction)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_toml_fills_defaults_and_rejects_unknown_fields() {
        let cfg: TrainConfig = toml::from_str("[optim]\nlr = 0.001\n").unwrap();
        assert_eq!(cfg.optim.lr, 0.001);
        assert_eq!(cfg.optim.weight_decay, 0.01);
        cfg.validate().unwrap();
        let err = toml::from_str::<TrainConfig>("[optim]\nlearning_rate = 0.001\n").unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn channel_mismatch_is_reported() {
        let mut cfg = TrainConfig::default();
        cfg.head.in_channels = 7;
        assert!(cfg.validate().unwrap_err().to_string().contains("in_channels = 7"));
    }
}
