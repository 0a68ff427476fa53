//! A Hugging Face layout model directory: finds its files, says clearly which are missing, and reads
//! weights by key with shape checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{LmmError, Result};

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub root: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The safetensors files holding the weights (one, or the shards named by the index).
    pub weight_files: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `preprocessor_config.json`.
    pub preprocessor: PathBuf,
}

impl ModelDir {
    /// Checks that `root` holds a config, safetensors weights (single file or sharded with
    /// `model.safetensors.index.json`), `tokenizer.json` and `preprocessor_config.json`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(LmmError::BadFile {
                path: root.to_path_buf(),
                message: "is not a directory; expected a Hugging Face model directory \
                          (config.json, *.safetensors, tokenizer.json, preprocessor_config.json)"
                    .into(),
            });
        }
        let require = |file: &str, why: &str| -> Result<PathBuf> {
            let path = root.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(LmmError::MissingFile { dir: root.to_path_buf(), file: file.into(), why: why.into() })
            }
        };
        let config = require("config.json", "the model configuration")?;
        let weight_files = find_weight_files(root)?;
        let tokenizer = require("tokenizer.json", "the fast tokenizer; convert a sentencepiece tokenizer.model with transformers' AutoTokenizer(...).save_pretrained")?;
        let preprocessor = require("preprocessor_config.json", "the image processor settings")?;
        Ok(Self { root: root.to_path_buf(), config, weight_files, tokenizer, preprocessor })
    }

    /// Memory-maps the weight files.
    pub fn weights(&self, dtype: DType, device: &Device) -> Result<Weights> {
        Weights::open(&self.weight_files, &self.root, dtype, device)
    }
}

fn find_weight_files(root: &Path) -> Result<Vec<PathBuf>> {
    let index = root.join("model.safetensors.index.json");
    if index.is_file() {
        let bad = |message: String| LmmError::BadFile { path: index.clone(), message };
        let text = std::fs::read_to_string(&index).map_err(|e| bad(format!("cannot read: {e}")))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid json: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no \"weight_map\" object".into()))?;
        let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let mut files = Vec::new();
        for shard in shards {
            let path = root.join(shard);
            if !path.is_file() {
                return Err(LmmError::MissingFile {
                    dir: root.to_path_buf(),
                    file: shard.into(),
                    why: "a weight shard listed in model.safetensors.index.json".into(),
                });
            }
            files.push(path);
        }
        return Ok(files);
    }
    let single = root.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let why = if root.join("pytorch_model.bin").is_file() || root.join("pytorch_model.bin.index.json").is_file() {
        "weights in safetensors format; this directory has only pytorch_model.bin — convert it with \
         transformers' save_pretrained(..., safe_serialization=True)"
    } else {
        "the weights (model.safetensors, or shards with model.safetensors.index.json)"
    };
    Err(LmmError::MissingFile { dir: root.to_path_buf(), file: "model.safetensors".into(), why: why.into() })
}

/// Memory-mapped weights, read by key, converted to one dtype on one device.
pub struct Weights {
    st: MmapedSafetensors,
    keys: BTreeSet<String>,
    dir: PathBuf,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Memory-maps safetensors `files`; `dir` names the model in error messages.
    pub fn open(files: &[PathBuf], dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        // SAFETY: the files are mapped read-only; flmm never writes into a model directory while it runs.
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| LmmError::BadFile {
            path: dir.to_path_buf(),
            message: format!("cannot read the safetensors weights: {e}"),
        })?;
        let keys = st.tensors().into_iter().map(|(k, _)| k).collect();
        Ok(Weights { st, keys, dir: dir.to_path_buf(), dtype, device: device.clone() })
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device tensors are loaded to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Total number of scalars over all tensors.
    pub fn parameter_count(&self) -> usize {
        self.st.tensors().iter().map(|(_, v)| v.shape().iter().product::<usize>()).sum()
    }

    /// The dtype tensors are stored in (of the first tensor).
    pub fn stored_dtype(&self) -> Option<String> {
        self.st.tensors().first().map(|(_, v)| format!("{:?}", v.dtype()).to_lowercase())
    }

    /// Loads `key`, checks its shape, converts it to the compute dtype.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let err = |message: String| LmmError::Weight { dir: self.dir.clone(), key: key.into(), message };
        if !self.contains(key) {
            return Err(err("missing from the safetensors files".into()));
        }
        let t = self.st.load(key, &self.device).map_err(|e| err(e.to_string()))?;
        if t.dims() != shape {
            return Err(err(format!("shape {:?}, expected {:?}", t.dims(), shape)));
        }
        Ok(t.to_dtype(self.dtype)?)
    }

    /// Loads a `[out, in]` linear layer `prefix.weight` (+ `prefix.bias` when `bias`).
    pub fn linear(&self, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<candle_nn::Linear> {
        let w = self.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let b = if bias { Some(self.get(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        Ok(candle_nn::Linear::new(w, b))
    }

    /// Loads a LayerNorm `prefix.{weight,bias}`.
    pub fn layer_norm(&self, prefix: &str, dim: usize, eps: f64) -> Result<candle_nn::LayerNorm> {
        let w = self.get(&format!("{prefix}.weight"), &[dim])?;
        let b = self.get(&format!("{prefix}.bias"), &[dim])?;
        Ok(candle_nn::LayerNorm::new(w, b, eps))
    }
}
