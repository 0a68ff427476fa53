//! The embedded default model: the toy world's VLM, SAM refiner and F-LMM head, compiled into the binary
//! (from `models/toy/` by `build.rs`) and written once to a cache directory so the loaders that read
//! model directories can open them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Where the default model's files were written.
#[derive(Debug, Clone)]
pub struct DefaultModel {
    /// The VLM's model directory.
    pub model: PathBuf,
    /// The SAM refiner checkpoint.
    pub sam: PathBuf,
    /// The head file.
    pub head: PathBuf,
}

include!(concat!(env!("OUT_DIR"), "/default_model_files.rs"));

/// Whether this binary carries the default model.
pub fn is_embedded() -> bool {
    !FILES.is_empty()
}

/// The cache root: `$FLMM_CACHE`, else `$XDG_CACHE_HOME/flmm`, else `~/.cache/flmm`, else the temp dir.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLMM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flmm");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/flmm"),
        None => std::env::temp_dir().join("flmm"),
    }
}

/// Writes the embedded files under `<cache root>/toy-<content hash>/` (once; each file atomically) and
/// returns their paths.
pub fn materialize() -> anyhow::Result<DefaultModel> {
    if !is_embedded() {
        anyhow::bail!(
            "this flmm was built without the toy default model (models/toy/ was missing at build time): \
             pass --model <dir> --head <head.safetensors> --sam <checkpoint>, or regenerate it with `flmm toy all` and rebuild"
        );
    }
    let mut hash = Sha256::new();
    for (name, bytes) in FILES {
        hash.update(name.as_bytes());
        hash.update(bytes);
    }
    let digest = hash.finalize();
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = cache_root().join(format!("toy-{tag}"));
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("creating the default-model cache {}", dir.display()))?;
        flmm_nn::fsutil::write_atomic(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(DefaultModel { model: dir.join("vlm"), sam: dir.join("sam.safetensors"), head: dir.join("head.safetensors") })
}
