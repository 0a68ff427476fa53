//! `UNetHead`: F-LMM's mask head, an mmseg UNet (GroupNorm(1), max-pool down, bilinear+1×1 up) with
//! input normalization, input upsampling, pad-to-multiple and a 1×1 `conv_seg` (spec §3.1).

use crate::HeadError;
use candle_core::{DType, Device, Tensor};
use flmm_nn::params::ParamStore;
use flmm_nn::{conv, init, norm, pool, resize, rng::Rng};
use serde::{Deserialize, Serialize};

/// Key prefix of the U-Net in official F-LMM checkpoints.
pub const CHECKPOINT_PREFIX: &str = "mask_head.";

/// GroupNorm epsilon of mmcv's `ConvModule` norm layer.
const GN_EPS: f64 = 1e-5;

/// Shape of the head. The defaults are F-LMM's; only `in_channels` depends on the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UNetConfig {
    /// Attention channels in (layers × heads, ×2 for coarse+fine backbones).
    pub in_channels: usize,
    /// Channels of the first stage; stage i has `base_channels · 2^i`.
    pub base_channels: usize,
    /// Encoder stages (each after the first halves the resolution).
    pub num_stages: usize,
    /// Divide each channel by its spatial sum before anything else.
    pub normalize_input: bool,
    /// Upsample the input so its longer side is at least this (None: no upsampling).
    pub upsample_input: Option<usize>,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self { in_channels: 1024, base_channels: 64, num_stages: 4, normalize_input: true, upsample_input: Some(64) }
    }
}

impl UNetConfig {
    /// Every parameter name (store-relative) and its shape, in a fixed order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let ch = |stage: usize| self.base_channels << stage;
        let mut conv_module = |name: String, cin: usize, cout: usize, k: usize| {
            out.push((format!("{name}.conv.weight"), vec![cout, cin, k, k]));
            out.push((format!("{name}.gn.weight"), vec![cout]));
            out.push((format!("{name}.gn.bias"), vec![cout]));
        };
        for stage in 0..self.num_stages {
            let block = if stage == 0 { "encoder.0.0".to_string() } else { format!("encoder.{stage}.1") };
            let cin = if stage == 0 { self.in_channels } else { ch(stage - 1) };
            conv_module(format!("{block}.convs.0"), cin, ch(stage), 3);
            conv_module(format!("{block}.convs.1"), ch(stage), ch(stage), 3);
        }
        for i in 0..self.num_stages - 1 {
            let (cin, skip) = (ch(i + 1), ch(i));
            conv_module(format!("decoder.{i}.upsample.interp_upsample.1"), cin, skip, 1);
            conv_module(format!("decoder.{i}.conv_block.convs.0"), 2 * skip, skip, 3);
            conv_module(format!("decoder.{i}.conv_block.convs.1"), skip, skip, 3);
        }
        out.push(("conv_seg.weight".into(), vec![1, self.base_channels, 1, 1]));
        out.push(("conv_seg.bias".into(), vec![1]));
        out
    }

    fn validate(&self) -> Result<(), HeadError> {
        if self.in_channels == 0 || self.base_channels == 0 || self.num_stages == 0 || self.num_stages > 8 {
            return Err(HeadError::InvalidConfig(format!(
                "need in_channels > 0, base_channels > 0 and 1..=8 stages, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The U-Net mask head with its parameters.
pub struct UNetHead {
    config: UNetConfig,
    params: ParamStore,
}

impl UNetHead {
    /// A head initialized as mmseg does: Kaiming-normal (fan_out, relu) convolutions with zero bias,
    /// GroupNorm weight 1 and bias 0. Deterministic from `seed`.
    pub fn new(config: UNetConfig, seed: u64, device: &Device) -> Result<Self, HeadError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let mut params = ParamStore::new();
        for (name, shape) in config.parameter_shapes() {
            let value = if name.ends_with("weight") && shape.len() == 4 {
                init::kaiming_normal_fan_out(&shape, &mut rng, device)?
            } else if name.ends_with("gn.weight") {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                Tensor::zeros(shape, DType::F32, device)?
            };
            params.insert(name, value)?;
        }
        Ok(Self { config, params })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The trainable parameters (store-relative names).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Output size `(H, W)` for an input grid `(h, w)`: the upsampled size (cropping undoes the padding).
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let s = self.upsample_scale(h, w);
        ((h as f64 * s).floor() as usize, (w as f64 * s).floor() as usize)
    }

    fn upsample_scale(&self, h: usize, w: usize) -> f64 {
        match self.config.upsample_input {
            Some(target) => (target as f64 / h.max(w) as f64).max(1.0),
            None => 1.0,
        }
    }

    fn param(&self, name: &str, dtype: DType) -> Result<Tensor, HeadError> {
        let var = self.params.get(name).ok_or_else(|| HeadError::InvalidConfig(format!("no parameter `{name}`")))?;
        Ok(var.as_tensor().to_dtype(dtype)?)
    }

    /// Input normalization and upsampling (the part before the UNet proper), in f32.
    pub fn prepare_input(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        let (_, c, h, w) = x.dims4().map_err(|_| HeadError::InvalidInput(format!("expected [N, C, h, w], got {:?}", x.shape())))?;
        if c != self.config.in_channels {
            return Err(HeadError::InvalidInput(format!("expected {} channels, got {c}", self.config.in_channels)));
        }
        let mut x = x.to_dtype(DType::F32)?;
        if self.config.normalize_input {
            let (lo, hi) = (x.min_all()?.to_scalar::<f32>()?, x.max_all()?.to_scalar::<f32>()?);
            if !(lo >= 0.0 && hi <= 1.0) {
                return Err(HeadError::InvalidInput(format!("attention values must lie in [0, 1], got [{lo}, {hi}]")));
            }
            let sums = x.sum_keepdim((2, 3))?.clamp(1e-12f32, f32::MAX)?;
            x = x.broadcast_div(&sums)?;
        }
        let s = self.upsample_scale(h, w);
        if self.config.upsample_input.is_some() {
            x = resize::resize_bilinear_by(&x, s)?;
        }
        Ok(x)
    }

    /// Mask logits `[N, 1, H, W]` for attention stacks `x: [N, C, h, w]`, computed in `dtype`
    /// (f32 or bf16; normalization statistics stay in f32).
    pub fn forward(&self, x: &Tensor, dtype: DType) -> Result<Tensor, HeadError> {
        let x = self.prepare_input(x)?;
        let (_, _, h, w) = x.dims4()?;
        let multiple = 1usize << (self.config.num_stages - 1);
        let (hp, wp) = (h.div_ceil(multiple) * multiple, w.div_ceil(multiple) * multiple);
        let x = x.pad_with_zeros(2, 0, hp - h)?.pad_with_zeros(3, 0, wp - w)?.to_dtype(dtype)?;
        let mut skips = Vec::with_capacity(self.config.num_stages);
        let mut cur = x;
        for stage in 0..self.config.num_stages {
            let block = if stage == 0 {
                "encoder.0.0".to_string()
            } else {
                cur = pool::max_pool2x2(&cur)?;
                format!("encoder.{stage}.1")
            };
            cur = self.basic_block(&cur, &block, dtype)?;
            skips.push(cur.clone());
        }
        for i in (0..self.config.num_stages - 1).rev() {
            let (sh, sw) = (skips[i].dim(2)?, skips[i].dim(3)?);
            let up = resize::resize_bilinear_to(&cur, sh, sw)?;
            let up = self.conv_module(&up, &format!("decoder.{i}.upsample.interp_upsample.1"), 0, dtype)?;
            let cat = Tensor::cat(&[&skips[i], &up], 1)?;
            cur = self.basic_block(&cat, &format!("decoder.{i}.conv_block"), dtype)?;
        }
        let cropped = cur.narrow(2, 0, h)?.narrow(3, 0, w)?;
        let logits = conv::conv2d(&cropped, &self.param("conv_seg.weight", dtype)?, Some(&self.param("conv_seg.bias", dtype)?), 0)?;
        Ok(logits)
    }

    fn basic_block(&self, x: &Tensor, prefix: &str, dtype: DType) -> Result<Tensor, HeadError> {
        let x = self.conv_module(x, &format!("{prefix}.convs.0"), 1, dtype)?;
        self.conv_module(&x, &format!("{prefix}.convs.1"), 1, dtype)
    }

    /// mmcv `ConvModule`: conv (no bias) → GroupNorm(1) → ReLU.
    fn conv_module(&self, x: &Tensor, prefix: &str, padding: usize, dtype: DType) -> Result<Tensor, HeadError> {
        let y = conv::conv2d(x, &self.param(&format!("{prefix}.conv.weight"), dtype)?, None, padding)?;
        Ok(norm::group_norm_relu(
            &y,
            1,
            &self.param(&format!("{prefix}.gn.weight"), DType::F32)?,
            &self.param(&format!("{prefix}.gn.bias"), DType::F32)?,
            GN_EPS,
        )?)
    }

    /// Loads official-format weights (`mask_head.*` keys) strictly; returns unused keys of the file.
    pub fn load(&self, path: &std::path::Path) -> Result<Vec<String>, HeadError> {
        Ok(self.params.load(path, CHECKPOINT_PREFIX)?)
    }

    /// Saves the weights under the official key names, atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<(), HeadError> {
        Ok(self.params.save(path, CHECKPOINT_PREFIX)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_spec() {
        // Spec §3.1: 7.27M (C=144), 7.40M (384), 7.74M (960), 7.77M (1024), 8.36M (2048).
        for (c, millions) in [(144, 7.27), (384, 7.40), (960, 7.74), (1024, 7.77), (2048, 8.36)] {
            let cfg = UNetConfig { in_channels: c, ..Default::default() };
            let n: usize = cfg.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert!((n as f64 / 1e6 - millions).abs() < 0.006, "C={c}: {n}");
        }
    }

    #[test]
    fn output_covers_the_upsampled_grid() {
        let cfg = UNetConfig { in_channels: 3, base_channels: 4, ..Default::default() };
        let head = UNetHead::new(cfg, 0, &Device::Cpu).unwrap();
        assert_eq!(head.output_size(13, 17), (48, 64));
        let x = Tensor::full(0.5f32, (2, 3, 13, 17), &Device::Cpu).unwrap();
        assert_eq!(head.forward(&x, DType::F32).unwrap().dims(), &[2, 1, 48, 64]);
    }

    #[test]
    fn rejects_out_of_range_and_wrong_channels() {
        let cfg = UNetConfig { in_channels: 3, base_channels: 4, ..Default::default() };
        let head = UNetHead::new(cfg, 0, &Device::Cpu).unwrap();
        let x = Tensor::full(1.5f32, (1, 3, 8, 8), &Device::Cpu).unwrap();
        assert!(head.forward(&x, DType::F32).unwrap_err().to_string().contains("[0, 1]"));
        let x = Tensor::full(0.5f32, (1, 4, 8, 8), &Device::Cpu).unwrap();
        assert!(head.forward(&x, DType::F32).unwrap_err().to_string().contains("expected 3 channels"));
    }
}
