//! `flmm ground`: image + text + phrases → one mask per phrase, through the whole F-LMM pipeline:
//! frozen backbone pass (attention stacks + phrase hidden states) → U-Net → crop to the image →
//! SAM refiner prompted with box, mask and text tokens. Writes mask PNGs, an overlay, a JSON with
//! phrase, score, box and COCO RLE per phrase, and optionally the logits.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use flmm_data::coco_mask::{Mask, Rle};
use image::{Rgb, RgbImage};

use crate::pipeline::Grounder;
use serde::Serialize;

/// A `flmm ground` request.
pub struct GroundRequest {
    /// Backbone model directory.
    pub model: PathBuf,
    /// Head file (official keys; `flmm import` converts released `.pth` heads).
    pub head: PathBuf,
    /// SAM checkpoint providing the image encoder.
    pub sam: PathBuf,
    /// Image file.
    pub image: PathBuf,
    /// Text containing the phrases.
    pub text: String,
    /// Spans of the text to ground, in order.
    pub phrases: Vec<String>,
    /// Output directory.
    pub out: PathBuf,
    /// Also write the U-Net and refiner logits.
    pub save_logits: bool,
    /// SAM embedding cache directory.
    pub cache: Option<PathBuf>,
    /// Backbone compute dtype.
    pub dtype: DType,
    /// Device.
    pub device: Device,
}

/// One grounded phrase in `result.json`.
#[derive(Debug, Serialize)]
pub struct GroundedPhrase {
    /// The phrase.
    pub phrase: String,
    /// Mean foreground probability over the mask (0 when the mask is empty).
    pub score: f64,
    /// `[x0, y0, x1, y1]` of the mask (exclusive ends), `null` when empty.
    pub bbox: Option<[u32; 4]>,
    /// Mask pixels.
    pub area: u64,
    /// COCO RLE `{size: [h, w], counts}` of the mask.
    pub rle: serde_json::Value,
    /// The mask PNG.
    pub mask: String,
}

/// Runs the pipeline; returns the written paths.
pub fn run(req: &GroundRequest) -> anyhow::Result<Vec<PathBuf>> {
    let image = flmm_data::image_io::load_rgb_image(&req.image)?;
    let grounder = Grounder::open(&req.model, &req.head, &req.sam, req.dtype, &req.device, req.cache.as_deref())?;
    let prepared = grounder.backbone.prepare(&image, &req.text, &req.phrases)?;
    let unknown = unknown_words(&grounder.backbone.tokenizer, &req.text)?;
    if !unknown.is_empty() {
        eprintln!("warning: the model does not know {} (read as <unk>); its masks for them are guesses", unknown.join(", "));
    }
    let prediction = grounder.predict(&image, &prepared)?;
    write_outputs(req, &image, &prediction.unet, &prediction.refined, &unknown)
}

/// The words of `text` the tokenizer can only read as its unknown token (none for byte-level
/// tokenizers; the toy model's closed word-level vocabulary has them).
pub fn unknown_words(tokenizer: &flmm_lmm::tokenizer::TextTokenizer, text: &str) -> anyhow::Result<Vec<String>> {
    let Some(unk) = tokenizer.token_id("<unk>") else { return Ok(Vec::new()) };
    let mut unknown = Vec::new();
    for word in text.split_whitespace() {
        if tokenizer.encode(word, false)?.contains(&unk) && !unknown.iter().any(|w| w == word) {
            unknown.push(word.to_string());
        }
    }
    Ok(unknown)
}

fn write_outputs(req: &GroundRequest, image: &RgbImage, unet: &Tensor, refined: &Tensor, unknown: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let (n, h, w) = refined.dims3()?;
    let probs = flmm_nn::act::sigmoid(&refined.to_dtype(DType::F32)?)?;
    let mut written = Vec::new();
    let mut results = Vec::with_capacity(n);
    let mut overlay = image.clone();
    for k in 0..n {
        let p = probs.get(k)?.flatten_all()?.to_vec1::<f32>()?;
        let data: Vec<u8> = p.iter().map(|&v| u8::from(v > 0.5)).collect();
        let area = data.iter().map(|&b| b as u64).sum::<u64>();
        let score = if area == 0 { 0.0 } else { p.iter().zip(&data).filter(|(_, &b)| b == 1).map(|(&v, _)| v as f64).sum::<f64>() / area as f64 };
        let mask = Mask { height: h as u32, width: w as u32, data };
        let rle = Rle::encode(&mask);
        let png = req.out.join(format!("mask_{k}.png"));
        let picture = image::GrayImage::from_fn(w as u32, h as u32, |x, y| image::Luma([mask.data[y as usize * w + x as usize] * 255]));
        crate::png_out::save_png(&image::DynamicImage::ImageLuma8(picture), &png)?;
        tint(&mut overlay, &mask, PALETTE[k % PALETTE.len()]);
        results.push(GroundedPhrase {
            phrase: req.phrases[k].clone(),
            score,
            bbox: mask_box(&mask),
            area,
            rle: serde_json::json!({ "size": [h, w], "counts": rle.to_string() }),
            mask: png.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        });
        written.push(png);
    }
    let overlay_path = req.out.join("overlay.png");
    crate::png_out::save_png(&image::DynamicImage::ImageRgb8(overlay), &overlay_path)?;
    written.push(overlay_path);
    let json = req.out.join("result.json");
    flmm_nn::fsutil::write_atomic(&json, serde_json::to_string_pretty(&serde_json::json!({ "image": req.image, "text": req.text, "phrases": results, "unknown_words": unknown }))?.as_bytes())?;
    written.push(json);
    if req.save_logits {
        let path = req.out.join("logits.safetensors");
        let tensors = HashMap::from([("unet".to_string(), unet.to_dtype(DType::F32)?), ("refined".to_string(), refined.to_dtype(DType::F32)?)]);
        flmm_nn::params::save_tensors(&tensors, &path)?;
        written.push(path);
    }
    Ok(written)
}

const PALETTE: [[u8; 3]; 6] = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]];

fn tint(img: &mut RgbImage, mask: &Mask, colour: [u8; 3]) {
    for (x, y, p) in img.enumerate_pixels_mut() {
        if mask.data[y as usize * mask.width as usize + x as usize] == 1 {
            let Rgb(c) = *p;
            *p = Rgb(std::array::from_fn(|i| ((c[i] as u16 + colour[i] as u16) / 2) as u8));
        }
    }
}

fn mask_box(mask: &Mask) -> Option<[u32; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in 0..mask.height {
        for x in 0..mask.width {
            if mask.data[(y * mask.width + x) as usize] == 1 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x0 != u32::MAX).then_some([x0, y0, x1, y1])
}
