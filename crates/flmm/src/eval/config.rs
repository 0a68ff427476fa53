//! The evaluation config (TOML): which backbone, SAM checkpoint and data root. The head is given on
//! the command line, so one config serves every checkpoint of an experiment.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[model]`: the frozen backbone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face model directory.
    pub dir: PathBuf,
    /// Compute dtype: f32, bf16 or f16.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// cpu or cuda:N.
    #[serde(default = "default_device")]
    pub device: String,
}

/// `[sam]`: the refiner's image encoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamSection {
    /// `sam_vit_l_0b3195.pth` (or another SAM / MobileSAM checkpoint).
    pub checkpoint: PathBuf,
    /// Directory of the image-embedding cache (none: embeddings are recomputed).
    pub cache: Option<PathBuf>,
}

/// `[data]`: where the datasets live (F-LMM's `data/coco` layout).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The root holding `refcoco*/`, `train2014/`, `val2017/`, `annotations/`.
    pub root: PathBuf,
}

/// A whole evaluation config. Relative paths are relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Backbone.
    pub model: ModelSection,
    /// SAM.
    pub sam: SamSection,
    /// Data.
    pub data: DataSection,
}

fn default_dtype() -> String {
    "f32".into()
}

fn default_device() -> String {
    "cpu".into()
}

impl EvalConfig {
    /// Reads `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut c: EvalConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut c.model.dir);
        resolve(&mut c.sam.checkpoint);
        resolve(&mut c.data.root);
        if let Some(cache) = c.sam.cache.as_mut() {
            resolve(cache);
        }
        Ok(c)
    }
}
