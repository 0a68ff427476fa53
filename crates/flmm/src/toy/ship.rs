//! `flmm toy ship`: the trained toy VLM, refiner and head stored in f16 under `models/toy/` (what the
//! binary embeds as its default model), and example scenes under `examples/toy/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use flmm_data::toy::{dataset_scenes, referring_expressions, render, ToyConfig};

use super::vlm::{save_vlm_dir, ToyVlm};

/// The shipped model must stay this small (bytes, all files).
pub const SIZE_BUDGET: u64 = 15 * 1024 * 1024;

/// The trained pieces to ship.
#[derive(Debug, Clone)]
pub struct ShipInputs {
    /// The pretrained VLM directory.
    pub vlm: PathBuf,
    /// The pretrained SAM refiner checkpoint (safetensors).
    pub sam: PathBuf,
    /// The trained head file (its `.json` sidecar beside it).
    pub head: PathBuf,
}

/// Copies `src` (safetensors) to `dst` with every floating tensor stored as `dtype`.
pub fn convert_safetensors(src: &Path, dst: &Path, dtype: DType) -> anyhow::Result<()> {
    let tensors = candle_core::safetensors::load(src, &Device::Cpu).with_context(|| format!("reading {}", src.display()))?;
    let converted: HashMap<String, Tensor> =
        tensors.into_iter().map(|(k, v)| Ok((k, if v.dtype().is_float() { v.to_dtype(dtype)? } else { v }))).collect::<candle_core::Result<_>>()?;
    flmm_nn::params::save_tensors(&converted, dst)?;
    Ok(())
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// Writes the f16 model into `out` (models/toy) and returns its total size in bytes; fails when it is
/// over [`SIZE_BUDGET`].
pub fn ship_model(inputs: &ShipInputs, out: &Path) -> anyhow::Result<u64> {
    let vlm = ToyVlm::load(&inputs.vlm)?;
    save_vlm_dir(&vlm.model, &out.join("vlm"), DType::F16)?;
    convert_safetensors(&inputs.sam, &out.join("sam.safetensors"), DType::F16)?;
    convert_safetensors(&inputs.head, &out.join("head.safetensors"), DType::F16)?;
    // The sidecar names the shipped backbone (relative to `out`), not the machine's training paths.
    let sidecar = inputs.head.with_extension("json");
    let text = std::fs::read_to_string(&sidecar).with_context(|| format!("reading {}", sidecar.display()))?;
    let mut meta: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", sidecar.display()))?;
    meta["backbone"] = "vlm".into();
    meta["data"] = "the toy dataset of `flmm toy build` (refcoco + png formats)".into();
    flmm_nn::fsutil::write_atomic(&out.join("head.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    let size = dir_size(out)?;
    if size > SIZE_BUDGET {
        anyhow::bail!("the shipped model is {:.1} MB, over the {:.0} MB budget", size as f64 / 1e6 / 1.048576, SIZE_BUDGET as f64 / 1048576.0);
    }
    Ok(size)
}

/// Writes `count` held-out scenes of the dataset `(seed, train, val)` as `scene_01.png`, … into `dir`,
/// with a README listing what each can be asked about. Returns the image paths.
pub fn write_examples(dir: &Path, seed: u64, train: usize, val: usize, count: usize) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let scenes = dataset_scenes(seed, train, val, &ToyConfig::default()).split_off(train);
    let mut readme = String::from("# Toy example scenes\n\nHeld-out scenes of the toy dataset (never seen in training) and phrases that single out one object:\n\n");
    let mut paths = Vec::new();
    for (k, scene) in scenes.iter().take(count).enumerate() {
        let name = format!("scene_{:02}.png", k + 1);
        let path = dir.join(&name);
        render(scene).save(&path).with_context(|| format!("writing {}", path.display()))?;
        let phrases: Vec<String> = referring_expressions(scene).into_iter().flatten().map(|e| format!("\"{}\"", e.text)).collect();
        readme.push_str(&format!("- `{name}`: {}\n", phrases.join(", ")));
        paths.push(path);
    }
    flmm_nn::fsutil::write_atomic(&dir.join("README.md"), readme.as_bytes())?;
    Ok(paths)
}
