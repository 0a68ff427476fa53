//! Named trainable parameters and their safetensors files.

use candle_core::{DType, Device, Shape, Tensor, Var};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Why a parameter file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// The file could not be read or parsed.
    #[error("cannot read parameters from {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: candle_core::Error,
    },
    /// The file could not be written.
    #[error("cannot write parameters to {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A parameter the model needs is absent.
    #[error("{path}: missing key `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The parameter name.
        key: String,
        /// Its expected shape.
        expected: Shape,
    },
    /// A parameter has the wrong shape.
    #[error("{path}: key `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The parameter name.
        key: String,
        /// Shape in the file.
        found: Shape,
        /// Shape the model needs.
        expected: Shape,
    },
    /// A value is NaN or infinite.
    #[error("{path}: key `{key}` contains non-finite values")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The parameter name.
        key: String,
    },
}

impl ParamsError {
    /// Wraps a tensor error while handling `path`.
    pub fn from_tensor(path: &Path) -> impl Fn(candle_core::Error) -> ParamsError + '_ {
        move |source| ParamsError::Read { path: path.to_path_buf(), source }
    }
}

/// Trainable parameters by name, iterated in sorted name order (the order the optimizer uses).
#[derive(Default, Clone)]
pub struct ParamStore {
    vars: BTreeMap<String, Var>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `value` under `name` and returns its variable. Master weights are f32; f64 values stay
    /// f64 (finite-difference gradient checks run in f64).
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor) -> candle_core::Result<Var> {
        let dtype = if value.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
        let var = Var::from_tensor(&value.to_dtype(dtype)?)?;
        self.vars.insert(name.into(), var.clone());
        Ok(var)
    }

    /// Registers an existing variable under `name` (shared, not copied): one store can then hold the
    /// parameters of several modules for one optimizer.
    pub fn adopt(&mut self, name: impl Into<String>, var: Var) {
        self.vars.insert(name.into(), var);
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Names in sorted order.
    pub fn names(&self) -> Vec<String> {
        self.vars.keys().cloned().collect()
    }

    /// Variables in sorted name order.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    /// `(name, variable)` pairs in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Total number of scalars.
    pub fn parameter_count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Current values by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }

    /// Writes all parameters to a safetensors file atomically, with an optional key `prefix`.
    pub fn save(&self, path: &Path, prefix: &str) -> Result<(), ParamsError> {
        let tensors: HashMap<String, Tensor> = self.tensors().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
        save_tensors(&tensors, path)
    }

    /// Loads every parameter from a safetensors file (keys `prefix + name`), strictly: a missing,
    /// mis-shaped or non-finite key is an error naming it. Returns the keys of the file that the store
    /// does not use (reported to the user, not fatal).
    pub fn load(&self, path: &Path, prefix: &str) -> Result<Vec<String>, ParamsError> {
        let file = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|source| ParamsError::Read { path: path.to_path_buf(), source })?;
        self.assign_from(&file, path, prefix)
    }

    /// Like [`ParamStore::load`] from tensors already in memory; `path` only names the source in errors.
    pub fn assign_from(&self, file: &HashMap<String, Tensor>, path: &Path, prefix: &str) -> Result<Vec<String>, ParamsError> {
        let mut staged = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let t = checked_tensor(file, &format!("{prefix}{name}"), var.shape(), path)?;
            let t = t.to_device(var.device()).map_err(ParamsError::from_tensor(path))?;
            staged.push((var, t));
        }
        // Only assign once everything checked out: a rejected file leaves the model untouched.
        for (var, t) in staged {
            var.set(&t).map_err(|source| ParamsError::Read { path: path.to_path_buf(), source })?;
        }
        let mut unused: Vec<String> = file
            .keys()
            .filter(|k| k.strip_prefix(prefix).is_none_or(|name| !self.vars.contains_key(name)))
            .cloned()
            .collect();
        unused.sort();
        Ok(unused)
    }
}

/// The f32 tensor stored under `key`, checked: present, of shape `expected`, all values finite.
/// `path` only names the source in errors.
pub fn checked_tensor(file: &HashMap<String, Tensor>, key: &str, expected: &Shape, path: &Path) -> Result<Tensor, ParamsError> {
    let Some(t) = file.get(key) else {
        return Err(ParamsError::MissingKey { path: path.to_path_buf(), key: key.into(), expected: expected.clone() });
    };
    if t.shape() != expected {
        return Err(ParamsError::ShapeMismatch {
            path: path.to_path_buf(),
            key: key.into(),
            found: t.shape().clone(),
            expected: expected.clone(),
        });
    }
    let t = t.to_dtype(DType::F32).map_err(ParamsError::from_tensor(path))?;
    if !all_finite(&t) {
        return Err(ParamsError::NonFinite { path: path.to_path_buf(), key: key.into() });
    }
    Ok(t)
}

/// Writes named tensors to a safetensors file atomically.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), ParamsError> {
    crate::fsutil::write_atomic_with(path, |tmp| candle_core::safetensors::save(tensors, tmp).map_err(std::io::Error::other))
        .map_err(|e| ParamsError::Write { path: path.to_path_buf(), message: e.to_string() })
}

/// Whether every value of `t` is finite.
pub fn all_finite(t: &Tensor) -> bool {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map(|v| v.iter().all(|x| x.is_finite()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ParamStore {
        let mut s = ParamStore::new();
        s.insert("a.weight", Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap()).unwrap();
        s.insert("b", Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
        s
    }

    #[test]
    fn roundtrip_and_strict_errors() {
        let dir = std::env::temp_dir().join(format!("flmm-params-{}", std::process::id()));
        let path = dir.join("p.safetensors");
        let s = store();
        s.save(&path, "head.").unwrap();
        let fresh = store();
        fresh.get("b").unwrap().set(&Tensor::ones(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert!(fresh.load(&path, "head.").unwrap().is_empty());
        assert_eq!(fresh.get("b").unwrap().as_tensor().to_vec1::<f32>().unwrap(), vec![0.0; 4]);

        let mut bigger = store();
        bigger.insert("c", Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let err = bigger.load(&path, "head.").unwrap_err().to_string();
        assert!(err.contains("missing key `head.c`"), "{err}");

        let mut wrong = ParamStore::new();
        wrong.insert("a.weight", Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let err = wrong.load(&path, "head.").unwrap_err().to_string();
        assert!(err.contains("`head.a.weight` has shape [2, 3], expected [3, 2]"), "{err}");

        let small = {
            let mut p = ParamStore::new();
            p.insert("b", Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
            p
        };
        assert_eq!(small.load(&path, "head.").unwrap(), vec!["head.a.weight".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
