//! SAM checkpoint tensors by key: official `.pth` files (PyTorch zip format), safetensors conversions,
//! or an in-memory map (tests). Every lookup checks the shape and names the key and file on failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::HeadError;

/// Makes the tensor of a key with a shape (synthetic weights for tests and benchmarks).
pub type WeightGenerator = Box<dyn Fn(&str, &[usize]) -> Tensor>;

/// All tensors of a SAM / MobileSAM checkpoint (f32 on the CPU when read from a file), or a generator
/// that makes any requested tensor.
pub struct SamWeights {
    tensors: HashMap<String, Tensor>,
    generator: Option<WeightGenerator>,
    source: PathBuf,
}

impl SamWeights {
    /// Reads `path`: `.safetensors`, or a `torch.save` zip archive (`.pth` / `.pt`). A legacy (non-zip)
    /// pickle is refused with the command that converts it.
    pub fn load(path: &Path) -> Result<Self, HeadError> {
        let tensors = if path.extension().is_some_and(|e| e == "safetensors") {
            candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| HeadError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?
        } else {
            crate::torch_file::read_torch_zip(path, None)?
        };
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() { t.to_dtype(DType::F32)? } else { t };
                Ok((k, t))
            })
            .collect::<Result<_, HeadError>>()?;
        Ok(Self::from_map(tensors, path))
    }

    /// Wraps tensors already in memory (dtypes kept); `source` names them in errors.
    pub fn from_map(tensors: HashMap<String, Tensor>, source: &Path) -> Self {
        Self { tensors, generator: None, source: source.to_path_buf() }
    }

    /// Synthetic weights: every key exists and `generator(key, shape)` makes its tensor. Shape-based
    /// detection needs real tensors, so build models from these with explicit configurations.
    pub fn synthetic(generator: WeightGenerator) -> Self {
        Self { tensors: HashMap::new(), generator: Some(generator), source: PathBuf::from("<synthetic weights>") }
    }

    /// Where the tensors came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The shape of `key`, if present.
    pub fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.dims().to_vec())
    }

    /// All keys.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// The tensor `key`, which must have `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor, HeadError> {
        if let Some(generate) = &self.generator {
            return Ok(generate(key, shape));
        }
        let t = self.tensors.get(key).ok_or_else(|| HeadError::Checkpoint {
            path: self.source.clone(),
            message: format!("missing key {key} (expected shape {shape:?})"),
        })?;
        if t.dims() != shape {
            return Err(HeadError::Checkpoint {
                path: self.source.clone(),
                message: format!("key {key} has shape {:?}, expected {shape:?}", t.dims()),
            });
        }
        Ok(t.clone())
    }
}
