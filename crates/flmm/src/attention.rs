//! `flmm attention`: capture the word-to-image attention of phrases and write it out — the stacks and
//! hidden states as safetensors, a JSON description, and one heatmap PNG per phrase over the photo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use flmm_lmm::backbone::{Backbone, FrozenFeatures};
use flmm_lmm::capture::Capture;
use flmm_lmm::llava::ImageLayout;
use image::RgbImage;
use serde::Serialize;

use crate::heatmap::{map_to_image, overlay, MapPlacement};

/// What to capture.
pub struct AttentionRequest {
    /// Model directory.
    pub model: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Caption containing the phrases.
    pub text: String,
    /// Spans of the caption to ground, in order.
    pub phrases: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Layers / heads / merge.
    pub capture: Capture,
    /// Compute dtype.
    pub dtype: DType,
    /// Device.
    pub device: Device,
}

#[derive(Serialize)]
struct PhraseReport {
    phrase: String,
    tokens: Vec<String>,
    positions: Vec<usize>,
    attention_key: String,
    hidden_key: String,
    heatmap: String,
}

#[derive(Serialize)]
struct Report {
    model: String,
    family: String,
    image: String,
    image_size: [u32; 2],
    text: String,
    template: String,
    sequence_length: usize,
    image_tokens: usize,
    channels: usize,
    channel_order: String,
    map_size: [usize; 2],
    merge: String,
    phrases: Vec<PhraseReport>,
}

/// Runs the capture and writes `attention.safetensors`, `attention.json` and `phrase_<k>.png` to `out`.
/// Returns the paths written.
pub fn run(req: &AttentionRequest) -> anyhow::Result<Vec<PathBuf>> {
    let image = flmm_data::image_io::load_rgb_image(&req.image)?;
    let backbone = Backbone::open(&req.model, req.dtype, &req.device)?;
    let prepared = backbone.prepare(&image, &req.text, &req.phrases)?;
    let features = backbone.features(&prepared, &req.capture)?;
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;

    let mut tensors = HashMap::new();
    let mut phrases = Vec::new();
    let mut written = Vec::new();
    for (k, phrase) in req.phrases.iter().enumerate() {
        let stack = features.attention.get(k)?;
        let attention_key = format!("phrase_{k}.attention");
        let hidden_key = format!("phrase_{k}.hidden");
        tensors.insert(attention_key.clone(), stack.clone());
        tensors.insert(hidden_key.clone(), features.phrase_hidden[k].clone());
        let heatmap = req.out.join(format!("phrase_{k}.png"));
        write_heatmap(&image, &stack, &features, &heatmap)?;
        written.push(heatmap.clone());
        let positions: Vec<usize> = prepared.text.phrase_positions(k);
        let tokens = positions.iter().map(|&p| backbone.tokenizer.id_token(prepared.text.input_ids[p]).unwrap_or_default()).collect();
        let expanded_positions = prepared.expanded.mask_ids.iter().enumerate().filter(|(_, &m)| m == k as i32).map(|(i, _)| i).collect();
        phrases.push(PhraseReport {
            phrase: phrase.clone(),
            tokens,
            positions: expanded_positions,
            attention_key,
            hidden_key,
            heatmap: file_name(&heatmap),
        });
    }
    let tensors_path = req.out.join("attention.safetensors");
    flmm_nn::params::save_tensors(&tensors, &tensors_path)?;
    written.push(tensors_path);

    let (_, channels, h, w) = features.attention.dims4()?;
    let text_cfg = &backbone.config.text;
    let channel_order = match features.layout {
        ImageLayout::Grid { side } => format!("layer*{}+head on the {side}x{side} grid of the padded square", text_cfg.num_attention_heads),
        ImageLayout::CoarseFine { coarse, .. } => format!(
            "[coarse {coarse}x{coarse} resized: layer*{H}+head] then [fine: {LH} + layer*{H}+head], both on the unpadded fine grid",
            H = text_cfg.num_attention_heads,
            LH = channels / 2
        ),
    };
    let report = Report {
        model: req.model.display().to_string(),
        family: backbone.config.family.name().into(),
        image: req.image.display().to_string(),
        image_size: [image.height(), image.width()],
        text: req.text.clone(),
        template: backbone.template.name().into(),
        sequence_length: prepared.expanded.mask_ids.len(),
        image_tokens: prepared.expanded.image_positions.len(),
        channels,
        channel_order,
        map_size: [h, w],
        merge: format!("{:?}", req.capture.merge).to_lowercase(),
        phrases,
    };
    let json_path = req.out.join("attention.json");
    flmm_nn::fsutil::write_atomic(&json_path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    written.push(json_path);
    Ok(written)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where the attention grid lies on the photo: LLaVA-1.5's grid covers the padded square, LLaVA-NeXT's
/// maps cover the (unpadded) image itself.
fn placement(features: &FrozenFeatures) -> MapPlacement {
    match features.layout {
        ImageLayout::CoarseFine { .. } => MapPlacement::whole(),
        ImageLayout::Grid { .. } => {
            let g = &features.geometry;
            MapPlacement {
                frame_h: g.padded_shape.height as f64,
                frame_w: g.padded_shape.width as f64,
                top: g.padding.before_height as f64,
                left: g.padding.before_width as f64,
                height: g.image_shape.height as f64,
                width: g.image_shape.width as f64,
            }
        }
    }
}

/// Mean over channels of one phrase's stack, drawn over the photo.
fn write_heatmap(image: &RgbImage, stack: &Tensor, features: &FrozenFeatures, path: &Path) -> anyhow::Result<()> {
    let (_, h, w) = stack.dims3()?;
    let mean = stack.mean(0)?.flatten_all()?.to_vec1::<f32>()?;
    let values = map_to_image(&mean, h, w, placement(features), image.height(), image.width());
    crate::png_out::save_png(&image::DynamicImage::ImageRgb8(overlay(image, &values, 0.55)), path)
}
