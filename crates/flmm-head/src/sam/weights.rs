//! SAM checkpoint tensors by key: official `.pth` files (PyTorch zip format), safetensors conversions,
//! or an in-memory map (tests). Every lookup checks the shape and names the key and file on failure.
//! A safetensors file's string metadata (`__metadata__`) is kept too: it carries what shapes cannot
//! tell, such as the mask decoder's head count of a non-standard SAM.

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
    metadata: HashMap<String, String>,
    generator: Option<WeightGenerator>,
    source: PathBuf,
}

impl SamWeights {
    /// Reads `path`: `.safetensors`, or a `torch.save` zip archive (`.pth` / `.pt`). A legacy (non-zip)
    /// pickle is refused with the command that converts it.
    pub fn load(path: &Path) -> Result<Self, HeadError> {
        let invalid = |e: &dyn std::fmt::Display| HeadError::Checkpoint { path: path.to_path_buf(), message: format!("not a valid safetensors file: {e}") };
        let (tensors, metadata) = if path.extension().is_some_and(|e| e == "safetensors") {
            let metadata = safetensors_metadata(path).map_err(|e| invalid(&e))?;
            (candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| invalid(&e))?, metadata)
        } else {
            (crate::torch_file::read_torch_zip(path, None)?, HashMap::new())
        };
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() { t.to_dtype(DType::F32)? } else { t };
                Ok((k, t))
            })
            .collect::<Result<_, HeadError>>()?;
        Ok(Self { metadata, ..Self::from_map(tensors, path) })
    }

    /// Wraps tensors already in memory (dtypes kept); `source` names them in errors.
    pub fn from_map(tensors: HashMap<String, Tensor>, source: &Path) -> Self {
        Self { tensors, metadata: HashMap::new(), generator: None, source: source.to_path_buf() }
    }

    /// Synthetic weights: every key exists and `generator(key, shape)` makes its tensor. Shape-based
    /// detection needs real tensors, so build models from these with explicit configurations.
    pub fn synthetic(generator: WeightGenerator) -> Self {
        Self { tensors: HashMap::new(), metadata: HashMap::new(), generator: Some(generator), source: PathBuf::from("<synthetic weights>") }
    }

    /// Where the tensors came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The file's metadata entry `key` (safetensors `__metadata__`), if any.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
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

/// The `__metadata__` strings of a safetensors file: its header is an 8-byte little-endian length and
/// that many bytes of JSON.
fn safetensors_metadata(path: &Path) -> std::io::Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > file.metadata()?.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("header of {len} bytes in a shorter file")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)?;
    let header: serde_json::Value = serde_json::from_slice(&header)?;
    Ok(match header.get("__metadata__").and_then(|m| m.as_object()) {
        Some(m) => m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect(),
        None => HashMap::new(),
    })
}
