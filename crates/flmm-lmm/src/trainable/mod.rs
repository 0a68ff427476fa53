//! A LLaVA-1.5 model whose every weight is a trainable variable: flmm pretrains its own tiny
//! vision-language model for the toy world with this, then saves it as a Hugging Face model directory
//! that the frozen engine ([`crate::llava::LlavaModel`]) loads like any other.
//!
//! The forward pass uses only ops with correct gradients (`flmm-nn`'s LayerNorm and softmax instead of
//! candle's fused ones; RMSNorm, RoPE, activations and embeddings from differentiable primitives) and
//! computes what the frozen engine computes (tested against it).
//!
//! * [`init`]: parameter names (transformers' keys) and initialization.
//! * [`forward`]: vision tower, projector, decoder and the next-token loss.
//! * [`conversation`]: chat turns → token ids and targets.

pub mod conversation;
pub mod forward;
pub mod init;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use flmm_nn::params::ParamStore;

use crate::config::{Family, LlavaConfig};
use crate::error::{LmmError, Result};
use crate::model_dir::ModelDir;

pub use conversation::tokenize_conversation;
pub use forward::{Conversation, SequenceLoss};

/// Key of the CLIP tower's final LayerNorm: unused by LLaVA (it reads a hidden state before it) but part
/// of a transformers checkpoint, so it is written with identity values and never trained.
const POST_LAYERNORM: &str = "vision_tower.vision_model.post_layernorm";

/// A LLaVA-1.5 model with trainable weights under transformers' key names.
pub struct TrainableLlava {
    config: LlavaConfig,
    params: ParamStore,
}

impl TrainableLlava {
    /// A freshly initialized model (seeded, deterministic) with `dtype` master weights (f32, or f64 for
    /// gradient checks).
    pub fn init(config: &LlavaConfig, seed: u64, dtype: DType) -> Result<Self> {
        check_supported(config, Path::new("<new model>"))?;
        let params = init::initial_parameters(config, seed, dtype)?;
        Ok(Self { config: config.clone(), params })
    }

    /// Loads the weights of the model directory `root` as f32 variables.
    pub fn load(root: &Path) -> Result<Self> {
        let dir = ModelDir::open(root)?;
        let config = LlavaConfig::from_file(&dir.config)?;
        check_supported(&config, root)?;
        let weights = dir.weights(DType::F32, &Device::Cpu)?;
        let mut params = ParamStore::new();
        for (name, shape) in init::parameter_shapes(&config) {
            params.insert(name.clone(), weights.get(&name, &shape)?)?;
        }
        Ok(Self { config, params })
    }

    /// The configuration.
    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }

    /// The trainable parameters (transformers' key names).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Current parameter values by key.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params.tensors()
    }

    /// Writes `config.json` and `model.safetensors` (weights stored as `dtype`) into `dir`, atomically
    /// per file. Tokenizer and processor files are the caller's.
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        let io = |e: std::io::Error| LmmError::BadFile { path: dir.to_path_buf(), message: e.to_string() };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tensors = HashMap::new();
        for (k, v) in self.params.iter() {
            tensors.insert(k.clone(), v.as_tensor().to_dtype(dtype)?);
        }
        let d = self.config.vision.hidden_size;
        tensors.insert(format!("{POST_LAYERNORM}.weight"), Tensor::ones(d, dtype, &Device::Cpu)?);
        tensors.insert(format!("{POST_LAYERNORM}.bias"), Tensor::zeros(d, dtype, &Device::Cpu)?);
        let weights = dir.join("model.safetensors");
        flmm_nn::params::save_tensors(&tensors, &weights)
            .map_err(|e| LmmError::BadFile { path: weights.clone(), message: e.to_string() })?;
        let mut config = self.config.clone();
        config.torch_dtype = Some(dtype_name(dtype).into());
        let text = serde_json::to_string_pretty(&config.to_json()).expect("a JSON value serializes");
        flmm_nn::fsutil::write_atomic(&dir.join("config.json"), text.as_bytes()).map_err(io)?;
        Ok(())
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Training covers the LLaVA-1.5 layout with a LLaMA decoder (no sliding window) and the CLS token
/// dropped, which is what the toy model uses.
fn check_supported(config: &LlavaConfig, dir: &Path) -> Result<()> {
    let problem = if config.family != Family::Llava15 {
        Some("only LLaVA-1.5 models can be trained")
    } else if config.text.sliding_window.is_some() {
        Some("sliding-window attention is not supported in training")
    } else if !config.drop_cls {
        Some("only vision_feature_select_strategy \"default\" is supported in training")
    } else {
        None
    };
    match problem {
        Some(message) => Err(LmmError::BadFile { path: dir.to_path_buf(), message: message.into() }),
        None => Ok(()),
    }
}
