//! F-LMM's whole trainable head: the U-Net on the attention stacks, `text_proj` on the layer-weighted
//! phrase hidden states, and the SAM refiner prompted with both (spec §2.1, §3). One safetensors file
//! holds everything under the official keys: `mask_head.*`, `sam.model.prompt_encoder.*`,
//! `sam.model.mask_decoder.*`, `text_proj.{weight,bias}`, `text_layer_weights`. SAM's image encoder comes
//! from its own checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use flmm_nn::params::ParamStore;

use crate::error::HeadError;
use crate::sam::preprocess::SamGeometry;
use crate::sam::refiner::refine;
use crate::sam::Sam;
use crate::unet::{UNetConfig, UNetHead};

/// Key prefix of SAM's trainable tensors inside a head file.
pub const SAM_PREFIX: &str = "sam.model.";

/// SAM's positional-encoding buffer (saved with heads, not trained).
const GAUSSIAN: &str = crate::sam::model::GAUSSIAN_KEY;

/// U-Net + text projection + SAM refiner.
pub struct GroundingHead {
    /// The U-Net mask head.
    pub unet: UNetHead,
    /// SAM (frozen image encoder; trainable prompt encoder and mask decoder).
    pub sam: Sam,
    /// `text_proj.weight [C_sam, d]`, `text_proj.bias [C_sam]`, `text_layer_weights [L]`.
    pub text: ParamStore,
}

impl GroundingHead {
    /// A fresh head: the U-Net initialized as mmseg does, `text_proj` as `torch.nn.Linear`
    /// (uniform ±1/√d for weight and bias), `text_layer_weights` ones — as F-LMM starts training.
    pub fn new(unet: UNetConfig, sam: Sam, layers: usize, hidden: usize, seed: u64, device: &Device) -> Result<Self, HeadError> {
        let unet = UNetHead::new(unet, seed, device)?;
        let dim = sam.mask_decoder.dim();
        let mut rng = flmm_nn::rng::Rng::new(seed.wrapping_add(1));
        let bound = 1.0 / (hidden as f64).sqrt();
        let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32).collect() };
        let mut text = ParamStore::new();
        text.insert("text_proj.weight", Tensor::from_vec(uniform(dim * hidden), (dim, hidden), device)?)?;
        text.insert("text_proj.bias", Tensor::from_vec(uniform(dim), dim, device)?)?;
        text.insert("text_layer_weights", Tensor::ones(layers, DType::F32, device)?)?;
        Ok(Self { unet, sam, text })
    }

    /// Loads a head file (all three parts, strictly); returns the file's keys that no part uses.
    pub fn load(&self, path: &Path) -> Result<Vec<String>, HeadError> {
        let file = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| HeadError::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
        self.assign(&file, path)
    }

    /// Like [`GroundingHead::load`] from a head file already in memory; `path` names it in errors.
    pub fn assign(&self, file: &HashMap<String, Tensor>, path: &Path) -> Result<Vec<String>, HeadError> {
        let unused_unet = self.unet.params().assign_from(file, path, crate::unet::CHECKPOINT_PREFIX)?;
        self.sam.params.assign_from(file, path, SAM_PREFIX)?;
        self.text.assign_from(file, path, "")?;
        if let Some(g) = file.get(&format!("{SAM_PREFIX}{GAUSSIAN}")) {
            self.sam.prompt_encoder.set_gaussian(g).map_err(|e| HeadError::Checkpoint { path: path.to_path_buf(), message: format!("{SAM_PREFIX}{GAUSSIAN}: {e}") })?;
        }
        let used = |k: &String| k.starts_with(SAM_PREFIX) || self.text.get(k).is_some();
        Ok(unused_unet.into_iter().filter(|k| !used(k)).collect())
    }

    /// Writes all trainable tensors (plus SAM's positional-encoding buffer) to one safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), HeadError> {
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for (k, v) in self.unet.params().tensors() {
            all.insert(format!("{}{k}", crate::unet::CHECKPOINT_PREFIX), v);
        }
        for (k, v) in self.sam.params.tensors() {
            all.insert(format!("{SAM_PREFIX}{k}"), v);
        }
        all.insert(format!("{SAM_PREFIX}{GAUSSIAN}"), self.sam.prompt_encoder.gaussian().clone());
        all.extend(self.text.tensors());
        Ok(flmm_nn::params::save_tensors(&all, path)?)
    }

    /// Every trainable tensor under its head-file key, sharing the modules' variables (for one optimizer).
    pub fn trainable(&self) -> ParamStore {
        let mut all = ParamStore::new();
        for (k, v) in self.unet.params().iter() {
            all.adopt(format!("{}{k}", crate::unet::CHECKPOINT_PREFIX), v.clone());
        }
        for (k, v) in self.sam.params.iter() {
            all.adopt(format!("{SAM_PREFIX}{k}"), v.clone());
        }
        for (k, v) in self.text.iter() {
            all.adopt(k.clone(), v.clone());
        }
        all
    }

    /// The text tokens of one phrase: `text_proj(Σ_l softmax(w)_l · hidden[:, l])`, hidden `[n_k, L, d]`
    /// → `[n_k, C_sam]`.
    pub fn text_tokens(&self, hidden: &Tensor) -> Result<Tensor, HeadError> {
        let w = self.text.get("text_layer_weights").expect("registered").as_tensor();
        let (_, layers, _) = hidden.dims3()?;
        if layers != w.dim(0)? {
            return Err(HeadError::InvalidInput(format!("hidden states of {layers} layers for {} text_layer_weights", w.dim(0)?)));
        }
        let weights = flmm_nn::softmax::softmax_last_dim(&w.unsqueeze(0)?)?; // [1, L]
        let mixed = weights.unsqueeze(0)?.broadcast_matmul(&hidden.to_dtype(w.dtype())?)?.squeeze(1)?; // [n_k, d]
        let proj_w = self.text.get("text_proj.weight").expect("registered").as_tensor();
        let proj_b = self.text.get("text_proj.bias").expect("registered").as_tensor();
        Ok(mixed.matmul(&proj_w.t()?)?.broadcast_add(proj_b)?)
    }

    /// U-Net logits `[N, h', w']` for attention stacks `[N, C, h, w]`.
    pub fn unet_logits(&self, attention: &Tensor) -> Result<Tensor, HeadError> {
        Ok(self.unet.forward(attention, DType::F32)?.squeeze(1)?)
    }

    /// Refined logits `[N, H, W]` at the original resolution: SAM prompted with the (cropped) U-Net
    /// logits and each phrase's text tokens.
    pub fn refine(&self, embedding: &Tensor, geometry: &SamGeometry, unet_logits: &Tensor, text_tokens: &[Tensor]) -> Result<Tensor, HeadError> {
        refine(&self.sam, embedding, geometry, unet_logits, Some(text_tokens))
    }
}
