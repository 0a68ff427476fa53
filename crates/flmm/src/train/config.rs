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
}

impl Default for TrainConfig {
    fn default() -> Self {
        let data = BlobConfig::default();
        Self {
            seed: 0,
            head: UNetConfig { in_channels: data.channels, ..UNetConfig::default() },
            data: DataConfig::Blobs(data),
            optim: OptimConfig::default(),
        }
    }
}

/// Where training samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// Synthetic blurred-blob attention stacks and disk masks (`flmm_data::blobs`).
    Blobs(BlobConfig),
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
    #[error("cannot read config {path}: {source}")]
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
        let DataConfig::Blobs(data) = &self.data;
        if data.channels != self.head.in_channels {
            return Err(ConfigError::Invalid(format!(
                "head.in_channels = {} but the data has {} channels",
                self.head.in_channels, data.channels
            )));
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
