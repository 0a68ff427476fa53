//! `flmm import`: converts a released F-LMM checkpoint (a `torch.save` of the trainable parameters:
//! `mask_head.*`, `sam.model.prompt_encoder.*`, `sam.model.mask_decoder.*`, `text_proj.*`,
//! `text_layer_weights`) into flmm's head format — one safetensors file with the same key names plus a
//! JSON sidecar — checking every shape against the chosen backbone. Unknown keys are reported, not fatal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flmm_head::torch_file::read_torch_zip;
use candle_core::{DType, Device, Tensor};
use flmm_head::sam::image_encoder::VitConfig;
use flmm_head::sam::mask_decoder::MaskDecoderConfig;
use flmm_head::sam::{EncoderConfig, Sam, SamWeights};
use flmm_head::UNetConfig;
use serde::Serialize;

/// What the head attached to a backbone looks like.
#[derive(Debug, Clone, Serialize)]
pub struct HeadShape {
    /// Decoder layers L (`text_layer_weights`).
    pub layers: usize,
    /// Decoder width d (`text_proj` input).
    pub hidden_size: usize,
    /// U-Net input channels (L·H, ×2 for coarse + fine backbones).
    pub attention_channels: usize,
    /// U-Net base width (64 in every released head).
    pub unet_base_channels: usize,
    /// SAM prompt width (256 in every SAM).
    pub sam_dim: usize,
    /// SAM mask-decoder MLP width (2048).
    pub sam_mlp_dim: usize,
}

impl HeadShape {
    /// The released heads' shape for a backbone of `layers × heads`, width `hidden`.
    pub fn official(layers: usize, hidden_size: usize, attention_channels: usize) -> Self {
        Self { layers, hidden_size, attention_channels, unet_base_channels: 64, sam_dim: 256, sam_mlp_dim: 2048 }
    }

    /// Every expected key with its shape, in a stable order.
    pub fn expected_keys(&self) -> anyhow::Result<BTreeMap<String, Vec<usize>>> {
        let mut keys = BTreeMap::new();
        let unet = UNetConfig { in_channels: self.attention_channels, base_channels: self.unet_base_channels, ..Default::default() };
        for (k, s) in unet.parameter_shapes() {
            keys.insert(format!("{}{k}", flmm_head::unet::CHECKPOINT_PREFIX), s);
        }
        // The trainable SAM tensors, read off a SAM built from zero weights (the image encoder is not in a head).
        let zeros = SamWeights::synthetic(Box::new(|_: &str, shape: &[usize]| Tensor::zeros(shape, DType::F32, &Device::Cpu).expect("zeros")));
        let vit = VitConfig { img_size: 64, patch_size: 16, embed_dim: 16, depth: 1, heads: 1, global_blocks: vec![0], window: 0, out_chans: self.sam_dim };
        let decoder = MaskDecoderConfig { dim: self.sam_dim, mlp_dim: self.sam_mlp_dim, ..Default::default() };
        let sam = Sam::build(&zeros, &EncoderConfig::Vit(vit), decoder)?;
        for (k, v) in sam.params.iter() {
            keys.insert(format!("sam.model.{k}"), v.dims().to_vec());
        }
        keys.insert("sam.model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix".into(), vec![2, self.sam_dim / 2]);
        keys.insert("text_proj.weight".into(), vec![self.sam_dim, self.hidden_size]);
        keys.insert("text_proj.bias".into(), vec![self.sam_dim]);
        keys.insert("text_layer_weights".into(), vec![self.layers]);
        Ok(keys)
    }
}

/// The sidecar written next to an imported head.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// The converted file.
    pub source: String,
    /// The head's shape (backbone-dependent sizes).
    pub shape: HeadShape,
    /// Backbone directory the shapes came from, if any.
    pub backbone: Option<String>,
    /// Channel order of the attention stacks the U-Net expects.
    pub channel_order: String,
    /// Keys imported.
    pub imported: usize,
    /// Keys in the source that a head does not have (skipped).
    pub unknown_keys: Vec<String>,
}

/// Reads a `torch.save` file's tensors (unwrapping a top-level `state_dict` when present).
fn read_pth(path: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let flat = read_torch_zip(path, None)?;
    if flat.keys().any(|k| k.starts_with("mask_head.")) {
        return Ok(flat);
    }
    match read_torch_zip(path, Some("state_dict")) {
        Ok(nested) if !nested.is_empty() => Ok(nested),
        _ => Ok(flat),
    }
}

/// Converts `source` to `out` (+ `out` with a `.json` extension). Missing or mis-shaped keys are errors
/// listing all of them; unknown keys are returned in the report.
pub fn import(source: &Path, shape: HeadShape, backbone: Option<&Path>, channel_order: String, out: &Path) -> anyhow::Result<ImportReport> {
    let tensors = read_pth(source)?;
    let expected = shape.expected_keys()?;
    let mut problems = Vec::new();
    let mut converted = HashMap::new();
    for (key, want) in &expected {
        match tensors.get(key) {
            None => problems.push(format!("missing {key} {want:?}")),
            Some(t) if t.dims() != want.as_slice() => problems.push(format!("{key} has shape {:?}, expected {want:?}", t.dims())),
            Some(t) => {
                let t = t.to_dtype(DType::F32)?;
                if !flmm_nn::params::all_finite(&t) {
                    problems.push(format!("{key} contains NaN or infinite values"));
                }
                converted.insert(key.clone(), t);
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} does not fit this backbone's head (L = {}, d = {}, {} attention channels):\n  {}",
            source.display(),
            shape.layers,
            shape.hidden_size,
            shape.attention_channels,
            problems.join("\n  ")
        );
    }
    let mut unknown_keys: Vec<String> = tensors.keys().filter(|k| !expected.contains_key(*k)).cloned().collect();
    unknown_keys.sort();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    flmm_nn::params::save_tensors(&converted, out)?;
    let report = ImportReport {
        source: source.display().to_string(),
        shape,
        backbone: backbone.map(|b| b.display().to_string()),
        channel_order,
        imported: converted.len(),
        unknown_keys,
    };
    flmm_nn::fsutil::write_atomic(&sidecar(out), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

/// `head.safetensors` → `head.json`.
pub fn sidecar(out: &Path) -> PathBuf {
    out.with_extension("json")
}
